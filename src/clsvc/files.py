"""Atomic file writes: the one way clsvc puts a file on disk.

Every output (wav, feature, manifest, checkpoint, cache, embeddings) is written to a temporary
file in the destination folder, flushed to disk and renamed over the destination. A process
killed at any point therefore leaves either the previous file or the new one, never half of
one; the temporary file is removed when the write fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error the file
    written there is fsynced and renamed to ``path``, otherwise it is deleted.

    ``suffix`` is the temporary name's ending, for writers that choose a format from it
    (``np.save`` appends ``.npy`` unless the name ends so; ``np.savez`` wants ``.npz``).
    """
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as f:  # data on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
