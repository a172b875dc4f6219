"""VQVC+ (Wu, Chen & Lee, Interspeech 2020): one-shot voice conversion by vector quantisation
and a U-Net.

Shapes: mel (B, T, M) in [0, 1]; lengths (B,) valid frames. With ``L = levels``, T is padded
internally to a multiple of 2**L (with 0 = the silence floor) and outputs are cropped back.
Level l = 0..L-1 (0 = finest) runs at T_l = T / 2**(l+1) frames.

Encoder: a conv from M mels to ``channels``, then per level a residual conv block, a stride-2
conv (T/2**l -> T_l frames) and a 1x1 projection to the continuous code x_l (B, T_l, code_dim).
The next level continues from the down-sampled features.

Per level, the code is vector-quantised: u_l = x_l standardised per utterance and channel over
the valid frames, then L2-normalised per frame; q_l (B, T_l, code_dim) is the nearest of
``codebook_size`` unit codebook entries (straight-through gradient to x_l); the level's speaker
vector is s_l = mean over valid frames of (x_l - sg[q_l]) (B, code_dim): what the quantised
content does not explain, averaged over time, is the time-invariant voice (the VQVC idea).

Decoder (U-Net, deepest level first): at level l = L-1..0,
h <- h + W_l(q_l + g_l s_l/|s_l|) (s broadcast over time, W_l a 1x1 conv to ``channels``,
h = 0 at the deepest level), a residual block, nearest up-sampling x2, another residual block;
finally a linear map to M mels. No continuous encoder features skip to the decoder: only the
quantised content and the per-level speaker vectors, which is what makes the U-Net a bottleneck.

Losses: L1 reconstruction over valid frames (the authors' code uses L1) plus ``vq_weight`` x
the VQ losses summed over levels: codebook ||sg[u]-q||^2 (replaced by EMA codebook updates when
``codebook_ema`` > 0) + ``commitment`` ||u-sg[q]||^2, each a mean over code dimensions and valid
frames. Logged terms: total, recon, vq (the unweighted VQ sum) and vq_perplexity (exp of the
entropy of the codes chosen on valid frames, per level, averaged over levels: codebook_size when
every code is used equally, 1 when the codebook has collapsed).

Choices where the paper (and the brief) are silent, with the reason:

* What is quantised: the per-utterance standardised code on the unit sphere (cosine nearest
  neighbour, unit codebook entries), as in the authors' code. Measured here: quantising the raw
  unit-length x_l instead collapsed the codebook to a single code within 10 steps (perplexity
  1.0; all frames of all utterances share a large common direction), and the decoder then
  reconstructed from the speaker vector alone. Standardising removes that shared part, so the
  frames spread over the codebook, and it keeps the utterance's time-invariant part (the
  voice) out of the content path: it reaches the decoder only through s_l.
* Speaker-vector scale: the decoder sees g_l s_l/|s_l| with a learned scale g_l per level
  (init 1), never the raw s_l. :meth:`embed` returns the concatenation of the unit s_l/|s_l|
  divided by sqrt(L), a unit vector whose per-level blocks each have norm 1/sqrt(L).
  :meth:`convert` splits a target vector back into its L blocks, normalises each block again
  and multiplies it by g_l. So the re-normalised mean of several utterances' vectors (what the
  trainer's speaker table and :class:`~clsvc.inference.Converter` pass) is valid input, and
  ``convert(mel, embed(mel))`` is exactly the training forward pass's reconstruction (the norm
  of s_l, which no target vector can carry, is never used in training either). The authors'
  code does the same with a fixed factor (1/3 for 3 levels).
* Conv blocks: kernel ``model.kernel_size``, LeakyReLU(0.2), residual blocks conv-act-conv
  with a skip and no normalisation. Group norm over time (the authors' decoder) made the output
  depend on the input length: after 300 CPU steps the L1 of whole 2-s utterances was 0.105
  against 0.062 on the 64-frame training crops; without normalisation both were 0.045.
  Down-sampling: Conv1d(k=4, stride 2) as in the authors' encoder; up-sampling: nearest repeat
  as in the authors' decoder. One residual block per level in the encoder, two per level in the
  decoder; no postnet (VQVC+ has none).
* One codebook size and code width for all levels (the authors' code uses 32/64/128 entries of
  40/20/10 dims at levels 1/2/3); so ``speaker_dim = levels * code_dim``.
* VQ in float32 even under autocast (nearest neighbours from bf16 cosines are too coarse).
* EMA codebook (``codebook_ema`` > 0): the VQ-VAE-2 update with Laplace smoothing, only in
  training mode; counts and sums are all-reduced across processes under DDP so every rank keeps
  the same codebook.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Config, VQVCConfig
from ..errors import ClsvcError
from .base import Codes, VCSystem
from .layers import length_mask, masked_frame_mse, masked_instance_norm, masked_mean
from .voices import EncoderVoice


class ResBlock(nn.Module):
    """x + conv(LeakyReLU(conv(x))) on (B, C, T): two 'same' convs of kernel ``kernel``, no
    normalisation (see the module docstring)."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
            nn.LeakyReLU(0.2),
            nn.Conv1d(channels, channels, kernel, padding=kernel // 2),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation on the unit sphere with a straight-through gradient.

    ``forward(x (B, T, D), mask (B, T))`` -> (q_st, q, loss, perplexity): q (B, T, D) the chosen
    unit codebook entries, q_st = x + (q - x).detach() (values of q, gradient to x), loss the
    codebook + commitment loss over valid frames (commitment only with EMA updates), perplexity
    exp(entropy) of the codes chosen on valid frames.
    """

    embed: torch.Tensor  # (K, D) a parameter, or a buffer with EMA updates
    ema_count: torch.Tensor  # (K,)
    ema_sum: torch.Tensor  # (K, D)

    def __init__(self, size: int, dim: int, commitment: float, ema_decay: float, eps: float = 1e-5):
        super().__init__()
        self.size, self.dim = size, dim
        self.commitment = commitment
        self.ema_decay = ema_decay
        self.eps = eps
        init = F.normalize(torch.randn(size, dim), dim=-1)
        if ema_decay > 0:
            # Buffers, not parameters: the optimizer never touches an EMA codebook.
            self.register_buffer("embed", init)
            self.register_buffer("ema_count", torch.ones(size))
            self.register_buffer("ema_sum", init.clone())
        else:
            self.embed = nn.Parameter(init)

    def codebook(self) -> torch.Tensor:
        """(K, D) unit codebook entries."""
        return F.normalize(self.embed, dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cb = self.codebook()
        flat = x.reshape(-1, self.dim)
        # Unit vectors: the nearest entry is the one of largest cosine.
        idx = (flat.detach() @ cb.detach().t()).argmax(-1)
        q = F.embedding(idx, cb).view_as(x)
        w = mask.reshape(-1).to(x.dtype)
        onehot = F.one_hot(idx, self.size).to(x.dtype) * w[:, None]
        counts = onehot.sum(0)
        probs = counts / w.sum().clamp_min(1.0)
        perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
        loss = self.commitment * masked_frame_mse(x, q.detach(), mask)
        if self.ema_decay > 0:
            if self.training:
                self._ema_update(counts.detach(), onehot.t() @ flat.detach())
        else:
            loss = loss + masked_frame_mse(x.detach(), q, mask)
        q_st = x + (q - x).detach()
        return q_st, q, loss, perplexity

    @torch.no_grad()
    def _ema_update(self, counts: torch.Tensor, sums: torch.Tensor) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(counts)
            torch.distributed.all_reduce(sums)
        d = self.ema_decay
        self.ema_count.mul_(d).add_(counts, alpha=1 - d)
        self.ema_sum.mul_(d).add_(sums, alpha=1 - d)
        total = self.ema_count.sum()
        smoothed = (self.ema_count + self.eps) / (total + self.size * self.eps) * total
        self.embed.copy_(self.ema_sum / smoothed[:, None])


class VQVCPlus(VCSystem):
    """VQVC+ (encoder, per-level VQ, U-Net decoder); see the module docstring."""

    @classmethod
    def from_config(cls, cfg: Config) -> VQVCPlus:
        return cls(cfg.vqvc, n_mels=cfg.mel.n_mels, kernel=cfg.model.kernel_size)

    def __init__(self, cfg: VQVCConfig, n_mels: int = 80, kernel: int = 5):
        super().__init__()
        self.cfg = cfg
        self.n_mels = n_mels
        c, d, n_lv = cfg.channels, cfg.code_dim, cfg.levels
        self.inp = nn.Conv1d(n_mels, c, kernel, padding=kernel // 2)
        self.enc_blocks = nn.ModuleList(ResBlock(c, kernel) for _ in range(n_lv))
        # k=4, stride 2, padding 1 maps an even length T to exactly T/2.
        self.down = nn.ModuleList(nn.Sequential(nn.Conv1d(c, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
                                  for _ in range(n_lv))
        self.to_code = nn.ModuleList(nn.Conv1d(c, d, 1) for _ in range(n_lv))
        self.quantizers = nn.ModuleList(
            VectorQuantizer(cfg.codebook_size, d, cfg.commitment, cfg.codebook_ema) for _ in range(n_lv))
        # g_l: scale of the unit speaker vector at each level, relative to the unit content code.
        self.speaker_scale = nn.Parameter(torch.ones(n_lv))
        self.from_code = nn.ModuleList(nn.Conv1d(d, c, 1) for _ in range(n_lv))
        self.dec_pre = nn.ModuleList(ResBlock(c, kernel) for _ in range(n_lv))
        self.dec_post = nn.ModuleList(ResBlock(c, kernel) for _ in range(n_lv))
        self.out = nn.Linear(c, n_mels)
        self.voice = EncoderVoice(self.embed, n_lv * d)

    # ------------------------------------------------------------------ pieces

    def _pad(self, mel: torch.Tensor, lengths: torch.Tensor | None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pad (B, T, M) at the end to a multiple of 2**levels; default lengths = T."""
        b, t, _ = mel.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=mel.device)
        unit = 2 ** self.cfg.levels
        extra = (-t) % unit
        if extra:
            mel = F.pad(mel, (0, 0, 0, extra))
        return mel, lengths

    def encode(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> dict:
        """mel (B, T, M) -> per-level lists (level 0 = finest, time T_l = T_pad / 2**(l+1)):
        ``q_st`` (B, T_l, D) straight-through codes, ``q`` (B, T_l, D) quantised codes,
        ``speaker`` (B, D) raw s_l, ``mask`` (B, T_l); plus ``vq`` (summed VQ loss) and
        ``perplexity`` (mean over levels). T is padded to a multiple of 2**levels here."""
        mel, lengths = self._pad(mel, lengths)
        h = self.inp(mel.transpose(1, 2))
        out: dict = {"q_st": [], "q": [], "speaker": [], "mask": []}
        vq = mel.new_zeros(())
        perplexity = mel.new_zeros(())
        for lvl in range(self.cfg.levels):
            h = self.down[lvl](self.enc_blocks[lvl](h))
            t_l = h.shape[-1]
            stride = 2 ** (lvl + 1)  # a code frame is valid if it covers any valid input frame
            mask = length_mask(torch.div(lengths + stride - 1, stride, rounding_mode="floor"), t_l)
            # VQ in float32 (also under autocast): argmax over bf16 cosines is too coarse.
            with torch.autocast(device_type=mel.device.type, enabled=False):
                x = self.to_code[lvl](h.float()).transpose(1, 2)
                # Quantise the per-utterance standardised, unit-length frames (see the module
                # docstring): the time-invariant part of x cannot pass through the codes.
                u = F.normalize(masked_instance_norm(x, mask), dim=-1)
                q_st, q, loss, ppl = self.quantizers[lvl](u, mask)
                out["speaker"].append(masked_mean(x - q.detach(), mask))
            out["q_st"].append(q_st)
            out["q"].append(q)
            out["mask"].append(mask)
            vq = vq + loss
            perplexity = perplexity + ppl
        out["vq"] = vq
        out["perplexity"] = perplexity / self.cfg.levels
        return out

    def decode(self, content: list[torch.Tensor], speakers: list[torch.Tensor]) -> torch.Tensor:
        """Per-level content codes (B, T_l, D) and decoder speaker vectors (B, D) (already
        scaled, see :meth:`decoder_speakers`) -> mel (B, T_pad, M), T_pad = 2 T_0."""
        h: torch.Tensor | None = None
        for lvl in reversed(range(self.cfg.levels)):
            z = content[lvl] + speakers[lvl].unsqueeze(1)
            z = self.from_code[lvl](z.transpose(1, 2))
            h = z if h is None else h + z
            h = self.dec_pre[lvl](h)
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = self.dec_post[lvl](h)
        assert h is not None  # levels >= 1
        return self.out(h.transpose(1, 2))

    def decoder_speakers(self, speakers: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per-level speaker vectors (B, D) of any norm -> g_l s_l / |s_l| (what the decoder sees)."""
        return [self.speaker_scale[lvl] * F.normalize(s, dim=-1) for lvl, s in enumerate(speakers)]

    def split_speaker(self, speaker: torch.Tensor, batch: int) -> list[torch.Tensor]:
        """A target vector (s,) or (B, s), s = speaker_dim -> per-level (B, code_dim) blocks."""
        if speaker.shape[-1] != self.speaker_dim:
            raise ClsvcError(
                f"speaker vector has {speaker.shape[-1]} values, this VQVC+ model needs "
                f"{self.speaker_dim} (levels x code_dim)"
            )
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0).expand(batch, -1)
        return list(speaker.float().split(self.cfg.code_dim, dim=-1))

    # ------------------------------------------------------------------ training

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """recon (masked L1) + vq_weight * vq; ``speaker`` labels are not used (VQVC+ is
        trained by self-reconstruction only)."""
        t = mel.shape[1]
        enc = self.encode(mel, lengths)
        rec = self.decode(enc["q_st"], self.decoder_speakers(enc["speaker"]))[:, :t]
        mask = length_mask(lengths, t)
        recon = masked_mean((rec.float() - mel.float()).abs().mean(-1), mask)
        total = recon + self.cfg.vq_weight * enc["vq"]
        terms = {"total": total, "recon": recon, "vq": enc["vq"], "vq_perplexity": enc["perplexity"]}
        return total, {k: v.detach() for k, v in terms.items()}

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def embed(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unit speaker vectors (B, levels * code_dim): each level's s_l/|s_l| / sqrt(levels),
        concatenated (finest level first)."""
        enc = self.encode(mel, lengths)
        scale = 1.0 / math.sqrt(self.cfg.levels)
        return torch.cat([F.normalize(s, dim=-1) * scale for s in enc["speaker"]], dim=-1)

    @torch.inference_mode()
    def content(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Quantised codes of the finest level (B, ceil(T/2), code_dim)."""
        t = mel.shape[1]
        return self.encode(mel, lengths)["q"][0][:, : (t + 1) // 2]

    @torch.inference_mode()
    def codes(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> Codes:
        """Finest-level quantised content (B, ceil(T/2), code_dim) and :meth:`embed` vectors."""
        return Codes(self.content(mel, lengths), self.embed(mel, lengths))

    @torch.inference_mode()
    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target vectors (B, s) or (s,) -> converted mels (B, T, M)
        in [0, 1]. Each level's block of the target is re-normalised and scaled by g_l, so a
        re-normalised mean of :meth:`embed` vectors may be passed."""
        b, t, _ = mel.shape
        enc = self.encode(mel)
        spk = self.decoder_speakers(self.split_speaker(speaker.to(mel.device), b))
        return self.decode(enc["q"], spk)[:, :t].clamp(0.0, 1.0)
