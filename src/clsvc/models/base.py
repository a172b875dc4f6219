"""What every voice-conversion system in clsvc provides to the shared trainer, converter and
evaluator.

A system is an ``nn.Module`` built from the whole :class:`~clsvc.config.Config` (so it can read
its own section, e.g. ``cfg.autovc``) with ``cfg.model.n_speakers`` set. Everything specific to
a system lives in it: its losses, its optimisation phases, a discriminator, and its *voice part*
(:mod:`.voices`), the injected component that turns reference speech into the vector the
system conditions on. The rest of the toolkit calls the methods below and never asks which
kind of system it holds.

Shapes: mel (B, T, n_mels) in [0, 1]; lengths (B,) valid frames; speaker labels (B,) indices
into the training speaker list; a speaker vector is (speaker_dim,) or (B, speaker_dim).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from .voices import Cache, Reference, VoicePart


@dataclass
class Codes:
    """Frozen codes of a batch for the probes and t-SNE; None where a system has no such code.

    ``content`` (B, T', c) frame-level content; ``speaker`` (B, s) unit utterance-level speaker
    vectors from the system's own encoder.
    """

    content: torch.Tensor | None = None
    speaker: torch.Tensor | None = None


class System(nn.Module):
    """What the trainer, checkpoints and export need of anything clsvc trains (the VC systems
    below, and the neural vocoder :class:`clsvc.vocoder.system.VocoderSystem`).

    * ``phases`` — optimisation phases per training step, each with its own optimizer, run in
      this order (a GAN: ``("disc", "gen")``).
    * ``training_only`` — state-dict prefixes that inference does not need (classifiers,
      discriminators); an exported model leaves them out.
    * ``optional_training`` — those of them that only some configs build (a loss term's own
      head): a checkpoint of a run without one may start (``--init``) a run with it, fresh.
    * ``inputs`` — what a training batch must hold: ``"mel"`` always; ``"wav"`` for a system
      that learns audio (the features then need ``clsvc preprocess --keep-wav``); ``"f0"`` for
      one conditioned on pitch (``clsvc preprocess --f0``). :meth:`batch_inputs` says it for a
      given config (a switch of the config may add an input).
    """

    phases: ClassVar[tuple[str, ...]] = ("main",)
    training_only: ClassVar[tuple[str, ...]] = ()
    optional_training: ClassVar[tuple[str, ...]] = ()
    inputs: ClassVar[tuple[str, ...]] = ("mel",)

    @classmethod
    def from_config(cls, cfg: Any) -> System:
        """Build from the whole :class:`~clsvc.config.Config` (``cfg.model.n_speakers`` set)."""
        raise NotImplementedError

    @classmethod
    def batch_inputs(cls, cfg: Any) -> tuple[str, ...]:
        """What a training batch must hold for the system built from ``cfg`` (default: ``inputs``)."""
        return cls.inputs

    # ------------------------------------------------------------------ training

    def param_groups(self, phase: str) -> list[dict[str, Any]]:
        """Parameter groups of the optimizer of ``phase`` (default: every parameter). A group
        may carry ``lr_scale``: its learning rate is ``optim.lr * lr_scale``."""
        return [{"params": [p for p in self.parameters() if p.requires_grad]}]

    def phase_active(self, phase: str) -> bool:
        """Whether ``phase`` has work this step (a GAN's discriminators may join late or update
        every k steps); the trainer skips an idle phase's forward, backward and step."""
        return True

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main") -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Loss of ``phase`` on a batch: (scalar total, named terms for logging). A system with
        more ``inputs`` takes them as keywords (``wav=``); None for the loss = idle this step."""
        raise NotImplementedError

    def prepare(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None) -> None:
        """Called once before training with each training speaker's utterances (default: nothing)."""

    def speaker_table(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None
                      ) -> torch.Tensor | None:
        """(K, s) vectors of the training speakers stored with each checkpoint (for
        ``--target-speaker``), or None for a system without speakers."""
        return None

    # ------------------------------------------------------------------ export

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """The state dict without the ``training_only`` parts."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(self.training_only)}

    def load_inference_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load :meth:`inference_state_dict` output; only ``training_only`` keys may be missing."""
        result = self.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(self.training_only)]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"state mismatch: missing {missing[:3]}, unexpected {result.unexpected_keys[:3]}")


class VCSystem(System):
    """Base class of the voice-conversion systems (ClsVC, AutoVC, VQVC+, VAE-VC, StarGAN-VC2).

    * ``voice`` — the system's voice part (set in ``__init__``); it makes the speaker table
      the trainer stores and, before training, whatever vectors the system trains on.
    """

    voice: VoicePart

    @property
    def speaker_dim(self) -> int:
        """Size of the vector the system conditions on."""
        return self.voice.dim

    def prepare(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None) -> None:
        """Let the voice part see the training speakers (AutoVC stores their mean d-vectors)."""
        self.voice.fit(speakers, cache)

    def speaker_table(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None
                      ) -> torch.Tensor | None:
        """The voice part's (K, speaker_dim) unit vectors of the training speakers."""
        return self.voice.table(speakers, cache)

    # ------------------------------------------------------------------ inference

    def codes(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> Codes:
        """Content and speaker codes of mels (B, T, M) (default: none)."""
        return Codes()

    def source_condition(self, source: Reference) -> torch.Tensor | None:
        """What :meth:`convert` needs from the source utterance besides its mel; None for most
        systems. A 1-D tensor is utterance level (AutoVC: its voice vector (256,), made by the
        voice part); a 2-D tensor (T, c) is frame level, one row per frame of ``source.mel``
        (ClsVC with ``model.f0_condition``: its pitch features (T, 2)), and a converter that
        converts a long mel in chunks passes each chunk its rows."""
        return None

    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target speaker vectors (B, s) or (s,) -> mels (B, T, M) in
        [0, 1]. ``source``: :meth:`source_condition` of the source utterance. Runs under
        ``torch.inference_mode`` in every implementation."""
        raise NotImplementedError
