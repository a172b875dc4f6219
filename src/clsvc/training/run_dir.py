"""The run folder: checks before it exists, its lock, what a killed run left in it, and the one
line for a checkpoint that could not be written.

A run folder holds ``config.yaml``, ``checkpoints/last.pt``, ``log.jsonl``, ``tb/`` and ``.lock``.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import IO, Any

from ..errors import ClsvcError
from ..files import atomic_write_text

LAST = "last.pt"
LOG = "log.jsonl"
CONFIG = "config.yaml"
LOCK = ".lock"  # flock()ed by the live trainer of a run folder


def check_run_dir(run: Path, resume: bool) -> None:
    """What can be refused about the run folder without writing anything."""
    last = run / "checkpoints" / LAST
    if run.exists() and not run.is_dir():
        raise ClsvcError(f"{run}: is a file, not a folder; choose another --out")
    if not resume and last.exists():
        raise ClsvcError(
            f"{run}: already holds a trained run ({last}); pass --resume to continue it or "
            "choose another --out"
        )
    if resume and not last.exists():
        raise ClsvcError(f"{run}: nothing to resume (no checkpoints/{LAST}); drop --resume to start")
    parent = run
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir() and not os.access(parent, os.W_OK | os.X_OK):
        what = "folder is not writable" if parent == run else f"cannot create the run folder ({parent} is not writable)"
        raise ClsvcError(f"{run}: {what}; choose another --out")


def lock_run(run: Path) -> IO[str]:
    """Hold ``run/.lock`` (an exclusive ``flock``) until the returned file is closed or the
    process ends; a ClsvcError when another live process holds it. File systems without
    locks (or a platform without ``fcntl``) get the file unlocked."""
    try:
        f = (run / LOCK).open("a+")
    except OSError as e:
        raise ClsvcError(f"{run}: cannot write in the run folder ({e.strerror}); choose a writable --out") from None
    try:
        import fcntl
    except ImportError:
        return f
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        pid = f" (process {holder})" if holder.isdigit() else ""
        raise ClsvcError(
            f"{run}: another trainer is running on this run folder{pid}; wait for it to finish or "
            "stop it (Ctrl-C / kill) before --resume, or choose another --out"
        ) from None
    except OSError:  # no locks on this file system (ENOLCK, EOPNOTSUPP): go on unlocked
        return f
    f.truncate(0)
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def make_run_dir(run: Path) -> None:
    try:
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{run}: cannot create the run folder ({e.strerror}); choose a writable --out") from None
    probe = run / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        raise ClsvcError(f"{run}: folder is not writable; choose another --out") from None


def remove_orphans(run: Path) -> list[Path]:
    """Delete the temporary files that writes killed part-way left in ``run`` (checkpoints,
    config, log); returns them. Only safe while holding the run's lock."""
    found = [*(run / "checkpoints").glob(".*.tmp*"), *run.glob(".*.tmp*"), *run.glob(f".{CONFIG}.*"),
             run / ".write-test"]
    removed = []
    for p in dict.fromkeys(found):
        if p.is_file() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def read_rows(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(line, row)`` of each whole JSON object line of ``path`` (a line cut short by a kill is skipped)."""
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int):
            rows.append((line, row))
    return rows


def trim_log(run: Path, step: int) -> int:
    """Keep the rows of ``run/log.jsonl`` up to ``step`` (the checkpoint a run resumes from): the
    rows a stopped or killed run wrote after it are done again by the resumed run. Rewritten
    atomically; returns the step of the last validation row kept (-1: none)."""
    path = run / LOG
    if not path.is_file():
        return -1
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    keep = [(line, row) for line, row in read_rows(path) if row["step"] <= step]
    if len(keep) != len(lines):
        atomic_write_text(path, "".join(line + "\n" for line, _ in keep))
    return max((row["step"] for _, row in keep if row.get("kind") == "val"), default=-1)


def write_failure(run: Path, name: str, step: int, on_disk: int, e: BaseException) -> ClsvcError:
    """The one line for checkpoint ``name`` that could not be written (disk full, quota, ...)."""
    m = re.search(r"could not write \(([^)]*)\)", str(e))  # clsvc.files' own diagnosis
    if isinstance(e, OSError) and e.strerror:
        why = e.strerror
    elif m is not None:
        why = m.group(1)
    elif free_bytes(run) < 1 << 20:
        why = os.strerror(errno.ENOSPC)
    else:
        why = f"the file system refused the write: {(str(e).splitlines() or [type(e).__name__])[0][:80]}"
    then = (f"continue with --resume (checkpoints/{LAST} still holds step {on_disk})" if on_disk >= 0
            else "start again (no checkpoint was saved yet)")
    return ClsvcError(f"{run}: could not save checkpoints/{name} at step {step} ({why}); "
                      f"free space on that disk, then {then}")


def free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62


def is_write_failure(e: BaseException) -> bool:
    """A failure to write a checkpoint file: OSError, clsvc.files' one line, or torch's writer
    (a RuntimeError from its C++ zip writer, which hides the errno)."""
    if isinstance(e, (OSError, ClsvcError)):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("inline_container" in text or "PytorchStreamWriter" in text)
