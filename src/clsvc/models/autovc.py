"""AutoVC (Qian et al. 2019, "AutoVC: Zero-shot voice style transfer with only autoencoder
loss") as a baseline of the ClsVC experiments.

An autoencoder whose only disentangling device is a narrow, temporally down-sampled bottleneck:

* Content encoder E(x, s_src): the mel (B, T, M) concatenated with the *source* speaker's
  d-vector broadcast over time -> ``model.enc_conv_layers`` x [Conv1d(``model.enc_channels``,
  k=``model.kernel_size``) + ``model.norm`` + ReLU] -> ``model.enc_lstm_layers``-layer BiLSTM
  with ``autovc.bottleneck_dim / 2`` units per direction -> down-sampling with AutoVC's trick:
  code j is [forward output at frame (j+1)*d - 1, backward output at frame j*d] (d =
  ``autovc.downsample``), so each code has read its whole d-frame block from both sides.
  Codes: (B, T/d, bottleneck_dim).
* Up-sampling: each code is repeated d times back to T frames.
* Decoder: ClsVC's :class:`~.clsvc.Decoder` (AutoVC's layout: LSTM ``dec_pre_lstm`` ->
  ``dec_conv_layers`` convs -> LSTM ``dec_lstm_hidden`` x ``dec_lstm_layers`` -> linear to mel,
  plus the residual conv postnet) on [up-sampled codes, *target* d-vector].

Loss (AutoVC's, no classifiers): ``recon = MSE(post, x) + MSE(pre-postnet, x)`` over valid
frames, ``code = dist(E(x', s_src), E(x, s_src))`` on the down-sampled codes (``code_distance``,
L1 in AutoVC) and ``total = recon + lambda_code * code``. In training source = target = the
speaker's mean d-vector (self-reconstruction).

Speaker vectors are Resemblyzer's GE2E d-vectors (256-d, unit), made by the system's voice part
(:class:`~.voices.DVectorVoice`). Before training the trainer calls ``voice.fit`` with the
training speakers' utterances; the part keeps each speaker's mean d-vector in its (K, 256)
buffer, which is saved with the weights, so a checkpoint converts into ``--target-speaker NAME``
without the training data. One-shot conversion gets the target's d-vector from reference audio
and the source's own d-vector from the source utterance (:meth:`AutoVC.source_condition`),
through the same part.

Choices where the paper and its released code are silent or do not apply here:

* Variable lengths: AutoVC trains on full fixed crops. Here batches are padded; the
  reconstruction loss is averaged over valid frames, the code loss over code blocks that start
  inside the utterance, and the re-encoded x' gets the input's padding (silence) on padded
  frames, so both encoder passes see the same padding.
* T not divisible by d: the mel is padded with silence (0) to a multiple of d, encoded and
  decoded, and the output cropped back to T (the released code needs T divisible by d).
* ``model.enc_lstm_hidden`` is unused: the BiLSTM's width *is* the bottleneck.
* ``model.speaker_dim`` is unused: the speaker vector is the 256-d d-vector.
* Weights use PyTorch's default initialisation like ClsVC (the released code uses Xavier).
* ``convert`` re-normalises the given vectors to unit length (the training table's rows are
  unit means, Resemblyzer's utterance embeddings are unit).
* No content code for the probes (:meth:`codes` gives none): the code needs the source
  speaker's d-vector, which the probe interface does not provide.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import AutoVCConfig, Config, ModelConfig
from ..dvector import DIM as DVECTOR_DIM
from ..errors import ClsvcError
from .base import VCSystem
from .clsvc import Decoder
from .layers import conv_stack, length_mask, masked_frame_mse, masked_mean
from .voices import DVectorVoice, Reference


def downsample_codes(h: torch.Tensor, d: int) -> torch.Tensor:
    """AutoVC's down-sampling of BiLSTM outputs h (B, T, 2H), T a multiple of ``d`` ->
    codes (B, T/d, 2H): code j = [forward h at frame (j+1)d-1, backward h at frame jd]."""
    half = h.shape[-1] // 2
    return torch.cat([h[:, d - 1::d, :half], h[:, 0::d, half:]], dim=-1)


def upsample_codes(codes: torch.Tensor, d: int) -> torch.Tensor:
    """Codes (B, N, c) -> (B, N*d, c), each code repeated ``d`` times."""
    return codes.repeat_interleave(d, dim=1)


class ContentEncoder(nn.Module):
    """(mel (B, T, M), speaker vector (B, 256)) -> BiLSTM outputs (B, T, bottleneck_dim);
    T must be a multiple of the down-sampling factor for :func:`downsample_codes`."""

    def __init__(self, n_mels: int, speaker_dim: int, channels: int, conv_layers: int, lstm_layers: int,
                 bottleneck_dim: int, kernel: int, norm: str):
        super().__init__()
        self.convs, d = conv_stack(n_mels + speaker_dim, channels, conv_layers, kernel, norm)
        self.lstm = nn.LSTM(d, bottleneck_dim // 2, num_layers=lstm_layers, batch_first=True, bidirectional=True)

    def forward(self, mel: torch.Tensor, speaker: torch.Tensor) -> torch.Tensor:
        x = torch.cat([mel, speaker.unsqueeze(1).expand(-1, mel.shape[1], -1)], dim=-1)
        h = self.convs(x.transpose(1, 2)).transpose(1, 2)
        return self.lstm(h)[0]


class AutoVC(VCSystem):
    """AutoVC: content encoder with a down-sampled bottleneck, decoder + postnet, conditioned
    on (mean) Resemblyzer d-vectors. See the module docstring."""

    voice: DVectorVoice

    @classmethod
    def from_config(cls, cfg: Config) -> AutoVC:
        return cls(cfg.model, cfg.autovc, n_mels=cfg.mel.n_mels)

    def __init__(self, cfg: ModelConfig, acfg: AutoVCConfig | None = None, n_mels: int = 80):
        super().__init__()
        acfg = acfg or AutoVCConfig()
        self.cfg = cfg
        self.acfg = acfg
        self.n_mels = n_mels
        self.encoder = ContentEncoder(n_mels, DVECTOR_DIM, cfg.enc_channels, cfg.enc_conv_layers,
                                      cfg.enc_lstm_layers, acfg.bottleneck_dim, cfg.kernel_size, cfg.norm)
        self.decoder = Decoder.from_model_config(n_mels, acfg.bottleneck_dim, DVECTOR_DIM, cfg)
        # Mean d-vector of each training speaker (all zeros until the trainer calls voice.fit).
        self.voice = DVectorVoice(cfg.n_speakers)

    def source_condition(self, source: Reference) -> torch.Tensor:
        """The source utterance's own d-vector (256,), which the content encoder reads."""
        return self.voice.voice([source])

    # ------------------------------------------------------------------ pieces

    def _pad(self, mel: torch.Tensor) -> torch.Tensor:
        """Pad (B, T, M) with silence (0) to a multiple of the down-sampling factor."""
        extra = (-mel.shape[1]) % self.acfg.downsample
        return F.pad(mel, (0, 0, 0, extra)) if extra else mel

    def encode(self, mel: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """Down-sampled content codes (B, ceil(T/d), bottleneck_dim) of mel (B, T, M) given the
        source speaker vectors (B, 256)."""
        return downsample_codes(self.encoder(self._pad(mel), source), self.acfg.downsample)

    def decode(self, codes: torch.Tensor, target: torch.Tensor, frames: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (B, N, c) + target vectors (B, 256) -> (mel before postnet, mel after postnet),
        each (B, frames, M)."""
        mel_out, mel_post = self.decoder(upsample_codes(codes, self.acfg.downsample), target)
        return mel_out[:, :frames], mel_post[:, :frames]

    # ------------------------------------------------------------------ training

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Self-reconstruction loss of a batch: mel (B, T, M), lengths (B,), speaker (B,)."""
        if not self.voice.fitted:
            raise ClsvcError("AutoVC has no speaker d-vectors: call voice.fit(...) or voice.set_table((K, 256)) "
                             "before training (the trainer does this)")
        t = mel.shape[1]
        d = self.acfg.downsample
        mask = length_mask(lengths, t)
        vec = self.voice.dvectors[speaker]
        codes = self.encode(mel, vec)
        mel_out, mel_post = self.decode(codes, vec, t)
        # Re-encode x' with the input's padding, so padded frames cannot move the codes.
        keep = mask.unsqueeze(-1).to(mel_post.dtype)
        codes_re = self.encode(mel_post * keep + mel * (1 - keep), vec)
        # A code block counts when it starts inside the utterance.
        block_mask = (torch.arange(codes.shape[1], device=mel.device)[None, :] * d
                      < lengths[:, None]).float()
        recon_post = masked_frame_mse(mel_post.float(), mel, mask)
        recon_pre = masked_frame_mse(mel_out.float(), mel, mask)
        diff = codes_re.float() - codes.float()
        dist = diff.abs() if self.acfg.code_distance == "l1" else diff ** 2
        code = masked_mean(dist.mean(-1), block_mask)
        recon = recon_post + recon_pre
        total = recon + self.acfg.lambda_code * code
        return total, {"total": total, "recon": recon, "recon_post": recon_post, "code": code}

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target d-vectors (B, 256) or (256,) + the source's d-vectors
        (B, 256) or (256,) -> converted mels (B, T, M) in [0, 1]."""
        if source is None:
            raise ClsvcError("AutoVC conversion needs the source speaker's d-vector (source=...)")
        b, t, _ = mel.shape

        def rows(v: torch.Tensor) -> torch.Tensor:
            v = v.to(mel.device, mel.dtype)
            return F.normalize(v.unsqueeze(0).expand(b, -1) if v.dim() == 1 else v, dim=-1)

        codes = self.encode(mel, rows(source))
        return self.decode(codes, rows(speaker), t)[1].clamp(0.0, 1.0)
