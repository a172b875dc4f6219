"""What every voice-conversion system in clsvc provides to the shared trainer, converter and
evaluator.

A system is an ``nn.Module`` built from the whole :class:`~clsvc.config.Config` (so it can read
its own section, e.g. ``cfg.autovc``) plus the number of training speakers. The trainer only
calls :meth:`VCSystem.forward` with a batch and a phase name; everything specific to a system
(its losses, its conversion partners, a discriminator) lives in the system.

Shapes: mel (B, T, n_mels) in [0, 1]; lengths (B,) valid frames; speaker labels (B,) indices
into the training speaker list; a speaker vector is (speaker_dim,) or (B, speaker_dim).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn as nn


class VCSystem(nn.Module):
    """Base class of the systems (ClsVC, AutoVC, VQVC+, VAE-VC, StarGAN-VC2).

    Class attributes describe the system to the rest of the toolkit:

    * ``embedding`` — where a target voice vector comes from: ``"mel"`` (the system's own
      encoder, :meth:`embed`; one-shot capable), ``"dvector"`` (a pretrained Resemblyzer
      d-vector of the reference audio; one-shot capable) or ``"table"`` (a training speaker's
      row of :meth:`speaker_vectors`; seen speakers only).
    * ``phases`` — optimisation phases per training step, each with its own optimizer, run in
      this order (a GAN: ``("disc", "gen")``).
    """

    embedding: ClassVar[str] = "mel"
    # AutoVC's content encoder also takes the *source* speaker's vector: convert() then needs
    # ``source`` (the source utterance's vector, made the same way as a target vector).
    needs_source_vector: ClassVar[bool] = False
    phases: ClassVar[tuple[str, ...]] = ("main",)
    has_content: ClassVar[bool] = True  # exposes a frame-level content code (for the probes)

    @classmethod
    def from_config(cls, cfg) -> "VCSystem":
        """Build from the whole :class:`~clsvc.config.Config` (``cfg.model.n_speakers`` set)."""
        raise NotImplementedError

    @property
    def one_shot(self) -> bool:
        return self.embedding in ("mel", "dvector")

    @property
    def speaker_dim(self) -> int:
        raise NotImplementedError

    # ------------------------------------------------------------------ training

    def param_groups(self, phase: str, lr: float) -> list[dict]:
        """Parameter groups of the optimizer of ``phase`` (default: every parameter)."""
        return [{"params": [p for p in self.parameters() if p.requires_grad], "lr": lr}]

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss of ``phase`` on a batch: (scalar total, named terms for logging)."""
        raise NotImplementedError

    def set_speaker_vectors(self, vectors: torch.Tensor) -> None:
        """Receive per-training-speaker vectors computed outside the model (``"dvector"``
        systems get the mean Resemblyzer d-vector of each speaker here, before training)."""

    # ------------------------------------------------------------------ inference

    def speaker_vectors(self) -> torch.Tensor | None:
        """(K, speaker_dim) vectors of the training speakers that the system defines itself
        (``"table"`` systems), or None when they are computed from data by the trainer."""
        return None

    def embed(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unit speaker vectors (B, speaker_dim) of mels (``"mel"`` systems only)."""
        raise NotImplementedError(f"{type(self).__name__} does not embed speakers from mels")

    def content(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Frame-level content codes (B, T', c) (systems with ``has_content``)."""
        raise NotImplementedError(f"{type(self).__name__} has no content code")

    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target speaker vectors (B, s) or (s,) -> mels (B, T, M) in
        [0, 1]. ``source``: the source's speaker vector, for ``needs_source_vector`` systems.
        Runs under ``torch.inference_mode`` in every implementation."""
        raise NotImplementedError
