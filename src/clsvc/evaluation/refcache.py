"""What an evaluation measures against that depends only on the real recordings: each speaker's
Resemblyzer centroid and pitch level, kept between evaluations of the same corpus.

Scoring them is about half of a short evaluation of the real-speech bench (264 speakers, ~1.6 s
each on 2 cores) and gives the same numbers for every model, so ``clsvc evaluate`` keeps them in
``DATA/eval-cache.npz`` beside the features. An entry is keyed by what it was computed from: the
kind, the sample rate, the Resemblyzer version and each utterance's resolved path, size and
modification time — a re-recorded, moved or replaced file gives a new key, so a stale entry is
never read. A cache that cannot be read is ignored; one that cannot be written (a read-only
corpus) only costs the time.
"""

from __future__ import annotations

import functools
import hashlib
import io
import sys
import zipfile
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

import numpy as np

from ..data.manifest import Entry
from ..errors import ClsvcError

#: The cache's file name inside the features folder.
FILE_NAME = "eval-cache.npz"

#: Bump when what is stored under a key changes meaning.
VERSION = 1


@functools.cache
def _resemblyzer_version() -> str:
    try:
        return metadata.version("resemblyzer")
    except metadata.PackageNotFoundError:
        return "none"


class ReferenceCache:
    """Arrays by key, loaded from and saved to ``path`` (None: an in-memory cache only)."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path is not None else None
        self.arrays: dict[str, np.ndarray] = {}
        self._dirty = False
        self._warned = False
        if self.path is not None and self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as z:
                    self.arrays = {k: np.array(z[k]) for k in z.files}
            except (OSError, ValueError, EOFError, zipfile.BadZipFile):
                self.arrays = {}  # unreadable (e.g. cut short by a crash before atomic saves): start over

    @staticmethod
    def key(kind: str, utterances: Sequence[Entry], sample_rate: int) -> str | None:
        """The key of a value of ``kind`` computed from ``utterances`` at ``sample_rate`` Hz; None
        when a file cannot be stat'ed (then nothing is cached and scoring reports the file)."""
        parts = [kind, f"v{VERSION}", str(sample_rate), _resemblyzer_version()]
        for e in utterances:
            p = Path(e.source)
            try:
                st = p.stat()
            except OSError:
                return None
            parts.append(f"{p.resolve()}\t{st.st_size}\t{st.st_mtime_ns}")
        return f"{kind}-{hashlib.sha256(chr(10).join(parts).encode()).hexdigest()[:32]}"

    def get(self, key: str | None) -> np.ndarray | None:
        return self.arrays.get(key) if key is not None else None

    def put(self, key: str | None, value: np.ndarray) -> None:
        if key is not None:
            self.arrays[key] = np.asarray(value)
            self._dirty = True

    def save(self) -> None:
        """Write the cache atomically if anything was added; a failure is one warning line."""
        from ..files import atomic_write_bytes

        if self.path is None or not self._dirty:
            return
        buf = io.BytesIO()
        np.savez(buf, **self.arrays)  # type: ignore[arg-type]  # numpy stubs read the keywords as allow_pickle
        try:
            atomic_write_bytes(self.path, buf.getvalue())
            self._dirty = False
        except (ClsvcError, OSError) as e:
            if not self._warned:
                print(f"warning: could not keep the reference scores in {self.path} ({e}); "
                      "the next evaluation scores them again", file=sys.stderr)
                self._warned = True
