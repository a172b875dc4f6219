"""Self-describing, atomically written checkpoints, for training and inference alike.

A training checkpoint holds everything needed to rebuild the model for inference (config incl.
the mel definition, speaker list, speaker table) and to continue training exactly (optimizer,
AMP scaler, step, every RNG state incl. the batch sampler's). An exported model
(:func:`export_model`, ``clsvc export``) holds only what inference needs: the weights without
training-only parts (classifiers, discriminators), the config, speakers and speaker table.

Both are plain dicts saved with ``torch.save`` and read back with ``weights_only=True`` (no
code is unpickled), tagged with :data:`FORMAT` and ``kind`` (``"train"`` or ``"inference"``).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import torch

from .config import Config, config_from_dict
from .errors import ClsvcError
from .files import atomic_path
from .models import VCSystem, build_system

FORMAT = "clsvc-checkpoint"
VERSION = 1
TRAIN, INFERENCE = "train", "inference"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tag and time) to ``path`` atomically: a crash mid-write
    leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, format=FORMAT, version=VERSION,
                   saved_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    payload.setdefault("kind", TRAIN)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`; anything else is a ClsvcError."""
    path = Path(path)
    if not path.is_file():
        raise ClsvcError(f"{path}: checkpoint not found; pass a .pt file written by `clsvc train`")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        raise ClsvcError(
            f"{path}: not a clsvc checkpoint (unreadable by torch.load); pass a file from "
            "RUN/checkpoints/ written by `clsvc train`"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ClsvcError(
            f"{path}: not a clsvc checkpoint (no '{FORMAT}' tag); pass a file from "
            "RUN/checkpoints/ written by `clsvc train`"
        )
    if ckpt.get("version", 0) > VERSION:
        raise ClsvcError(f"{path}: written by a newer clsvc (format {ckpt['version']}); upgrade clsvc")
    return ckpt


def is_inference_only(ckpt: dict[str, Any]) -> bool:
    """True for an exported model (no optimizer, no training-only weights)."""
    return ckpt.get("kind", TRAIN) == INFERENCE


def model_from_checkpoint(ckpt: dict[str, Any], where: str) -> tuple[VCSystem, Config]:
    """Rebuild the model (eval mode) and its config from a checkpoint dict alone."""
    cfg = config_from_dict(ckpt["config"], f"{where} (config)")
    model = build_system(cfg)
    try:
        if is_inference_only(ckpt):
            model.load_inference_state(ckpt["model"])
        else:
            model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise ClsvcError(
            f"{where}: weights do not match the config stored with them; the file is damaged "
            "or was edited, re-export it from the training run"
        ) from None
    return model.eval(), cfg


def export_model(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the inference-only file of ``checkpoint`` to ``out`` (see the module docstring)."""
    ckpt = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(ckpt, str(checkpoint))
    payload = {
        "kind": INFERENCE,
        "config": ckpt["config"],
        "speakers": list(ckpt.get("speakers", [])),
        "speaker_table": ckpt.get("speaker_table"),
        "model": {k: v.clone() for k, v in model.inference_state_dict().items()},
        "step": int(ckpt.get("step", 0)),
        "elapsed": float(ckpt.get("elapsed", 0.0)),
    }
    return save_checkpoint(out, payload)
