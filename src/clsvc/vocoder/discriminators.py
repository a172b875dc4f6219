"""Waveform discriminators for the vocoder GAN: HiFi-GAN's multi-period discriminator (Kong et
al. 2020) and a multi-resolution spectrogram discriminator (UnivNet, Jang et al. 2021; as in
Vocos).

Both take a batch of 16 kHz waveforms (B, N) and return ``(logits, features)``: ``logits`` is
a list with one (B, K_i) tensor of unbounded per-position scores per sub-discriminator, and
``features`` a list (per sub-discriminator) of lists of the activations after each conv, the
inputs of the feature-matching loss. Run them once on a batch that stacks real and fake rows,
or once per input.

All convs are weight-normalised (``torch.nn.utils.parametrizations.weight_norm``) and followed
by LeakyReLU(0.1), except the one-channel output conv. Widths are constructor arguments so the
cost can be cut for CPU training (see clsvc.vocoder.system).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import weight_norm

Output = tuple[list[torch.Tensor], list[list[torch.Tensor]]]

SLOPE = 0.1  # LeakyReLU slope of HiFi-GAN and UnivNet



def _conv_features(convs: nn.ModuleList, out: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Leaky-ReLU conv stack then the output conv on x (B, C, H, W): (flattened logits (B, K),
    every layer's output, for feature matching)."""
    feats = []
    for conv in convs:
        x = F.leaky_relu(conv(x), SLOPE)
        feats.append(x)
    x = out(x)
    feats.append(x)
    return x.flatten(1), feats

class _Ensemble(nn.Module):
    """Sub-discriminators in ``self.discriminators``, each run on the same wave."""

    discriminators: nn.ModuleList

    def forward(self, wav: torch.Tensor) -> Output:
        """wav (B, N) at 16 kHz -> (logits per sub-discriminator, feature maps per sub-discriminator)."""
        logits, feats = [], []
        for d in self.discriminators:
            score, f = d(wav)
            logits.append(score)
            feats.append(f)
        return logits, feats


class PeriodDiscriminator(nn.Module):
    """One MPD branch: the wave (B, N) reflect-padded to a multiple of ``period`` and folded to
    a (N / period) x period image, so that samples ``period`` apart line up in one column; then
    2-D convs with kernel (kernel, 1) — they never mix columns — strided by ``stride`` along the
    time axis (all but the last width), and a (3, 1) output conv to one channel."""

    def __init__(self, period: int, channels: Sequence[int], kernel: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        convs = []
        cin = 1
        for i, cout in enumerate(channels):
            s = stride if i < len(channels) - 1 else 1
            convs.append(weight_norm(nn.Conv2d(cin, cout, (kernel, 1), (s, 1), padding=(kernel // 2, 0))))
            cin = cout
        self.convs = nn.ModuleList(convs)
        self.out = weight_norm(nn.Conv2d(cin, 1, (3, 1), padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, N) -> (logits (B, K), feature maps (B, C_i, H_i, period))."""
        b, n = wav.shape
        pad = (-n) % self.period
        x = wav[:, None]
        if pad:
            # Reflect (not zeros) so the fold does not end in an artificial silent tail.
            x = F.pad(x, (0, pad), mode="reflect" if n > pad else "replicate")
        x = x.view(b, 1, (n + pad) // self.period, self.period)
        return _conv_features(self.convs, self.out, x)


class MultiPeriodDiscriminator(_Ensemble):
    """HiFi-GAN's MPD: one :class:`PeriodDiscriminator` per period (primes, so the periods see
    disjoint sample lattices). ``channels``: widths of the strided convs, the last one unstrided
    (HiFi-GAN: 32, 128, 512, 1024, 1024)."""

    def __init__(self, periods: Sequence[int] = (2, 3, 5, 7, 11),
                 channels: Sequence[int] = (32, 128, 512, 1024, 1024), kernel: int = 5, stride: int = 3):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(p, channels, kernel, stride) for p in periods)



class ResolutionDiscriminator(nn.Module):
    """One MRD branch: the log-magnitude STFT (natural log of |X|, floored at 1e-5; periodic Hann
    window ``win``, centred frames) of the wave as a one-channel image (freq, time), then 2-D
    convs: (3, 9) [freq, time], three (3, 9) halving the frequency axis, (3, 3), and a (3, 3)
    output conv to one channel. Frequency is the long axis (n_fft / 2 + 1 bins against a few
    dozen frames for a training segment), hence the striding there."""

    window: torch.Tensor

    def __init__(self, n_fft: int, hop: int, win: int, channels: int = 32):
        super().__init__()
        self.n_fft, self.hop, self.win = n_fft, hop, win
        self.register_buffer("window", torch.hann_window(win), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(2, 1), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(2, 1), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(2, 1), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def spectrogram(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, N) -> log|STFT| (B, 1, n_fft / 2 + 1, 1 + N // hop)."""
        spec = torch.stft(wav.float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          return_complex=True)
        power = spec.real ** 2 + spec.imag ** 2
        # log|X| = 0.5 log|X|^2; the floor is applied to the power, so no sqrt at 0 in backward.
        return 0.5 * torch.log(power.clamp_min(1e-10))[:, None]

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """wav (B, N) -> (logits (B, K), feature maps (B, C, F_i, frames))."""
        x = self.spectrogram(wav)
        return _conv_features(self.convs, self.out, x)


class MultiResolutionDiscriminator(_Ensemble):
    """One :class:`ResolutionDiscriminator` per (n_fft, hop, win) in ``resolutions``, all
    ``channels`` wide."""

    def __init__(self, resolutions: Sequence[tuple[int, int, int]] = ((1024, 256, 1024), (512, 128, 512),
                                                                      (256, 64, 256)),
                 channels: int = 32):
        super().__init__()
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(n, h, w, channels) for n, h, w in resolutions)

