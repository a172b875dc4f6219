"""Resemblyzer's GE2E speaker encoder (d-vectors), the one wrapper used by data, models,
inference and evaluation.

Waveforms are float32 arrays at 16 kHz (Resemblyzer's own rate); d-vectors are unit 256-d
vectors, so similarity is a dot product (cosine) in [-1, 1]. The weights ship inside the
``resemblyzer`` package: nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ClsvcError
from .files import atomic_path

RATE = 16000  # Hz: Resemblyzer's sample rate
DIM = 256  # d-vector size


@functools.lru_cache(maxsize=1)
def _encoder() -> Any:
    from resemblyzer import VoiceEncoder

    with contextlib.redirect_stdout(io.StringIO()):  # it prints a load message
        return VoiceEncoder("cpu")


def embed_wav(wav: np.ndarray | str | Path, sample_rate: int = RATE) -> np.ndarray:
    """Unit d-vector (256,) of one utterance: a path, or a waveform at ``sample_rate`` Hz.

    Files are read with :func:`clsvc.audio.load_wav`, arrays validated with
    :func:`clsvc.audio.check_waveform` (non-finite samples are an error, a peak above 1.0 is
    normalised); a d-vector that still comes out non-finite is a ClsvcError, never returned.
    """
    from resemblyzer import preprocess_wav

    from .audio import check_waveform

    if isinstance(wav, (str, Path)):
        from .audio import load_wav
        from .config import MelConfig

        name = str(wav)
        wav, sample_rate = load_wav(wav, MelConfig()), MelConfig().sample_rate
    else:
        name = "the given waveform"
        wav = check_waveform(wav, sample_rate, name)
    w = preprocess_wav(wav, source_sr=sample_rate)
    if len(w) < RATE // 4:  # its VAD removed nearly everything: fall back to the raw audio
        w = wav
    emb = np.asarray(_encoder().embed_utterance(w), dtype=np.float32)
    if not np.all(np.isfinite(emb)):
        raise ClsvcError(
            f"{name}: the speaker encoder gave a non-finite d-vector (silent or damaged audio); "
            "use a recording with speech"
        )
    return emb


class VectorCache(MutableMapping[str, np.ndarray]):
    """Per-utterance vectors that do not change with training (d-vectors), kept in an ``.npz``
    file keyed by utterance id, so re-runs and resumes compute them once.

    Read at construction; :meth:`save` writes it back atomically when something was added.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._data: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path) as z:
                    self._data = {k: z[k] for k in z.files}
            except (OSError, ValueError):
                raise ClsvcError(f"{self.path}: vector cache is damaged; delete it and it is rebuilt") from None

    def __getitem__(self, key: str) -> np.ndarray:
        return self._data[key]

    def __setitem__(self, key: str, value: np.ndarray) -> None:
        self._data[key] = np.asarray(value, dtype=np.float32)
        self._dirty = True

    def __delitem__(self, key: str) -> None:
        del self._data[key]
        self._dirty = True

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def save(self) -> None:
        """Write the file if anything was added since it was read."""
        if not self._dirty:
            return
        with atomic_path(self.path, suffix=".tmp.npz") as tmp:
            np.savez(tmp, **self._data)  # type: ignore[arg-type]  # numpy's stub types **kwds as bool
        self._dirty = False
