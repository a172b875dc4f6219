"""Vocoders turn normalised log-mels (frames, n_mels) back into 16 kHz waveforms.

Griffin-Lim is the default (no weights, the exact inverse of :mod:`clsvc.audio`'s mel). A
vocoder is any callable ``mel -> wav``; :func:`get_vocoder` builds one by name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..config import MelConfig
from ..errors import ClsvcError
from .griffin_lim import GriffinLim

Vocoder = Callable[[np.ndarray], np.ndarray]


def get_vocoder(name: str, cfg: MelConfig) -> Vocoder:
    """A callable mel (frames, n_mels) -> waveform for a vocoder name (``griffin-lim``)."""
    if name in ("griffin-lim", "griffinlim", "gl"):
        return GriffinLim(cfg)
    raise ClsvcError(f"vocoder {name!r} is not available; use griffin-lim")


__all__ = ["GriffinLim", "Vocoder", "get_vocoder"]
