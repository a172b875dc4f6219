"""The ClsVC network: one encoder, a decoder with postnet, and two speaker classifiers.

Shapes: mel (B, T, n_mels) in [0, 1]; lengths (B,) valid frames; Z = E(x) is (B, T, s + c),
of which the first ``speaker_dim`` channels, averaged over valid frames, are S_x (B, s) and the
last ``content_dim`` channels are C_x (B, T, c). The decoder sees C_x and S_x / |S_x|.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..config import Config, LossConfig, ModelConfig
from ..errors import ClsvcError
from .base import VCSystem
from .layers import (
    ConvBlock,
    CosineClassifier,
    grad_reverse,
    length_mask,
    masked_instance_norm,
    masked_mean,
    mlp,
)


def _lstm(din: int, hidden: int, layers: int, bidirectional: bool) -> nn.LSTM | None:
    if hidden <= 0 or layers <= 0:
        return None
    return nn.LSTM(din, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)


def _conv_stack(din: int, channels: int, layers: int, cfg: ModelConfig) -> tuple[nn.Sequential, int]:
    """``layers`` conv blocks (k=cfg.kernel_size, ReLU) on (B, C, T); returns (stack, out dim)."""
    convs = []
    for _ in range(layers):
        convs.append(ConvBlock(din, channels, cfg.kernel_size, cfg.norm))
        din = channels
    return nn.Sequential(*convs), din


class Encoder(nn.Module):
    """mel (B, T, n_mels) -> Z (B, T, speaker_dim + content_dim)."""

    def __init__(self, n_mels: int, cfg: ModelConfig):
        super().__init__()
        self.convs, d = _conv_stack(n_mels, cfg.enc_channels, cfg.enc_conv_layers, cfg)
        self.lstm = _lstm(d, cfg.enc_lstm_hidden, cfg.enc_lstm_layers, bidirectional=True)
        if self.lstm is not None:
            d = 2 * cfg.enc_lstm_hidden
        self.proj = nn.Linear(d, cfg.speaker_dim + cfg.content_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.convs(mel.transpose(1, 2)).transpose(1, 2)
        if self.lstm is not None:
            h, _ = self.lstm(h)
        return self.proj(h)


class Decoder(nn.Module):
    """(content (B, T, c), speaker (B, s)) -> (mel before postnet, mel after postnet), (B, T, n_mels)."""

    def __init__(self, n_mels: int, cfg: ModelConfig):
        super().__init__()
        din = cfg.content_dim + cfg.speaker_dim
        if cfg.dec_pre_lstm > 0:
            self.pre = _lstm(din, cfg.dec_pre_lstm, 1, bidirectional=False)
            d = cfg.dec_pre_lstm
        else:
            self.pre = nn.Linear(din, cfg.dec_channels)
            d = cfg.dec_channels
        self.convs, d = _conv_stack(d, cfg.dec_channels, cfg.dec_conv_layers, cfg)
        self.lstm = _lstm(d, cfg.dec_lstm_hidden, cfg.dec_lstm_layers, bidirectional=False)
        if self.lstm is not None:
            d = cfg.dec_lstm_hidden
        self.out = nn.Linear(d, n_mels)
        post = []
        c = n_mels
        for i in range(cfg.postnet_layers):
            last = i == cfg.postnet_layers - 1
            post.append(ConvBlock(c, n_mels if last else cfg.postnet_channels, cfg.kernel_size,
                                  cfg.norm, "none" if last else "tanh"))
            c = cfg.postnet_channels
        self.postnet = nn.Sequential(*post)

    def forward(self, content: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([content, speaker.unsqueeze(1).expand(-1, content.shape[1], -1)], dim=-1)
        h = self.pre(x)[0] if isinstance(self.pre, nn.LSTM) else self.pre(x)
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        if self.lstm is not None:
            h, _ = self.lstm(h)
        mel = self.out(h)
        if len(self.postnet) == 0:
            return mel, mel
        return mel, mel + self.postnet(mel.transpose(1, 2)).transpose(1, 2)


@dataclass
class ClsVCOutput:
    """Everything the losses need from one training forward pass (see :mod:`.losses`)."""

    mask: torch.Tensor  # (B, T)
    speaker: torch.Tensor  # S_x (B, s), raw
    content: torch.Tensor  # C_x (B, T, c)
    mel_out: torch.Tensor  # decoder output before the postnet (B, T, M)
    mel_post: torch.Tensor  # final reconstruction x' (B, T, M)
    speaker_re: torch.Tensor  # S of E(x') (B, s)
    content_re: torch.Tensor  # C of E(x') (B, T, c)
    spk_logits: torch.Tensor  # C1(S_x / |S_x|) (B, K)
    adv_logits: torch.Tensor  # C2 logits that train C2: (B, T, K) per frame or (B, K) pooled
    enc_adv_logits: torch.Tensor  # C2 logits whose loss trains the encoder (grl: same tensor)
    perm: torch.Tensor | None = None  # conversion partner of each row
    conv_speaker: torch.Tensor | None = None  # S of E(D(C_a, S_b)) (B, s)
    conv_content: torch.Tensor | None = None  # C of E(D(C_a, S_b)) (B, T, c)
    conv_spk_logits: torch.Tensor | None = None  # C1 on the re-encoded conversion (B, K)


class ClsVC(VCSystem):
    """ClsVC (encoder E, decoder D + postnet, speaker classifier C1, adversary C2).

    ``n_mels`` comes from the mel config; ``cfg.n_speakers`` must be set (training speakers).
    Inference is owned by the model: :meth:`embed` and :meth:`convert` run under
    ``torch.inference_mode``.
    """

    embedding = "mel"

    @classmethod
    def from_config(cls, cfg: Config) -> "ClsVC":
        return cls(cfg.model, n_mels=cfg.mel.n_mels, loss=cfg.loss)

    @property
    def speaker_dim(self) -> int:
        return self.cfg.speaker_dim

    def param_groups(self, phase: str, lr: float) -> list[dict]:
        """Two groups: everything but C2, and C2 (whose rate ``optim.adversary_lr_mult``
        scales; the trainer applies the multiplier to the group named "adversary")."""
        adv = list(self.adversary.parameters())
        ids = {id(p) for p in adv}
        return [{"params": [p for p in self.parameters() if id(p) not in ids], "lr": lr, "name": "main"},
                {"params": adv, "lr": lr, "name": "adversary"}]

    def __init__(self, cfg: ModelConfig, n_mels: int = 80, loss: LossConfig | None = None):
        super().__init__()
        if cfg.n_speakers < 1:
            raise ClsvcError("model.n_speakers must be set from the training data (>= 1)")
        self.cfg = cfg
        self.loss_cfg = loss or LossConfig()
        self.n_mels = n_mels
        self.encoder = Encoder(n_mels, cfg)
        self.decoder = Decoder(n_mels, cfg)
        if cfg.speaker_classifier == "cosine":
            self.speaker_classifier = CosineClassifier(cfg.speaker_dim, cfg.n_speakers, cfg.cosine_scale)
        else:
            self.speaker_classifier = nn.Linear(cfg.speaker_dim, cfg.n_speakers)
        self.adversary = mlp(cfg.content_dim, cfg.adversary_hidden, cfg.n_speakers, cfg.adversary_layers)

    # ------------------------------------------------------------------ pieces

    def encode(self, mel: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """mel (B, T, M) -> (S_x (B, s), C_x (B, T, c), mask (B, T))."""
        b, t, _ = mel.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=mel.device)
        mask = length_mask(lengths, t)
        z = self.encoder(mel)
        s = self.cfg.speaker_dim
        speaker = masked_mean(z[..., :s], mask)
        content = z[..., s:]
        if self.cfg.content_norm == "instance":
            content = masked_instance_norm(content, mask)
        return speaker, content, mask

    def decode(self, content: torch.Tensor, speaker_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(C (B, T, c), unit-norm speaker (B, s)) -> (mel_out, mel_post), each (B, T, M)."""
        return self.decoder(content, speaker_norm)

    def classify_content(self, content: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.cfg.adversary_input == "pooled":
            return self.adversary(masked_mean(content, mask))
        return self.adversary(content)

    # ------------------------------------------------------------------ training

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch (paper Eq. 8 plus the configured remedies). With a
        conversion loss on, row i is converted to row i+1's speaker (batches are random, so
        neighbours are random speakers)."""
        from .losses import clsvc_losses

        perm = None
        if self.loss_cfg.convert_code > 0 or self.loss_cfg.convert_cls > 0:
            perm = torch.roll(torch.arange(mel.shape[0], device=mel.device), 1)
        out = self.run(mel, lengths, perm)
        return clsvc_losses(out, mel, speaker, self.loss_cfg)

    def run(self, mel: torch.Tensor, lengths: torch.Tensor, perm: torch.Tensor | None = None
            ) -> ClsVCOutput:
        """One training pass. ``perm`` (B,) names each row's conversion partner; when given,
        D(C_a, S_perm[a]) is decoded and re-encoded for the conversion losses."""
        speaker, content, mask = self.encode(mel, lengths)
        s_norm = F.normalize(speaker, dim=-1)
        mel_out, mel_post = self.decode(content, s_norm)
        speaker_re, content_re, _ = self.encode(mel_post, lengths)
        spk_logits = self.speaker_classifier(s_norm)
        if self.loss_cfg.adversarial == "grl":
            adv_logits = self.classify_content(grad_reverse(content), mask)
            enc_adv_logits = adv_logits
        else:
            # C2 learns on a detached code; the encoder's term goes through a frozen copy of C2,
            # so each objective moves only its own player.
            adv_logits = self.classify_content(content.detach(), mask)
            frozen = {k: v.detach() for k, v in self.adversary.named_parameters()}
            code = masked_mean(content, mask) if self.cfg.adversary_input == "pooled" else content
            enc_adv_logits = functional_call(self.adversary, frozen, (code,))
        out = ClsVCOutput(mask, speaker, content, mel_out, mel_post, speaker_re, content_re,
                          spk_logits, adv_logits, enc_adv_logits)
        if perm is not None:
            _, conv_post = self.decode(content, s_norm[perm])
            out.perm = perm
            out.conv_speaker, out.conv_content, _ = self.encode(conv_post, lengths)
            out.conv_spk_logits = self.speaker_classifier(F.normalize(out.conv_speaker, dim=-1))
        return out

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def embed(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm speaker embeddings S_x/|S_x| (B, s) of mels (B, T, M)."""
        speaker, _, _ = self.encode(mel, lengths)
        return F.normalize(speaker, dim=-1)

    @torch.inference_mode()
    def content(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Content codes C_x (B, T, c)."""
        return self.encode(mel, lengths)[1]

    @torch.inference_mode()
    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target speaker embeddings (B, s) or (s,) -> converted (B, T, M).

        The target embedding is re-normalised, so a mean of unit embeddings may be passed.
        """
        _, content, _ = self.encode(mel)
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0).expand(mel.shape[0], -1)
        _, post = self.decode(content, F.normalize(speaker, dim=-1))
        return post.clamp(0.0, 1.0)
