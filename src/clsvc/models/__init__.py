"""Voice-conversion systems behind one interface (:class:`~.base.VCSystem`).

``clsvc`` is the paper's system; the baselines of its experiments (``autovc``, ``vqvc``,
``vae``, ``stargan``) reuse the same features, trainer, checkpoints, converter and evaluation.
"""

from __future__ import annotations

import importlib

from ..config import Config
from ..errors import ClsvcError
from .base import Codes, System, VCSystem
from .clsvc import ClsVC
from .losses import ClsVCOutput, clsvc_losses
from .voices import DVectorVoice, EncoderVoice, NotOneShot, Reference, TableVoice, VoicePart

# system name -> "module:Class" (imported on demand so a broken baseline cannot break ClsVC)
REGISTRY = {
    "clsvc": "clsvc.models.clsvc:ClsVC",
    "autovc": "clsvc.models.autovc:AutoVC",
    "vqvc": "clsvc.models.vqvc:VQVCPlus",
    "vae": "clsvc.models.vae:VAEVC",
    "stargan": "clsvc.models.stargan:StarGANVC2",
    "vocoder": "clsvc.vocoder.system:VocoderSystem",  # trained like a system; not a VC system
}


def system_class(name: str) -> type[System]:
    """The class registered under ``name`` (imported on first use)."""
    if name not in REGISTRY:
        raise ClsvcError(f"unknown model.system {name!r}; choose one of {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_system(cfg: Config) -> System:
    """The system named by ``cfg.model.system``, built from the whole config."""
    if cfg.model.n_speakers < 1:
        raise ClsvcError("model.n_speakers must be set from the training data (>= 1)")
    return system_class(cfg.model.system).from_config(cfg)


__all__ = ["REGISTRY", "ClsVC", "ClsVCOutput", "Codes", "DVectorVoice", "EncoderVoice", "NotOneShot", "Reference",
           "System", "TableVoice", "VCSystem", "VoicePart", "build_system", "clsvc_losses", "system_class"]
