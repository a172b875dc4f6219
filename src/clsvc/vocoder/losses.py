"""Losses of the vocoder GAN: clsvc's mel in torch (L1), a multi-resolution STFT loss, and the
least-squares GAN (Mao et al. 2017) adversarial and feature-matching losses of HiFi-GAN.

Waveforms are (B, N) float tensors at 16 kHz. ``valid`` arguments are (B,) counts of valid
samples per row (the rest is padding); an STFT frame counts when its centre ``f * hop`` is a
valid sample. Pass None when every sample is valid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..audio import mel_basis
from ..config import MelConfig


def _frame_mask(valid: torch.Tensor | None, frames: int, hop: int, batch: int, device: torch.device
                ) -> torch.Tensor:
    """(B, frames) float mask: 1 where frame f's centre f * hop is a valid sample."""
    if valid is None:
        return torch.ones(batch, frames, device=device)
    centres = torch.arange(frames, device=device) * hop
    return (centres[None, :] < valid[:, None]).float()


class MelLoss(nn.Module):
    """Mean |mel(fake) - mel(real)| over valid frames and bands, in units of clsvc's [0, 1] mel
    (1 unit = 100 dB).

    :meth:`mel` is :func:`clsvc.audio.wav_to_mel` in torch: |STFT| with n_fft, hop and
    win_length from ``cfg``, a periodic Hann window, centred frames with reflect padding
    (librosa's defaults there), projected on ``audio.mel_basis(cfg)``, amplitude floor
    ``cfg.amp_floor``, dB minus ``cfg.ref_level_db``, mapped to [0, 1] by ``min_level_db`` and
    clipped. It skips ``wav_to_mel``'s 30 Hz high-pass (a zero-phase IIR filter, awkward to
    backpropagate through): the first mel band starts at ``cfg.fmin`` = 90 Hz, where that
    filter passes everything, so the two differ only by content below 90 Hz leaking through the
    window's side lobes and by filtfilt's transients in the first and last few frames (about
    2e-4 and 1e-2 in mel units on a speech-like test clip).
    """

    basis: torch.Tensor
    window: torch.Tensor

    def __init__(self, cfg: MelConfig):
        super().__init__()
        self.cfg = cfg
        self.register_buffer("basis", torch.from_numpy(mel_basis(cfg)).clone(), persistent=False)
        window = torch.hann_window(cfg.win_length)
        if cfg.win_length < cfg.n_fft:  # librosa centres a shorter window inside n_fft
            left = (cfg.n_fft - cfg.win_length) // 2
            window = nn.functional.pad(window, (left, cfg.n_fft - cfg.win_length - left))
        self.register_buffer("window", window, persistent=False)

    def mel(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, N) at ``cfg.sample_rate`` -> mel (B, 1 + N // hop, n_mels) in [0, 1]."""
        c = self.cfg
        spec = torch.stft(wav.float(), c.n_fft, c.hop_length, c.n_fft, self.window, center=True,
                          pad_mode="reflect", return_complex=True)
        # |X| with a tiny power floor: the gradient of sqrt at 0 is infinite; 1e-12 changes |X|
        # only far below the amplitude floor, where the clamp below cuts the gradient anyway.
        mag = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-12)  # (B, F, frames)
        amp = torch.matmul(self.basis, mag).transpose(1, 2)  # (B, frames, n_mels)
        db = 20.0 * torch.log10(amp.clamp_min(c.amp_floor)) - c.ref_level_db
        return ((db - c.min_level_db) / -c.min_level_db).clamp(0.0, 1.0)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """fake, real (B, N); valid (B,) samples or None -> scalar mean L1 over valid frames."""
        a, b = self.mel(fake), self.mel(real)
        mask = _frame_mask(valid, a.shape[1], self.cfg.hop_length, a.shape[0], a.device)
        return ((a - b).abs().mean(-1) * mask).sum() / mask.sum().clamp_min(1.0)


class MultiResolutionSTFTLoss(nn.Module):
    """Parallel WaveGAN's auxiliary loss (Yamamoto et al. 2020): over each (n_fft, hop, win) in
    ``resolutions``, spectral convergence ``||S - S'||_F / ||S||_F`` plus the mean L1 of the
    natural-log magnitudes, both over valid frames; each averaged over the resolutions.
    Magnitudes are floored at sqrt(1e-7), as in Parallel WaveGAN. Defaults: PWG's three
    resolutions, i.e. Hann windows of 15, 37.5 and 75 ms at 16 kHz.

    Returns (spectral convergence, log-magnitude L1), two scalars.
    """

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] = ((512, 50, 240), (1024, 120, 600),
                                                                      (2048, 240, 1200))):
        super().__init__()
        self.resolutions = tuple(tuple(r) for r in resolutions)
        for i, (n_fft, _, win) in enumerate(self.resolutions):
            left = (n_fft - win) // 2  # the window sits in the middle of the n_fft frame
            window = nn.functional.pad(torch.hann_window(win), (left, n_fft - win - left))
            self.register_buffer(f"window{i}", window, persistent=False)

    def _mag(self, wav: torch.Tensor, i: int) -> torch.Tensor:
        n_fft, hop, _ = self.resolutions[i]
        spec = torch.stft(wav.float(), n_fft, hop, n_fft, getattr(self, f"window{i}"), center=True,
                          return_complex=True)
        return torch.sqrt((spec.real ** 2 + spec.imag ** 2).clamp_min(1e-7))  # (B, F, frames)

    def forward(self, fake: torch.Tensor, real: torch.Tensor, valid: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """fake, real (B, N); valid (B,) samples or None -> (spectral convergence, log-mag L1)."""
        sc = fake.new_zeros((), dtype=torch.float32)
        mag = fake.new_zeros((), dtype=torch.float32)
        for i, (_, hop, _) in enumerate(self.resolutions):
            s_fake, s_real = self._mag(fake, i), self._mag(real, i)
            mask = _frame_mask(valid, s_fake.shape[-1], hop, s_fake.shape[0], s_fake.device)[:, None]
            sc = sc + torch.sqrt((((s_real - s_fake) ** 2) * mask).sum()) / torch.sqrt(
                ((s_real ** 2) * mask).sum()).clamp_min(1e-7)
            n = (mask.sum() * s_fake.shape[1]).clamp_min(1.0)
            mag = mag + ((torch.log(s_real) - torch.log(s_fake)).abs() * mask).sum() / n
        k = len(self.resolutions)
        return sc / k, mag / k


def _sum(terms: list[torch.Tensor]) -> torch.Tensor:
    """Sum of scalar terms; 0 for none (a discriminator family configured away)."""
    return torch.stack(terms).sum() if terms else torch.zeros(())


def discriminator_loss(real: Sequence[torch.Tensor], fake: Sequence[torch.Tensor]
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """LSGAN loss of D: sum over sub-discriminators of mean (D(real) - 1)^2 + mean D(fake)^2.

    ``real``, ``fake``: logits per sub-discriminator, (B, K_i) each. Returns (total, real part,
    fake part), scalars.
    """
    real_term = _sum([((r.float() - 1) ** 2).mean() for r in real])
    fake_term = _sum([(f.float() ** 2).mean() for f in fake])
    return real_term + fake_term, real_term, fake_term


def generator_adv_loss(fake: Sequence[torch.Tensor]) -> torch.Tensor:
    """LSGAN loss of G: sum over sub-discriminators of mean (D(fake) - 1)^2 (scalar)."""
    return _sum([((f.float() - 1) ** 2).mean() for f in fake])


def feature_matching_loss(real: Sequence[Sequence[torch.Tensor]], fake: Sequence[Sequence[torch.Tensor]]
                          ) -> torch.Tensor:
    """HiFi-GAN's feature matching: sum over sub-discriminators and their layers of the mean
    |real - fake| activation; the real features are detached (targets, not trained). Scalar."""
    terms = [(r.detach().float() - f.float()).abs().mean()
             for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs, strict=True)]
    return _sum(terms)
