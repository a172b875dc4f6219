"""A Vocos-style neural vocoder (Siuzdenko 2023) for clsvc's mel-spectrogram.

The generator never upsamples in time: it predicts, for every mel frame, one STFT frame
(magnitude and phase of ``n_fft // 2 + 1`` bins) and an inverse STFT turns those into audio.

* Input: clsvc's normalised log-mel (B, T, n_mels) in [0, 1] from :func:`clsvc.audio.wav_to_mel`
  (16 kHz, n_fft 1024, hop 256, i.e. 62.5 frames/s).
* Backbone: Conv1d(n_mels -> dim, k7) -> LayerNorm -> ``layers`` ConvNeXt blocks -> LayerNorm.
  A ConvNeXt block is depthwise Conv1d(k) -> LayerNorm -> Linear(dim -> intermediate) -> GELU
  -> Linear(intermediate -> dim) -> learnable per-channel layer scale (initialised to
  1 / layers) -> residual add.
* ISTFT head: Linear(dim -> n_fft + 2) split into log-magnitude and phase (n_fft/2 + 1 each).
  The magnitude is ``exp`` clamped at ``max_magnitude``; the phase enters as (cos p, sin p) of
  the raw output, so it needs no wrapping. ``torch.istft`` with a periodic Hann window of
  n_fft, hop ``hop``, ``center=True`` and ``length=T * hop``.

Length: a mel of T frames gives exactly ``T * hop`` samples. Frame t is centred on sample
``t * hop`` (the framing of ``wav_to_mel``, which gives ``1 + samples // hop`` frames), so the
T frames cover samples [0, T * hop); istft's natural centred output would stop at
``(T - 1) * hop`` and ``length=`` extends it with the overlap-add of the last frames' right
halves.

No weight norm anywhere in the generator (Vocos uses none), so nothing has to be removed for
inference.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block on (B, dim, T) -> (B, dim, T) (see the module docstring)."""

    def __init__(self, dim: int, intermediate: int, kernel: int, layer_scale: float):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, intermediate)
        self.pwconv2 = nn.Linear(intermediate, dim)
        # A small layer scale keeps every block close to the identity at the start, so the deep
        # residual stack trains stably without warm-up tricks.
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).transpose(1, 2)  # (B, T, dim): LayerNorm and Linear act on the last axis
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h))))
        return x + (self.gamma * h).transpose(1, 2)


class ISTFTHead(nn.Module):
    """(B, T, dim) features -> waveform (B, T * hop) through predicted STFT frames."""

    window: torch.Tensor

    def __init__(self, dim: int, n_fft: int, hop: int, max_magnitude: float):
        super().__init__()
        self.n_fft = n_fft
        self.hop = hop
        self.max_magnitude = max_magnitude
        self.out = nn.Linear(dim, n_fft + 2)
        # Periodic Hann, the window librosa's "hann" uses in clsvc.audio; not a parameter and
        # rebuilt on load, so left out of the state dict.
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # istft needs float32 (or 64): under CUDA autocast the Linear returns half precision.
        h = self.out(x).float().transpose(1, 2)  # (B, n_fft + 2, T)
        log_mag, phase = h.chunk(2, dim=1)  # (B, n_fft // 2 + 1, T) each
        # The clamp only guards exp() against overflow early in training; it sits far above what
        # speech needs (see VocosGenerator's max_magnitude).
        mag = torch.exp(log_mag).clamp(max=self.max_magnitude)
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, self.window, center=True,
                           length=h.shape[-1] * self.hop)


class VocosGenerator(nn.Module):
    """Vocos generator: mel (B, T, n_mels) in [0, 1] -> waveform (B, T * hop) float32 at 16 kHz.

    ``n_fft`` and ``hop`` must be the mel's (1024 and 256 for clsvc); ``kernel`` is the width of
    the embedding and depthwise convs (in frames). ``max_magnitude`` caps the predicted linear
    STFT magnitude: clsvc's STFT is unnormalised (a full-scale sine reads 256 in its bin), so
    Vocos' cap of 1e2 could clip loud harmonics; 1e3 (60 dB) is still far from float overflow.
    """

    def __init__(self, n_mels: int = 80, dim: int = 384, intermediate: int = 1152, layers: int = 8,
                 n_fft: int = 1024, hop: int = 256, kernel: int = 7, max_magnitude: float = 1e3):
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"kernel must be odd (same-length convs), got {kernel}")
        self.n_mels = n_mels
        self.n_fft = n_fft
        self.hop = hop
        self.kernel = kernel
        self.layers = layers
        self.embed = nn.Conv1d(n_mels, dim, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.blocks = nn.ModuleList(
            ConvNeXtBlock(dim, intermediate, kernel, 1.0 / max(layers, 1)) for _ in range(layers))
        self.final_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = ISTFTHead(dim, n_fft, hop, max_magnitude)

    @property
    def receptive_field(self) -> int:
        """Frames on either side of a frame that can change its output samples: (kernel // 2)
        per conv (the embedding and each block) plus the frames whose n_fft window overlaps
        the sample in the inverse STFT."""
        return (self.kernel // 2) * (self.layers + 1) + -(-self.n_fft // (2 * self.hop))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, n_mels) in [0, 1] -> waveform (B, T * hop), float32."""
        x = self.embed(mel.transpose(1, 2))  # (B, dim, T)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_norm(x.transpose(1, 2)))

    @torch.inference_mode()
    def vocode(self, mel: np.ndarray, chunk: int = 512, fade: int = 16, context: int | None = None) -> np.ndarray:
        """mel (T, n_mels) in [0, 1] -> waveform (T * hop,) float32 in the module's device and dtype.

        Long inputs run in windows of ``chunk`` frames so memory stays bounded. Consecutive
        windows overlap by ``2 * context + fade`` frames; their waveforms are cross-faded
        linearly over ``fade`` frames (``fade * hop`` samples) in the middle of the overlap,
        ``context`` frames away from either window's edge. With ``context`` at least
        :attr:`receptive_field` (the default) the samples kept from each window do not see its
        edges, so the result equals vocoding the whole input at once up to float rounding.
        """
        mel = np.asarray(mel, dtype=np.float32)
        if mel.ndim != 2 or mel.shape[1] != self.n_mels:
            raise ValueError(f"expected a mel of shape (frames, {self.n_mels}), got {mel.shape}")
        context = self.receptive_field + 1 if context is None else context
        overlap = 2 * context + fade
        if chunk <= overlap:
            raise ValueError(f"chunk ({chunk} frames) must exceed 2 * context + fade = {overlap}")
        param = next(self.parameters())
        t_total, hop = mel.shape[0], self.hop
        x = torch.from_numpy(mel).to(param.device, param.dtype)
        if t_total == 0:
            return np.zeros(0, dtype=np.float32)
        if t_total <= chunk:
            return self(x[None])[0].float().cpu().numpy()
        out = torch.zeros(t_total * hop, device=param.device)
        # Linear fade-out ramp over fade*hop samples (sample centres, so ramp + its mirror = 1).
        ramp = 1.0 - (torch.arange(fade * hop, device=param.device) + 0.5) / (fade * hop)
        step = chunk - overlap
        start = 0
        while True:
            end = min(start + chunk, t_total)
            wav = self(x[None, start:end])[0].float()
            w = torch.ones_like(wav)
            if start > 0:  # fade in from the previous window, `context` frames in
                a = context * hop
                w[:a] = 0.0
                w[a:a + fade * hop] = ramp.flip(0)
            last = end == t_total
            if not last:  # fade out `context` frames before this window's end
                b = (end - start - context) * hop
                w[b - fade * hop:b] = ramp
                w[b:] = 0.0
            out[start * hop:end * hop] += w * wav
            if last:
                break
            start += step
        return out.cpu().numpy()
