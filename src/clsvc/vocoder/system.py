"""The Vocos vocoder as a two-phase GAN system for clsvc's trainer.

:class:`VocoderSystem` holds the generator (:class:`~.vocos.VocosGenerator`, kept for
inference) and two discriminators (:class:`~.discriminators.MultiPeriodDiscriminator` ``mpd``
and :class:`~.discriminators.MultiResolutionDiscriminator` ``mrd``, training only). It follows
the system conventions of :mod:`clsvc.models.base`: ``phases`` run in order each step with one
optimizer each, ``param_groups(phase)`` (a group may carry ``lr_scale``), ``training_only``
state-dict prefixes, ``forward(...) -> (loss, terms)``, with two additions the trainer must
honour:

* ``forward`` needs the waveform aligned with the mel: ``wav`` (B, T * hop), sample
  ``t * hop`` at the centre of mel frame t (what ``wav_to_mel`` does), so row b's first
  ``lengths[b] * hop`` samples are valid.
* The loss may be **None**: the phase has nothing to do this step (the "disc" phase during the
  warm-up and between ``disc_every`` updates). The trainer must then skip that phase's
  zero_grad/backward/step. :meth:`phase_active` says the same before any forward, which a
  DistributedDataParallel trainer needs (it must not run a DDP forward that no backward
  follows).

Schedule (the buffer ``steps`` counts generator steps taken in training mode and is saved with
the weights, so a resumed run continues it): while ``steps < warmup_steps`` the generator
learns from the reconstruction losses alone and the discriminators are idle (Parallel WaveGAN's
warm-up: D first meets a generator that already gets the spectral envelope right); afterwards
the "disc" phase updates both discriminators when ``steps % disc_every == 0`` and the "gen"
phase adds the adversarial and feature-matching losses every step. In eval mode (validation)
the "disc" phase reports its losses whenever the warm-up is over, regardless of ``disc_every``.

Losses (LSGAN, HiFi-GAN's weights):

* disc: sum over the sub-discriminators of both families of mean (D(real) - 1)^2 + mean
  D(fake)^2; the fake is made without gradients.
* gen: ``lambda_mel`` x L1 of clsvc's mel + ``lambda_stft`` x (spectral convergence + log-
  magnitude L1) of the multi-resolution STFT loss + after the warm-up ``lambda_adv`` x sum of
  mean (D(fake) - 1)^2 + ``lambda_fm`` x feature matching. D runs with its weights detached
  (``torch.func.functional_call``), so the generator's loss gives D no gradients.

Padding: every wave term sees only valid samples. Both the real and the generated wave are
zeroed beyond each row's ``lengths * hop`` samples (so no gradient reaches G from padding and
the discriminators see identical silence there in real and fake), and the mel and STFT losses
average only over frames whose centre is a valid sample.

Shapes: mel (B, T, n_mels) in [0, 1]; lengths (B,) valid mel frames; wav (B, T * hop) float at
16 kHz; ``speaker`` (B,) is accepted for the trainer's calling convention and unused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call

from ..config import MelConfig
from ..errors import ClsvcError
from .discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator, Output
from .losses import MelLoss, MultiResolutionSTFTLoss, discriminator_loss, feature_matching_loss, generator_adv_loss
from .vocos import VocosGenerator

# Natural-log units in one unit of clsvc's [0, 1] mel: it spans -min_level_db = 100 dB of
# amplitude, i.e. 100 / 20 * ln(10) = 11.51 nats. HiFi-GAN's and Vocos' mel-loss weight of 45
# multiplies an L1 of natural-log mels, so the same balance needs 45 x this on clsvc's scale.
MEL_NATS_PER_UNIT = -MelConfig().min_level_db / 20.0 * math.log(10.0)


@dataclass
class VocoderConfig:
    """Sizes and loss weights of :class:`VocoderSystem` (the generator's n_fft and hop are the
    mel's).

    Loss weights: ``lambda_mel`` multiplies the mel L1 in clsvc's units (1 = 100 dB); its
    default is HiFi-GAN's 45 per natural-log unit (x :data:`MEL_NATS_PER_UNIT`), so the mel
    term keeps HiFi-GAN's weight relative to the adversarial (1) and feature-matching (2)
    terms. ``lambda_stft`` = 1: the multi-resolution STFT loss is auxiliary here (the mel
    loss carries the envelope); it pins what clsvc's mel does not see (below 90 Hz, above
    7.6 kHz) and time resolutions finer and coarser than the 64 ms mel window; its log term is
    in nats like the mel term's reference, so 1 against 45 keeps it from fighting the mel and
    adversarial terms over fine detail.

    Discriminator sizes default to the published ones (HiFi-GAN's MPD, Vocos' MRD); they are
    GPU sizes. On CPU (one thread, 16 x 0.5 s segments, a shared machine) the full pair costs
    12-30 s per step against 0.35-0.6 s for the generator alone, most of it in the MPD's 512- and
    1024-wide convs; ``mpd_channels=(8, 32, 128, 256, 256)``, ``mrd_channels=8`` brings a step
    (both phases) to 1.6-2.2 s. ``disc_every`` cuts only the "disc" phase: the
    "gen" phase still runs D forward and backward on the generated wave every step.
    """

    # generator (VocosGenerator)
    dim: int = 384
    intermediate: int = 1152
    layers: int = 8
    kernel: int = 7
    max_magnitude: float = 1e3
    # multi-period discriminator: periods and conv widths (the last width is unstrided)
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    # multi-resolution discriminator: (n_fft, hop, win) per branch and its conv width
    mrd_resolutions: tuple[tuple[int, int, int], ...] = ((1024, 256, 1024), (512, 128, 512), (256, 64, 256))
    mrd_channels: int = 32
    # multi-resolution STFT loss: (n_fft, hop, win) per resolution (Parallel WaveGAN's)
    stft_resolutions: tuple[tuple[int, int, int], ...] = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
    # loss weights (see the class docstring)
    lambda_mel: float = 45.0 * MEL_NATS_PER_UNIT
    lambda_stft: float = 1.0
    lambda_adv: float = 1.0
    lambda_fm: float = 2.0
    # generator steps of reconstruction-only training before the discriminators join
    warmup_steps: int = 5000
    # update the discriminators every `disc_every` generator steps (cuts their cost by k)
    disc_every: int = 1
    # the discriminators' learning rate relative to the optimiser's (HiFi-GAN: equal)
    disc_lr_scale: float = 1.0


class VocoderSystem(nn.Module):
    """Vocos generator + MPD + MRD trained as a GAN (see the module docstring for the phase
    contract, the schedule and the losses)."""

    phases = ("disc", "gen")
    training_only = ("mpd.", "mrd.")
    steps: torch.Tensor  # () long: generator steps so far (warm-up and disc_every schedule)

    def __init__(self, cfg: VocoderConfig | None = None, mel: MelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VocoderConfig()
        self.mel_cfg = mel = mel or MelConfig()
        if cfg.disc_every < 1:
            raise ClsvcError(f"vocoder disc_every must be >= 1, got {cfg.disc_every}")
        self.hop = mel.hop_length
        self.generator = VocosGenerator(mel.n_mels, cfg.dim, cfg.intermediate, cfg.layers, mel.n_fft,
                                        mel.hop_length, cfg.kernel, cfg.max_magnitude)
        self.mpd = MultiPeriodDiscriminator(cfg.mpd_periods, cfg.mpd_channels)
        self.mrd = MultiResolutionDiscriminator(cfg.mrd_resolutions, cfg.mrd_channels)
        self.mel_loss = MelLoss(mel)
        self.stft_loss = MultiResolutionSTFTLoss(cfg.stft_resolutions)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ training

    def param_groups(self, phase: str) -> list[dict[str, Any]]:
        """"disc": both discriminators at ``disc_lr_scale`` times the rate; "gen": the generator."""
        if phase == "disc":
            params = list(self.mpd.parameters()) + list(self.mrd.parameters())
            return [{"params": params, "lr_scale": self.cfg.disc_lr_scale}]
        if phase == "gen":
            return [{"params": list(self.generator.parameters())}]
        raise ClsvcError(f"vocoder has phases {self.phases}, not {phase!r}")

    @property
    def adversarial(self) -> bool:
        """Whether the warm-up is over (the discriminators take part)."""
        return int(self.steps) >= self.cfg.warmup_steps

    def phase_active(self, phase: str) -> bool:
        """Whether ``forward(..., phase)`` returns a loss at the current step (False: it returns
        None and the trainer skips the phase). "gen" always is; "disc" after the warm-up, in
        training mode only every ``disc_every`` steps."""
        if phase == "gen":
            return True
        if phase != "disc":
            raise ClsvcError(f"vocoder has phases {self.phases}, not {phase!r}")
        if not self.adversarial:
            return False
        return not self.training or int(self.steps) % self.cfg.disc_every == 0

    def _valid(self, mel: torch.Tensor, lengths: torch.Tensor, wav: torch.Tensor | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(real wave zeroed in padding (B, N), sample mask (B, N), valid samples (B,))."""
        b, t, _ = mel.shape
        if wav is None:
            raise ClsvcError("the vocoder trains on (mel, waveform) pairs: pass wav=(B, T * hop) to forward")
        if wav.shape != (b, t * self.hop):
            raise ClsvcError(f"vocoder: wav must be (B, T * hop) = {(b, t * self.hop)} for mel {tuple(mel.shape)}, "
                             f"got {tuple(wav.shape)}")
        valid = lengths.to(wav.device).long() * self.hop
        mask = (torch.arange(wav.shape[1], device=wav.device)[None, :] < valid[:, None]).to(torch.float32)
        return wav.float() * mask, mask, valid

    def _discriminate(self, wav: torch.Tensor, frozen: bool) -> tuple[Output, Output]:
        """Both discriminators on (B, N) waves; ``frozen``: their weights as constants."""
        if not frozen:
            return self.mpd(wav), self.mrd(wav)
        outs = []
        for d in (self.mpd, self.mrd):
            params = {n: p.detach() for n, p in d.named_parameters()}
            outs.append(functional_call(d, params, (wav,)))
        return outs[0], outs[1]

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor | None = None,
                phase: str = "gen", wav: torch.Tensor | None = None
                ) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Loss of ``phase`` on a batch: (scalar loss, or None when the phase is idle this step
        (see :meth:`phase_active`); named terms for logging, empty when idle).

        mel (B, T, n_mels) in [0, 1]; lengths (B,) valid frames; speaker unused; wav (B, T * hop)
        the aligned 16 kHz waveform (required).
        """
        if not self.phase_active(phase):
            return None, {}
        real, mask, valid = self._valid(mel, lengths, wav)
        if phase == "disc":
            with torch.no_grad():
                fake = self.generator(mel) * mask
            # One pass over real and fake rows together (B is small on CPU; one larger conv
            # batch is cheaper than two).
            (mpd_logits, _), (mrd_logits, _) = self._discriminate(torch.cat([real, fake]), frozen=False)
            b = real.shape[0]
            d_mpd, mpd_real, mpd_fake = discriminator_loss([x[:b] for x in mpd_logits], [x[b:] for x in mpd_logits])
            d_mrd, mrd_real, mrd_fake = discriminator_loss([x[:b] for x in mrd_logits], [x[b:] for x in mrd_logits])
            loss = d_mpd + d_mrd
            return loss, {"d_loss": loss.detach(), "d_mpd": d_mpd.detach(), "d_mrd": d_mrd.detach(),
                          "d_real": (mpd_real + mrd_real).detach(), "d_fake": (mpd_fake + mrd_fake).detach()}

        c = self.cfg
        fake = self.generator(mel) * mask
        mel_l1 = self.mel_loss(fake, real, valid)
        sc, log_mag = self.stft_loss(fake, real, valid)
        loss = c.lambda_mel * mel_l1 + c.lambda_stft * (sc + log_mag)
        terms = {"mel": mel_l1.detach(), "stft_sc": sc.detach(), "stft_mag": log_mag.detach()}
        if self.adversarial:
            with torch.no_grad():  # the real features are feature-matching targets only
                (_, mpd_real_f), (_, mrd_real_f) = self._discriminate(real, frozen=False)
            (mpd_logits, mpd_f), (mrd_logits, mrd_f) = self._discriminate(fake, frozen=True)
            adv = generator_adv_loss(mpd_logits) + generator_adv_loss(mrd_logits)
            fm = feature_matching_loss(mpd_real_f, mpd_f) + feature_matching_loss(mrd_real_f, mrd_f)
            loss = loss + c.lambda_adv * adv + c.lambda_fm * fm
            terms |= {"g_adv": adv.detach(), "fm": fm.detach()}
        if self.training:
            self.steps += 1
        terms["total"] = loss.detach()
        return loss, terms

    # ------------------------------------------------------------------ inference and export

    @torch.inference_mode()
    def vocode(self, mel: np.ndarray, chunk: int = 512, fade: int = 16) -> np.ndarray:
        """mel (T, n_mels) in [0, 1] -> waveform (T * hop,) float32 at 16 kHz (the generator's
        chunked :meth:`~.vocos.VocosGenerator.vocode`)."""
        return self.generator.vocode(mel, chunk=chunk, fade=fade)

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the ``training_only`` parts (the generator and ``steps``)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.training_only)}

    def load_inference_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load :meth:`inference_state_dict` output; only ``training_only`` keys may be missing."""
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(self.training_only)]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"state mismatch: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
