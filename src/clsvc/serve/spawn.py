"""``clsvc serve`` in a child process, for benchmarks, browser tests and notebooks.

:func:`spawned_server` starts ``python -m clsvc serve`` on a free loopback port, waits until
``/healthz`` answers ``ok`` (the model is loaded), yields the base URL and stops the process on
exit (SIGTERM, then SIGKILL after 15 s). Only the standard library is used here.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from ..errors import ClsvcError

STOP_GRACE_S = 15.0  # seconds between SIGTERM and SIGKILL


class ServerFailed(ClsvcError):
    """The server exited or did not answer ``/healthz`` in time; the message holds its output."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
            return bool(json.load(r).get("status") == "ok")
    except (OSError, ValueError):
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextmanager
def spawned_server(args: Sequence[str] = (), log: Path | None = None, start_timeout: float = 180.0,
                   env: Mapping[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """Run ``clsvc serve --host 127.0.0.1 --port FREE *args`` until the block ends; yields
    ``(base URL, pid)`` once it is healthy. Its output (one access line per request) goes to
    ``log`` (discarded when None). Raises :class:`ServerFailed` with that output when it exits
    or is not healthy within ``start_timeout`` seconds."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "clsvc", "serve", "--host", "127.0.0.1", "--port", str(port), *args]

    def output() -> str:
        return log.read_text(errors="replace") if log is not None else "(no log kept)"

    sink: Any = open(log, "wb") if log is not None else nullcontext(subprocess.DEVNULL)
    with sink as out:  # the child keeps its own descriptor of the log
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                env=dict(env) if env is not None else None)
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(url):
            if proc.poll() is not None:
                raise ServerFailed(f"clsvc serve exited with status {proc.returncode}:\n{output()}")
            if time.monotonic() > deadline:
                raise ServerFailed(f"clsvc serve did not answer {url}/healthz within {start_timeout:.0f} s:\n"
                                   f"{output()}")
            time.sleep(0.5)
        yield url, proc.pid
    finally:
        _stop(proc)
