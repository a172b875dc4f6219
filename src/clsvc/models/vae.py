"""VAE-VC: a conditional variational autoencoder for voice conversion (Hsu et al. 2016, "Voice
conversion from non-parallel corpora using variational auto-encoder"; the VAE part of their 2017
VAW-GAN), a baseline of the ClsVC paper's experiments.

The encoder q(z | x) sees only the mel and gives a Gaussian per frame; the decoder p(x | z, y)
sees the latent and a learned vector of speaker ``y``. Training maximises the (beta-weighted)
ELBO; the KL term towards N(0, I) squeezes the latent so that the decoder must take the voice from
the speaker vector. Converting decodes the source's posterior mean with another speaker's vector,
so only training speakers can be targets (a :class:`~.voices.TableVoice`, no one-shot).

Shapes: mel (B, T, 80) in [0, 1]; lengths (B,) valid frames; speaker (B,) labels; the latent
z is (B, T, latent_dim) (frame level, same frame rate as the mel); a speaker vector is
(speaker_emb_dim,) or (B, speaker_emb_dim).

Network (the paper used frame-wise convolutions over the STRAIGHT spectrum of one frame; here
both sides work along time on mel frames, with the toolkit's conv block and sizes):

* encoder: ``model.enc_conv_layers`` x [Conv1d(``vae.channels``, k=``model.kernel_size``) +
  ``model.norm`` + ReLU] -> BiLSTM (``vae.channels / 2`` per direction, ``model.enc_lstm_layers``
  layers; 0 = none) -> linear -> (mu, log sigma^2), each (B, T, latent_dim);
* decoder: linear([z ; y] -> ``vae.channels``) -> ``model.dec_conv_layers`` conv blocks ->
  LSTM([h ; y] -> ``vae.channels``, ``model.dec_lstm_layers`` layers; 0 = none) -> linear to 80
  mels, plus a residual tanh postnet of ``model.postnet_layers`` convs (``vae.channels`` wide;
  0 = none) as in AutoVC/ClsVC.

Choices the paper leaves open (or that differ because of the mel features):

* Speaker vector: a row of ``nn.Embedding(n_speakers, speaker_emb_dim)`` (the paper's public
  code learns a 128-d table too), **L2-normalised before the decoder, in training and in
  conversion**. The stored speaker table (``voice.table()``) therefore holds unit vectors
  and :meth:`convert` re-normalises what it gets, so a raw row, a unit row or a re-normalised
  mean of rows all decode the same way.
* The speaker vector is given to the decoder twice, at its input and again at its LSTM's input:
  a conditional decoder that sees y only once can let the conv layers wash it out.
* The latent is sampled (z = mu + sigma * eps) only in training mode; in eval mode (validation,
  :meth:`content`, :meth:`convert`) z = mu, so validation and conversion are deterministic.
  log sigma^2 is clamped to [-12, 8] so that exp() cannot overflow early in training.
* Loss (with m the valid-frame mask, M = 80 mels, D = latent_dim):
  ``recon = sum_t m_t * mean_M (x - x_post)^2 / sum_t m_t`` (the decoder's final output),
  ``recon_pre`` the same for the output before the postnet (AutoVC supervises both; only with
  a postnet), ``kl = sum_t m_t * mean_D KL(N(mu, sigma^2) || N(0, 1)) / sum_t m_t``, i.e. both
  terms are **means over valid frames and over their feature dimension**, and
  ``total = recon + recon_pre + kl_weight * warmup * kl`` with
  ``warmup = min(1, steps / kl_anneal_steps)`` (linear KL warm-up against posterior collapse).
  Per frame, the ELBO of a Gaussian decoder with std sigma_x and a beta-weighted KL is
  ``M / (2 sigma_x^2) * [recon + beta * D * 2 sigma_x^2 / M * kl]``, so
  ``kl_weight = beta * D * sigma_x^2 / 40`` for M = 80. The paper's unit-variance Gaussian on
  log10 spectra (1 unit = 10 dB) is sigma_x = 0.1 on this toolkit's [0, 1] = 100 dB scale; with
  beta = 1 and D = 64 that gives ``kl_weight = 0.016`` (configs/vae.yaml). ``kl_weight = 1``
  with these means would be a ~60x stronger KL and collapses the posterior.
* ``steps`` is a registered buffer (saved with the weights) counting training-mode forward
  calls, so a resumed run continues the warm-up exactly where it stopped; eval-mode calls do not
  count. The trainer calls forward once per step (one phase), so it equals the step count.

Logged terms: ``total``, ``recon``, ``recon_pre`` (with a postnet), ``kl`` (unweighted, mean per
frame and dimension, in nats) and ``kl_weight`` (the effective ``kl_weight * warmup``).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Config, ModelConfig, VAEConfig
from .base import Codes, VCSystem
from .layers import Postnet, conv_stack, length_mask, lstm, masked_frame_mse, masked_mean
from .voices import TableVoice

# Clamp of log sigma^2: exp(8) ~ 3e3 and exp(-12) ~ 6e-6 bound the posterior variance far beyond
# what a trained encoder uses, while keeping exp() and the KL finite in the first steps.
LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0


class VAEEncoder(nn.Module):
    """mel (B, T, n_mels) -> (mu, logvar), each (B, T, latent_dim)."""

    def __init__(self, n_mels: int, vae: VAEConfig, model: ModelConfig):
        super().__init__()
        self.convs, d = conv_stack(n_mels, vae.channels, model.enc_conv_layers, model.kernel_size, model.norm)
        # Half the width per direction, so the BiLSTM output is `channels` wide like the convs.
        self.lstm = lstm(d, max(1, vae.channels // 2), model.enc_lstm_layers, bidirectional=True)
        if self.lstm is not None:
            d = 2 * max(1, vae.channels // 2)
        self.proj = nn.Linear(d, 2 * vae.latent_dim)

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(mel.transpose(1, 2)).transpose(1, 2)
        if self.lstm is not None:
            h, _ = self.lstm(h)
        mu, logvar = self.proj(h).chunk(2, dim=-1)
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class VAEDecoder(nn.Module):
    """(z (B, T, latent_dim), unit speaker vector (B, speaker_emb_dim)) -> (mel before the
    postnet, final mel), each (B, T, n_mels)."""

    def __init__(self, n_mels: int, vae: VAEConfig, model: ModelConfig):
        super().__init__()
        s, c = vae.speaker_emb_dim, vae.channels
        self.pre = nn.Linear(vae.latent_dim + s, c)
        self.convs, d = conv_stack(c, c, model.dec_conv_layers, model.kernel_size, model.norm)
        self.lstm = lstm(d + s, c, model.dec_lstm_layers, bidirectional=False)
        if self.lstm is not None:
            d = c
        self.out = nn.Linear(d, n_mels)
        self.postnet = Postnet(n_mels, c, model.postnet_layers, model.kernel_size, model.norm)

    def forward(self, z: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = speaker.unsqueeze(1).expand(-1, z.shape[1], -1)
        h = F.relu(self.pre(torch.cat([z, y], dim=-1)))
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        if self.lstm is not None:
            h, _ = self.lstm(torch.cat([h, y], dim=-1))
        mel = self.out(h)
        return mel, self.postnet(mel)


class VAEVC(VCSystem):
    """Conditional VAE (encoder q(z|x), speaker table, decoder p(x|z, y)); seen targets only."""

    steps: torch.Tensor  # () long: training-mode forward calls so far

    def __init__(self, model: ModelConfig, vae: VAEConfig, n_mels: int = 80):
        super().__init__()
        self.cfg = model
        self.vae = vae
        self.n_mels = n_mels
        self.encoder = VAEEncoder(n_mels, vae, model)
        self.speakers = nn.Embedding(model.n_speakers, vae.speaker_emb_dim)
        self.decoder = VAEDecoder(n_mels, vae, model)
        # Training-mode forward calls so far (= optimisation steps): drives the KL warm-up and is
        # saved in the state dict, so a resumed run has the same warm-up as an uninterrupted one.
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # What the decoder sees: the table's rows, L2-normalised (TableVoice normalises).
        self.voice = TableVoice(lambda: self.speakers.weight, vae.speaker_emb_dim)

    @classmethod
    def from_config(cls, cfg: Config) -> VAEVC:
        return cls(cfg.model, cfg.vae, n_mels=cfg.mel.n_mels)

    # ------------------------------------------------------------------ pieces

    def kl_scale(self) -> torch.Tensor:
        """kl_weight * warm-up at the current step count: the scalar weight of this step's KL
        (a tensor on the model's device, so reading the counter never syncs a GPU)."""
        n = self.vae.kl_anneal_steps
        if n <= 0:
            return torch.full((), self.vae.kl_weight, device=self.steps.device)
        return self.vae.kl_weight * (self.steps.float() / n).clamp(max=1.0)

    def _decode(self, z: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, T, D) + speaker vectors (B, s) of any norm -> (mel_pre, mel_post) (B, T, M)."""
        return self.decoder(z, F.normalize(speaker, dim=-1))

    # ------------------------------------------------------------------ training

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Negative (beta-weighted) ELBO of a batch; see the module docstring for the terms."""
        kl_scale = self.kl_scale()  # steps completed before this one (0 on the first step)
        if self.training:
            self.steps += 1
        mask = length_mask(lengths, mel.shape[1])
        mu, logvar = self.encoder(mel)
        if self.training:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        else:
            z = mu
        pre, post = self._decode(z, self.speakers(speaker))
        recon = masked_frame_mse(post.float(), mel.float(), mask)
        mu32, lv32 = mu.float(), logvar.float()
        kl_elem = 0.5 * (mu32.pow(2) + lv32.exp() - 1.0 - lv32)  # (B, T, D), nats
        kl = masked_mean(kl_elem.mean(-1), mask)
        total = recon + kl_scale * kl
        terms = {"recon": recon, "kl": kl, "kl_weight": kl_scale}
        if len(self.decoder.postnet) > 0:
            recon_pre = masked_frame_mse(pre.float(), mel.float(), mask)
            total = total + recon_pre
            terms["recon_pre"] = recon_pre
        terms["total"] = total
        return total, terms

    # ------------------------------------------------------------------ inference

    @torch.inference_mode()
    def content(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Posterior means mu (B, T, latent_dim) of mels (B, T, M)."""
        return self.encoder(mel)[0]

    @torch.inference_mode()
    def codes(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> Codes:
        """Posterior means (B, T, latent_dim) as the content code; no speaker encoder."""
        return Codes(self.content(mel, lengths))

    @torch.inference_mode()
    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target speaker vectors (B, s) or (s,) -> mels (B, T, M) in
        [0, 1]: the source's posterior mean decoded with the target's vector (re-normalised, so
        a raw table row or a stored unit row both work)."""
        mu, _ = self.encoder(mel)
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0).expand(mel.shape[0], -1)
        _, post = self._decode(mu, speaker.to(mu.dtype))
        return post.clamp(0.0, 1.0)
