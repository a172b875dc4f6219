"""Perturbations of the content encoder's input: the voice (a remedy for speaker leakage into
C_x) and the room (noise and reverberation: a remedy for recordings made away from a studio).

A content code that must read the same from a voice-perturbed copy of the utterance cannot
carry what the perturbation changes. The perturbations act on clsvc's normalised mel
(B, T, n_mels) in [0, 1], so they are cheap and need no waveform:

- a frequency warp (vocal-tract-length perturbation, Jaitly & Hinton 2013): every band centre f
  reads the input at f / alpha, alpha log-uniform in [1/warp, warp] per utterance. On a mel
  spectrogram this moves the formants and the low resolved harmonics together, i.e. it shifts
  timbre and pitch, the two things that tell voices apart most;
- a random smooth equaliser (NANSY's parametric EQ in spirit): a per-utterance gain curve
  over the bands, a sum of three random cosines, at most ``eq_db`` dB; it varies the channel and
  spectral tilt, which tell LibriSpeech's one-recording speakers apart.

Only the content path sees the perturbed copy; S_x and the reconstruction target stay the
original (see :meth:`clsvc.models.clsvc.ClsVC.run`). :class:`PseudoVoices` uses the same warp
the other way: a warped row replaces the utterance everywhere, a new voice to learn.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn


def band_centres(n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The Slaney mel centres (M,) float64 in Hz of ``n_mels`` bands in [``fmin``, ``fmax``] Hz:
    the features' own definition. The modules keep what they derive from them as non-persistent
    buffers: derived from the mel definition, so a checkpoint trained without a perturbation loads
    into a model with it (and back)."""
    import librosa

    return np.asarray(librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1], dtype=np.float64)


def _centres_buffer(n_mels: int, fmin: float, fmax: float) -> torch.Tensor:
    return torch.tensor(band_centres(n_mels, fmin, fmax), dtype=torch.float32)


class VoicePerturb(nn.Module):
    """mel (B, T, M) in [0, 1] -> a voice-perturbed mel (B, T, M), one random warp and EQ per row.

    ``warp`` >= 1 is the largest frequency ratio (1 = no warp); ``eq_db`` the largest EQ gain in
    dB (0 = none); ``db_per_unit`` converts dB into the normalised mel's units (100 for clsvc's
    -100 dB floor). Band centres are the Slaney mel centres of ``n_mels`` bands in
    [``fmin``, ``fmax``] Hz, the same definition as the features.
    """

    def __init__(self, n_mels: int, fmin: float, fmax: float, warp: float, eq_db: float,
                 db_per_unit: float):
        super().__init__()
        if warp < 1.0:
            raise ValueError(f"warp must be >= 1, got {warp}")
        self.warp = float(warp)
        self.eq_units = float(eq_db) / float(db_per_unit)
        self.centres: torch.Tensor
        self.register_buffer("centres", _centres_buffer(n_mels, fmin, fmax), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b, _, m = mel.shape
        out = mel
        if self.warp > 1.0:
            out = warp_bands(out, self.centres, random_ratios(b, self.warp, mel.device))
        if self.eq_units > 0:
            k = torch.linspace(0, 1, m, device=mel.device)                           # (M,)
            freq = torch.rand(b, 3, 1, device=mel.device) * 3 + 0.5                  # cycles over the bands
            phase = torch.rand(b, 3, 1, device=mel.device) * 2 * math.pi
            amp = torch.rand(b, 3, 1, device=mel.device) * 2 - 1
            curve = (amp * torch.cos(2 * math.pi * freq * k + phase)).sum(1) / 3    # (B, M) in [-1, 1]
            out = out + self.eq_units * curve.unsqueeze(1)
        return out.clamp(0.0, 1.0)


def random_ratios(b: int, warp: float, device: torch.device) -> torch.Tensor:
    """``b`` frequency ratios (B, 1), log-uniform in [1/warp, warp]."""
    return torch.exp((torch.rand(b, 1, device=device) * 2 - 1) * math.log(warp))


def warp_bands(mel: torch.Tensor, centres: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """mel (B, T, M) with every band centre f (``centres`` (M,), Hz) reading the input at
    f / alpha, one ratio per row (``alpha`` (B, 1)), linearly between bands; outside the band
    range the edge band is repeated. alpha > 1 moves the spectrum up."""
    m = mel.shape[-1]
    pos = _fractional_index(centres, centres.unsqueeze(0) / alpha)  # (B, M)
    lo = pos.floor().long().clamp(0, m - 1)
    hi = (lo + 1).clamp(max=m - 1)
    frac = (pos - lo.to(pos.dtype)).unsqueeze(1)                    # (B, 1, M)
    return _bands(mel, lo) * (1 - frac) + _bands(mel, hi) * frac


class PseudoVoices(nn.Module):
    """(mel (B, T, M) in [0, 1]) -> (mel (B, T, M), made (B,) bool): each row, with probability
    ``prob``, frequency-warped by a ratio log-uniform in [1/``warp``, ``warp``] -- a new voice
    (formants and harmonics move together) made from a training one. Rows not picked are returned
    unchanged. Band centres as :class:`VoicePerturb`'s.

    Unlike :class:`VoicePerturb`, which only the content path reads, the picked rows replace the
    utterance everywhere (S_x's input and the decoder's target too; see
    :meth:`clsvc.models.clsvc.ClsVC.forward`).
    """

    def __init__(self, n_mels: int, fmin: float, fmax: float, prob: float, warp: float):
        super().__init__()
        if not 0.0 <= prob <= 1.0 or warp <= 1.0:
            raise ValueError(f"need 0 <= prob <= 1 and warp > 1, got {prob}, {warp}")
        self.prob = float(prob)
        self.warp = float(warp)
        self.centres: torch.Tensor
        self.register_buffer("centres", _centres_buffer(n_mels, fmin, fmax), persistent=False)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = mel.shape[0]
        made = torch.rand(b, device=mel.device) < self.prob
        alpha = random_ratios(b, self.warp, mel.device)  # drawn for every row: the draws do not depend on `made`
        if not bool(made.any()):
            return mel, made
        out = mel.clone()  # only the picked rows are warped (the others are not computed and thrown away)
        out[made] = warp_bands(mel[made], self.centres, alpha[made]).clamp(0.0, 1.0)
        return out, made


def _bands(mel: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """mel (B, T, M) read at band indices idx (B, M) -> (B, T, M)."""
    return torch.gather(mel, 2, idx.unsqueeze(1).expand(-1, mel.shape[1], -1))


def _fractional_index(centres: torch.Tensor, hz: torch.Tensor) -> torch.Tensor:
    """Fractional band positions (B, M) of frequencies ``hz`` (B, M) on the increasing band
    centres (M,), clamped to [0, M-1] (outside the range the edge band is repeated): linear
    interpolation of the band index, on the tensors' own device (no host round trip per step)."""
    grid = centres.to(hz.dtype)
    right = torch.searchsorted(grid, hz.contiguous()).clamp(1, len(grid) - 1)  # first centre >= hz
    left = right - 1
    lo, hi = grid[left], grid[right]
    pos = left.to(hz.dtype) + (hz - lo) / (hi - lo)
    return pos.clamp(0, len(grid) - 1).to(torch.float32)


class RoomAugment(nn.Module):
    """mel (B, T, M) in [0, 1] -> the mel of the same speech in a room (B, T, M): reverberation
    and additive noise, each given to a row with its probability, independently per row.

    A remedy for recordings made away from a studio (not in the paper): the content code of a
    noisy or reverberant copy must rebuild the clean original, so conversions of users' own
    recordings keep their words. Both act on powers, so they need no waveform:

    - reverberation (with probability ``reverb_prob``): each band's power is convolved over time
      with an exponential decay of a random RT60 in [0.2 s, ``reverb_rt60`` s] and a random
      direct-to-reverberant ratio in [0, 12] dB (the statistical model of a diffuse late tail);
    - noise (with probability ``noise_prob``): stationary coloured noise, power spectral density
      proportional to f^-beta with beta uniform in [0, 1.5] (white to beyond pink), at a random
      SNR in [``noise_snr_db``, 40] dB, each frame and band varying by a log-normal factor (sd
      1.5 dB) as an STFT of noise does. The features are mels of STFT *magnitudes*, where noise
      reads about 5 dB louder against speech than in powers (measured: white and pink noise added
      to ARCTIC waveforms at 20 dB, mean mel of the mixture; ``SNR_CALIBRATION_DB``), so the SNR
      is about the waveform's within 90-7600 Hz.

    ``db_per_unit`` converts dB into the normalised mel's units (100 for clsvc's -100 dB floor),
    ``hop_seconds`` is the frame hop (16 ms); band centres are the Slaney mel centres of
    ``n_mels`` bands in [``fmin``, ``fmax``] Hz, as the features'.
    """

    RT60_MIN = 0.2
    SNR_MAX_DB = 40.0
    DRR_DB = (0.0, 12.0)
    JITTER_DB = 1.5
    BETA_MAX = 1.5
    SNR_CALIBRATION_DB = 5.0

    def __init__(self, n_mels: int, fmin: float, fmax: float, db_per_unit: float, hop_seconds: float,
                 noise_prob: float, noise_snr_db: float, reverb_prob: float, reverb_rt60: float):
        super().__init__()
        self.db_per_unit = float(db_per_unit)
        self.hop = float(hop_seconds)
        self.noise_prob, self.noise_snr_db = float(noise_prob), float(noise_snr_db)
        self.reverb_prob, self.reverb_rt60 = float(reverb_prob), max(float(reverb_rt60), self.RT60_MIN)
        self.log_f: torch.Tensor  # log10 of band centre / 1 kHz, (M,); derived, so not saved
        log_f = torch.tensor(band_centres(n_mels, fmin, fmax) / 1000.0, dtype=torch.float32).log10()
        self.register_buffer("log_f", log_f, persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b = mel.shape[0]
        db = mel.float() * self.db_per_unit  # dB above the features' floor, 10 log10 of a power
        picked = torch.zeros(b, dtype=torch.bool, device=mel.device)
        for prob, effect in ((self.reverb_prob, self._reverb), (self.noise_prob, self._noise)):
            if prob > 0:
                on = torch.rand(b, device=mel.device) < prob
                if bool(on.any()):
                    db = effect(db, on)
                    picked |= on
        if not bool(picked.any()):
            return mel
        out = (db / self.db_per_unit).clamp(0.0, 1.0).to(mel.dtype)
        return torch.where(picked[:, None, None], out, mel)  # rows left alone stay bit-exact

    # Each effect draws its random values for every row of the batch (so a row's draws do not
    # depend on which other rows are picked) and computes only the picked rows ``on`` (B,).

    def _reverb(self, db: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """Power (as dB, (B, T, M)) of the rows ``on`` convolved with a direct path + an
        exponential tail of their own; the other rows returned as they are."""
        b, t, _ = db.shape
        dev = db.device
        rt60 = self.RT60_MIN + torch.rand(b, 1, device=dev) * (self.reverb_rt60 - self.RT60_MIN)
        frames = min(t - 1, math.ceil(self.reverb_rt60 / self.hop))
        if frames < 1:
            return db
        k = torch.arange(1, frames + 1, device=dev, dtype=torch.float32)                 # (K,)
        lo, hi = self.DRR_DB
        drr = lo + torch.rand(b, 1, device=dev) * (hi - lo)
        rt60, drr = rt60[on], drr[on]
        tail = 10.0 ** (-6.0 * k * self.hop / rt60)                                       # (b', K): -60 dB at RT60
        tail = tail * (10.0 ** (-drr / 10.0) / tail.sum(1, keepdim=True))                 # tail energy = direct / DRR
        power = 10.0 ** (db[on] / 10.0)
        out = power.clone()
        for i in range(frames):  # out[t] += tail[i] * power[t - 1 - i]
            out[:, i + 1:] += tail[:, i, None, None] * power[:, : t - 1 - i]
        db = db.clone()
        db[on] = 10.0 * out.log10()
        return db

    def _noise(self, db: torch.Tensor, on: torch.Tensor) -> torch.Tensor:
        """Power (as dB, (B, T, M)) of the rows ``on`` plus coloured noise at a random SNR per
        row; the other rows returned as they are."""
        b, t, m = db.shape
        dev = db.device
        beta = torch.rand(b, 1, device=dev) * self.BETA_MAX
        snr = self.noise_snr_db + torch.rand(b, device=dev) * (self.SNR_MAX_DB - self.noise_snr_db)
        jitter = torch.randn(b, t, m, device=dev)
        picked = db[on]
        shape = -10.0 * beta[on] * self.log_f.to(dev)                                    # (b', M) dB
        shape = shape - 10.0 * (10.0 ** (shape / 10.0)).mean(1, keepdim=True).log10()   # mean power 1
        speech = 10.0 * (10.0 ** (picked / 10.0)).mean((1, 2)).clamp_min(1e-10).log10()  # (b',) dB
        level = (speech - snr[on] - self.SNR_CALIBRATION_DB)[:, None, None] + shape[:, None, :]  # (b', 1, M)
        noise = level + self.JITTER_DB * jitter[on]
        db = db.clone()
        db[on] = torch.logaddexp(picked * _LN10_10, noise * _LN10_10) / _LN10_10
        return db


_LN10_10 = math.log(10.0) / 10.0  # dB -> natural log of power
