"""What the audio scorers share: importing an optional scorer package with one clear error, and
checking a waveform argument."""

from __future__ import annotations

import importlib
from types import ModuleType

import numpy as np

from ..errors import ClsvcError

INSTALL = "pip install 'clsvc[eval]'"


def require(module: str, what: str) -> ModuleType:
    """Import ``module`` for scorer ``what``, or raise one ClsvcError that names the missing
    package and the fix."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        missing = e.name or module
        raise ClsvcError(
            f"{what} needs the optional package {missing!r} (imported by {module!r}), which is not "
            f"installed: {INSTALL}"
        ) from e


def mono(wav: np.ndarray, name: str, what: str) -> np.ndarray:
    """``wav`` as a finite, non-empty, contiguous 1-D float64 array (ValueError naming ``name``
    and the scorer ``what`` otherwise)."""
    x = np.ascontiguousarray(np.asarray(wav, dtype=np.float64).reshape(-1))
    if x.size == 0:
        raise ValueError(f"{what}: {name} is empty")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what}: {name} contains NaN or infinite samples")
    return x
