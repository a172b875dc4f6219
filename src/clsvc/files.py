"""Atomic file writes: the one way clsvc puts a file on disk.

Every output (wav, feature, manifest, checkpoint, cache, embeddings) is written to a temporary
file in the destination folder, flushed to disk and renamed over the destination. A process
killed at any point therefore leaves either the previous file or the new one, never half of
one; the temporary file is removed when the write fails.

* The published file gets the mode a plain ``open()`` would give it (``0o666`` less the
  process umask), not the ``0o600`` of a temporary file.
* ``exclusive=True`` publishes with a hard link instead of a rename: the destination is
  created only if nothing is there at that moment, so of two processes writing the same new
  file exactly one wins and the other gets a one-line "already exists" error.
* A write or publish that fails for lack of space or permission (ENOSPC, EDQUOT, EROFS,
  EACCES, ...) is one :class:`WriteError` (a :class:`~clsvc.errors.ClsvcError`) line naming
  the destination; the temporary file is always removed.
* A writer that opens its own temporary path (``save_wav``, ``save_checkpoint``) called on the
  temporary path of an enclosing :func:`atomic_path` writes straight into it: the enclosing
  block decides how (and whether) the file is published.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import ClsvcError

# errnos that mean "this location cannot take the file" (not a bug in the writer).
STORAGE_ERRNOS = frozenset(
    getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EACCES", "EPERM", "EFBIG", "EIO")
    if hasattr(errno, n)
)
# Free space below this after a failed write (by a writer that hides the errno, e.g. torch or
# libsndfile) is taken as "the disk is full".
_FULL_BYTES = 1 << 20
# link() not supported by the file system: fall back to an exclusive create + rename.
_NO_LINK_ERRNOS = frozenset(
    getattr(errno, n) for n in ("EPERM", "ENOTSUP", "EOPNOTSUPP", "EXDEV", "EMLINK", "ENOSYS") if hasattr(errno, n)
)



class WriteError(ClsvcError):
    """An output could not be written (full disk, quota, read-only or forbidden location).

    A :class:`ClsvcError` like any other, so the CLI prints it as one line; a subclass so that
    loops which skip bad *inputs* (``except ClsvcError``) can let it stop the run instead."""


# fsync() not supported by the file system (some FUSE and network mounts): publish anyway.
_NO_FSYNC_ERRNOS = frozenset(getattr(errno, n) for n in ("EINVAL", "ENOTSUP", "EOPNOTSUPP") if hasattr(errno, n))

_lock = threading.Lock()
_active: set[str] = set()  # temporary paths of the atomic_path blocks now open in this process


def current_umask() -> int:
    """The process umask, read without changing it where the kernel reports it (Linux >= 4.7),
    else by setting and restoring it under a lock."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _lock:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def write_error(path: Path, exc: BaseException, tmp: Path | None = None) -> WriteError | None:
    """The one-line error for ``exc`` raised while writing ``path`` (through temporary file
    ``tmp``), or None when ``exc`` is not a storage failure of that write (a bug, or an error
    about another file that the caller reports itself)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        ours = {os.path.abspath(p) for p in (path, tmp, path.parent) if p is not None}
        if os.path.abspath(os.fsdecode(exc.filename)) not in ours:
            return None
    reason: str | None = None
    if isinstance(exc, OSError) and exc.errno is not None and exc.errno in STORAGE_ERRNOS:
        reason = exc.strerror or os.strerror(exc.errno)
    elif isinstance(exc, (OSError, RuntimeError)):  # writers that hide the errno (torch, libsndfile)
        reason = _storage_state(path.parent)
    if reason is None:
        return None
    return WriteError(f"{path}: could not write ({reason}); free space or choose another location")


def _storage_state(folder: Path) -> str | None:
    """``"No space left on device"`` / ``"Read-only file system"`` when ``folder``'s file system
    is full or read-only now, else None."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    if st.f_flag & getattr(os, "ST_RDONLY", 1):
        return os.strerror(errno.EROFS)
    free = (st.f_bfree if os.geteuid() == 0 else st.f_bavail) * st.f_frsize
    return os.strerror(errno.ENOSPC) if free < _FULL_BYTES else None


def _publish(tmp: Path, path: Path, exclusive: bool) -> None:
    if not exclusive:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)  # fails with EEXIST if anything (even a dangling link) is at path
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in _NO_LINK_ERRNOS:
            raise
        # No hard links here: claim the name exclusively, then rename the finished file over it.
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                path.unlink()
            raise
    else:
        with contextlib.suppress(OSError):  # published; the caller's cleanup retries the unlink
            tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp", exclusive: bool = False,
                flag: str = "--force") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block ends without an error the file
    written there is fsynced, given the umask's mode and published as ``path``; otherwise it is
    deleted.

    ``suffix`` is the temporary name's ending, for writers that choose a format from it
    (``np.save`` appends ``.npy`` unless the name ends so; ``np.savez`` wants ``.npz``).
    ``exclusive``: publish only if ``path`` does not exist then (else a ClsvcError saying it
    already exists; ``flag`` names the option that allows overwriting). Storage failures
    (full disk, quota, read-only, permission) while writing or publishing are one ClsvcError
    line naming ``path``.
    """
    path = Path(path)
    key = os.path.abspath(path)
    with _lock:
        nested = key in _active
    if nested:  # a writer called on an enclosing block's temporary file: write straight into it
        yield path
        return
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise (write_error(path, e) or e) from None
    os.close(fd)
    tmp = Path(name)
    tmp_key = os.path.abspath(tmp)
    with _lock:
        _active.add(tmp_key)
    try:
        try:
            yield tmp
        finally:
            with _lock:
                _active.discard(tmp_key)
        with tmp.open("rb") as f:  # data on disk before the rename makes it visible
            try:
                os.fsync(f.fileno())
            except OSError as e:
                if e.errno not in _NO_FSYNC_ERRNOS:
                    raise
        with contextlib.suppress(OSError):  # best effort: some file systems have no modes
            os.chmod(tmp, 0o666 & ~current_umask())
        try:
            _publish(tmp, path, exclusive)
        except FileExistsError:
            raise ClsvcError(
                f"{path}: already exists (another process wrote it meanwhile); pass {flag} to overwrite it"
                " or choose another name"
            ) from None
    except ClsvcError:
        raise
    except Exception as e:
        err = write_error(path, e, tmp)
        if err is None:
            raise
        raise err from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str, exclusive: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: str | Path, data: bytes, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path, exclusive=exclusive) as tmp:
        tmp.write_bytes(data)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; when the block ends without an error it
    replaces ``path`` (an existing folder is swapped out, then removed), otherwise it is deleted.
    A process killed meanwhile leaves the old folder (or none) and a hidden ``.NAME.tmp-PID``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_utf8(path: str | Path, what: str, save_as: str = "UTF-8") -> str:
    """The text of ``path`` (UTF-8, a byte-order mark allowed); unreadable or not UTF-8 is one
    ClsvcError line naming ``what`` (the kind of file, e.g. "config") and the first bad byte's
    line; ``save_as`` names the format in the fix."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ClsvcError(f"{what} {path}: cannot be read ({e.strerror}); check the path and its permissions") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ClsvcError(
            f"{what} {path}: not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line}); save the file as {save_as}"
        ) from None
