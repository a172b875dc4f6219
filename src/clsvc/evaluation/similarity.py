"""Speaker similarity on Resemblyzer d-vectors (the paper's tool, see :mod:`clsvc.dvector`):
centroids of a speaker's utterances and cosines between unit vectors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def centroid(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Unit mean (D,) of unit embeddings (N of shape (D,)): a speaker's voice print."""
    m = np.mean(np.stack(embeddings), axis=0)
    return m / max(float(np.linalg.norm(m)), 1e-8)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors of the same shape, in [-1, 1]."""
    return float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-8))
