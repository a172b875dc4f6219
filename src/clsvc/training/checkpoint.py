"""Self-describing, atomically written checkpoints.

A checkpoint holds everything needed to rebuild the model for inference (config incl. the mel
definition, speaker list, speaker table) and to continue training exactly (optimizer, AMP
scaler, step, every RNG state incl. the batch sampler's). It is a plain dict saved with
``torch.save`` and read back with ``weights_only=True``: no code is unpickled.
"""

from __future__ import annotations

import datetime as _dt
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ClsvcError

FORMAT = "clsvc-checkpoint"
VERSION = 1


def rng_state(data_gen: torch.Generator | None = None) -> dict[str, Any]:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_gen is not None:
        state["data"] = data_gen.get_state()
    return state


def set_rng_state(state: dict[str, Any], data_gen: torch.Generator | None = None) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_gen is not None and "data" in state:
        data_gen.set_state(state["data"])


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tag and time) to ``path`` atomically: temp file, fsync,
    rename. A crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, format=FORMAT, version=VERSION,
                   saved_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; anything else is a ClsvcError."""
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
