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
With ``adversarial = False`` the warm-up never ends: no discriminator is built, the "disc" phase
has no parameters (the trainer makes no optimizer for it) and is never active.

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

from typing import Any

import numpy as np
import torch
from torch.func import functional_call

from ..config import Config, MelConfig, VocoderConfig
from ..errors import ClsvcError
from ..models.base import System
from .discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator, Output
from .losses import MelLoss, MultiResolutionSTFTLoss, discriminator_loss, feature_matching_loss, generator_adv_loss
from .vocos import VocosGenerator


class VocoderSystem(System):
    """Vocos generator + MPD + MRD trained as a GAN (see the module docstring for the phase
    contract, the schedule and the losses)."""

    phases = ("disc", "gen")
    training_only = ("mpd.", "mrd.")
    optional_training = ("mpd.", "mrd.")  # not built with vocoder.adversarial = false
    inputs = ("mel", "wav")
    steps: torch.Tensor  # () long: generator steps so far (warm-up and disc_every schedule)

    @classmethod
    def from_config(cls, cfg: Config) -> VocoderSystem:
        """Build from the whole config (its ``vocoder`` and ``mel`` sections)."""
        return cls(cfg.vocoder, cfg.mel)

    def __init__(self, cfg: VocoderConfig | None = None, mel: MelConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or VocoderConfig()
        self.mel_cfg = mel = mel or MelConfig()
        if cfg.disc_every < 1:
            raise ClsvcError(f"vocoder disc_every must be >= 1, got {cfg.disc_every}")
        self.hop = mel.hop_length
        self.generator = VocosGenerator(mel.n_mels, cfg.dim, cfg.intermediate, cfg.layers, mel.n_fft,
                                        mel.hop_length, cfg.kernel, cfg.max_magnitude)
        self.mpd: MultiPeriodDiscriminator | None = None
        self.mrd: MultiResolutionDiscriminator | None = None
        if cfg.adversarial:
            self.mpd = MultiPeriodDiscriminator(cfg.mpd_periods, cfg.mpd_channels)
            self.mrd = MultiResolutionDiscriminator(cfg.mrd_resolutions, cfg.mrd_channels)
        self.mel_loss = MelLoss(mel)
        self.stft_loss = MultiResolutionSTFTLoss(cfg.stft_resolutions)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    # ------------------------------------------------------------------ training

    def param_groups(self, phase: str) -> list[dict[str, Any]]:
        """"disc": both discriminators at ``disc_lr_scale`` times the rate (no group without them);
        "gen": the generator."""
        if phase == "disc":
            if self.mpd is None or self.mrd is None:
                return []
            params = list(self.mpd.parameters()) + list(self.mrd.parameters())
            return [{"params": params, "lr_scale": self.cfg.disc_lr_scale}]
        if phase == "gen":
            return [{"params": list(self.generator.parameters())}]
        raise ClsvcError(f"vocoder has phases {self.phases}, not {phase!r}")

    @property
    def adversarial(self) -> bool:
        """Whether the discriminators take part: they exist and the warm-up is over."""
        return self.cfg.adversarial and int(self.steps) >= self.cfg.warmup_steps

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
        if self.mpd is None or self.mrd is None:  # unreachable: phase_active/adversarial say so first
            raise ClsvcError("this vocoder has no discriminators (vocoder.adversarial is false)")
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
