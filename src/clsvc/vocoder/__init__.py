"""Vocoders turn normalised log-mels (frames, n_mels) back into 16 kHz waveforms.

* ``griffin-lim`` — no weights, the iterative inverse of :mod:`clsvc.audio`'s mel (the default).
* a trained neural vocoder (:mod:`.system`: a Vocos-style generator), given as the path of its
  checkpoint or exported file (``clsvc train --config vocoder-cpu``, ``clsvc export``), or as
  the name of a vocoder shipped with clsvc (:mod:`clsvc.pretrained`).

A vocoder is any callable ``mel -> wav``; :func:`get_vocoder` builds one from a name or path and
refuses a neural vocoder trained on another mel definition.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import MelConfig
from ..errors import ClsvcError
from ..pretrained import GRIFFIN_LIM
from .griffin_lim import GriffinLim

Vocoder = Callable[[np.ndarray], np.ndarray]


class NeuralVocoder:
    """A trained generator as a callable mel (frames, n_mels) -> waveform (frames * hop,)
    float32; runs under ``torch.inference_mode`` in overlapping chunks (no seams)."""

    def __init__(self, model: torch.nn.Module, source: str, step: int):
        self.model = model.eval()
        self.source = source
        self.step = step

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        wav = self.model.vocode(mel)  # type: ignore[operator]  # VocoderSystem.vocode
        # The iSTFT head is unbounded and a GAN overshoots on loud frames (peaks of 1.1-1.2 seen);
        # clip here so every consumer (16-bit writers, scorers, the server) gets samples in [-1, 1].
        return np.clip(wav, -1.0, 1.0)

    def __repr__(self) -> str:
        return f"NeuralVocoder({self.source}, step {self.step})"


def get_vocoder(name: str | Path, cfg: MelConfig, device: str | torch.device = "cpu") -> Vocoder:
    """The vocoder ``name`` (``griffin-lim``, a vocoder checkpoint / exported file, or a shipped
    vocoder's name) for mels of ``cfg``; an unknown name, a file that is not a vocoder, or one
    trained on another mel definition is one ClsvcError line."""
    if str(name) in GRIFFIN_LIM:
        return GriffinLim(cfg)
    from ..checkpoint import model_from_checkpoint
    from ..pretrained import load_checkpoint

    ckpt, path = load_checkpoint(name, "vocoder")  # an existing file wins over a shipped name
    model, vcfg = model_from_checkpoint(ckpt, str(path))
    if not hasattr(model, "vocode"):
        raise ClsvcError(f"{path}: a {vcfg.model.system} checkpoint, not a vocoder; pass a vocoder's file "
                         "to --vocoder (or griffin-lim)")
    diff = ", ".join(cfg.differences(vcfg.mel))
    if diff:
        raise ClsvcError(f"{path}: the vocoder was trained on another mel definition (differs in {diff}); "
                         "use a vocoder trained on this model's features, or griffin-lim")
    return NeuralVocoder(model.to(device), str(path), int(ckpt.get("step", 0)))


__all__ = ["GRIFFIN_LIM", "GriffinLim", "NeuralVocoder", "Vocoder", "get_vocoder"]
