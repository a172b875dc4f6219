"""Speaker similarity with Resemblyzer's GE2E d-vectors (the paper's tool; weights ship with
the package, nothing is downloaded).

Waveforms are float32 arrays at 16 kHz (Resemblyzer's own rate); embeddings are unit 256-d
vectors, so similarity is a dot product (cosine) in [-1, 1].
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Sequence

import numpy as np

RESEMBLYZER_RATE = 16000
PAPER_THRESHOLD = 0.84  # the paper's acceptance threshold for "same speaker" (Fig. 3)


@functools.lru_cache(maxsize=1)
def _encoder():
    import contextlib
    import io

    from resemblyzer import VoiceEncoder

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a load message
        return VoiceEncoder("cpu")


def embed_wav(wav: np.ndarray | str | Path, sample_rate: int = RESEMBLYZER_RATE) -> np.ndarray:
    """Unit d-vector (256,) of one utterance (path or waveform at ``sample_rate``)."""
    from resemblyzer import preprocess_wav

    if isinstance(wav, (str, Path)):
        from ..audio import load_wav
        from ..config import MelConfig

        wav, sample_rate = load_wav(wav, MelConfig()), MelConfig().sample_rate
    w = preprocess_wav(np.asarray(wav, dtype=np.float32), source_sr=sample_rate)
    if len(w) < RESEMBLYZER_RATE // 4:  # VAD removed nearly everything: fall back to raw audio
        w = np.asarray(wav, dtype=np.float32)
    return _encoder().embed_utterance(w)


def centroid(embeddings: Sequence[np.ndarray]) -> np.ndarray:
    """Unit mean of unit embeddings (a speaker's voice print)."""
    m = np.mean(np.stack(embeddings), axis=0)
    return m / max(np.linalg.norm(m), 1e-8)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))
