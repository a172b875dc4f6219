"""Voice perturbation of the content encoder's input (a remedy for speaker leakage into C_x).

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
original (see :meth:`clsvc.models.clsvc.ClsVC.run`).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


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
        import librosa

        if warp < 1.0:
            raise ValueError(f"warp must be >= 1, got {warp}")
        self.warp = float(warp)
        self.eq_units = float(eq_db) / float(db_per_unit)
        centres = librosa.mel_frequencies(n_mels + 2, fmin=fmin, fmax=fmax)[1:-1]
        # Not part of the state dict: it is derived from the mel definition, and a checkpoint
        # trained without the perturbation loads into a model with it (and back).
        self.centres: torch.Tensor
        self.register_buffer("centres", torch.tensor(centres, dtype=torch.float32), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b, _, m = mel.shape
        out = mel
        if self.warp > 1.0:
            log_w = math.log(self.warp)
            alpha = torch.exp((torch.rand(b, 1, device=mel.device) * 2 - 1) * log_w)  # (B, 1)
            src = self.centres.unsqueeze(0) / alpha                                  # (B, M) Hz
            pos = _fractional_index(self.centres, src)                               # (B, M)
            lo = pos.floor().long().clamp(0, m - 1)
            hi = (lo + 1).clamp(max=m - 1)
            frac = (pos - lo.to(pos.dtype)).unsqueeze(1)                            # (B, 1, M)
            out = _bands(out, lo) * (1 - frac) + _bands(out, hi) * frac
        if self.eq_units > 0:
            k = torch.linspace(0, 1, m, device=mel.device)                           # (M,)
            freq = torch.rand(b, 3, 1, device=mel.device) * 3 + 0.5                  # cycles over the bands
            phase = torch.rand(b, 3, 1, device=mel.device) * 2 * math.pi
            amp = torch.rand(b, 3, 1, device=mel.device) * 2 - 1
            curve = (amp * torch.cos(2 * math.pi * freq * k + phase)).sum(1) / 3    # (B, M) in [-1, 1]
            out = out + self.eq_units * curve.unsqueeze(1)
        return out.clamp(0.0, 1.0)


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
