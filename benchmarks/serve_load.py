#!/usr/bin/env python3
"""Load on ``clsvc serve``: N concurrent clients each POST the same real ~3 s clip to
``/v1/convert`` ``--requests-per-client`` times, one request after another, for each N in
``--clients``; what the server sustains and what it refuses.

Starts ``clsvc serve`` itself on a free loopback port (extra options with ``--serve-arg``, once
per token, e.g. ``--serve-arg=--workers --serve-arg=2``; its log goes to a temporary file, shown
if it fails to start) and stops it at the end, or measures a running server given with ``--url`` (then its
memory is not read, unless ``--server-pid`` names its process). One warm-up conversion first,
not counted. Clients start together (a barrier); the 503s that a full queue answers are counted,
not retried. Per concurrency level:

* throughput: successful conversions per second of wall time (first request sent to last answer
  received) and seconds of source audio converted per second of wall time;
* latency of the successful requests (s, request sent to whole answer read): p50 and p95;
* answers by status: 200, 503 (the documented "queue full"), and every other outcome (other
  statuses, connection errors, timeouts) counted and listed with the server's ``error`` text;
* the server's peak resident memory (MiB): ``VmHWM`` of ``/proc/PID/status``, summed over the
  server and its child processes, the peak reset before each level (``/proc/PID/clear_refs``)
  where the kernel allows it (else the peak since the server started; the JSON says which).

Writes ``--out`` (JSON; default ``benchmarks/results/serve_load.json``) and the Markdown table
next to it (``.md``) and prints the table. Traffic goes to loopback only; every loop is bounded
in count (clients x requests) and time (``--timeout`` per request, ``--level-timeout`` per level).

    OMP_NUM_THREADS=1 python benchmarks/serve_load.py --clients 1,2,4,8 --requests-per-client 4
    python benchmarks/serve_load.py --url http://127.0.0.1:8765 --clients 1,2 --requests-per-client 2 --out /tmp/sl.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import write_result

DEFAULT_CLIP = "ls1998_0008.flac"  # a shipped demo source clip (2.94 s, LibriSpeech, CC BY 4.0)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serve_load.json"


@dataclass
class Outcome:
    """One request: HTTP ``status`` (0 when no answer came: connection error or timeout), its
    ``latency`` in seconds, and for failures the words (the server's ``error`` or the exception)."""

    status: int
    latency: float
    error: str = ""


def source_clip(path: str | None) -> tuple[bytes, float, str]:
    """The clip every request sends, as 16-bit PCM WAV bytes (the form any client can send), its
    duration in seconds and its name: ``path``, or the shipped demo clip :data:`DEFAULT_CLIP`."""
    if path is None:
        data = resources.files("clsvc").joinpath(f"resources/demo/{DEFAULT_CLIP}").read_bytes()
        x, sr = sf.read(io.BytesIO(data), dtype="float32")
        name = DEFAULT_CLIP
    else:
        x, sr = sf.read(path, dtype="float32")
        name = Path(path).name
    buf = io.BytesIO()
    sf.write(buf, x, sr, format="WAV", subtype="PCM_16")
    return buf.getvalue(), len(x) / sr, name


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its Content-Type, with the standard library only."""
    boundary = uuid.uuid4().hex
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    for k, (filename, data, ctype) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{filename}"\r\n'
                     f"Content-Type: {ctype}\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def convert_once(url: str, body: bytes, ctype: str, timeout: float) -> Outcome:
    """POST one prepared conversion and read the whole answer; never raises."""
    req = urllib.request.Request(f"{url}/v1/convert", data=body, method="POST", headers={"Content-Type": ctype})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return Outcome(r.status, time.perf_counter() - t0)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            words = str(json.loads(raw).get("error", ""))
        except (ValueError, AttributeError):
            words = raw[:200].decode(errors="replace")
        return Outcome(e.code, time.perf_counter() - t0, words or str(e.reason))
    except (OSError, urllib.error.URLError) as e:  # refused, reset, timed out
        return Outcome(0, time.perf_counter() - t0, f"{type(e).__name__}: {e}")


def _descendants(pid: int) -> list[int]:
    """``pid`` and all its child processes (from /proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident memory (VmHWM) of ``pid`` and its children, summed, in MiB; None where /proc
    can't tell (not Linux, the process gone)."""
    total_kib, seen = 0, False
    for p in _descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total_kib += int(line.split()[1])
                    seen = True
        except OSError:
            pass
    return total_kib / 1024 if seen else None


def reset_peak_rss(pid: int) -> bool:
    """Reset the peak-RSS mark of ``pid`` and its children (write 5 to /proc/PID/clear_refs);
    False where the kernel or the permissions refuse."""
    ok = True
    for p in _descendants(pid):
        try:
            Path(f"/proc/{p}/clear_refs").write_text("5")
        except OSError:
            ok = False
    return ok


def run_level(url: str, clients: int, per_client: int, body: bytes, ctype: str, timeout: float,
              level_timeout: float) -> tuple[list[Outcome], float]:
    """``clients`` threads, started together, each sending ``per_client`` requests in turn; no
    new request starts after ``level_timeout`` s. Returns the outcomes and the wall time in s."""
    outcomes: list[Outcome] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients + 1)
    deadline: list[float] = []

    def client() -> None:
        barrier.wait()
        for _ in range(per_client):
            if time.perf_counter() > deadline[0]:
                break
            o = convert_once(url, body, ctype, timeout)
            with lock:
                outcomes.append(o)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    deadline.append(t0 + level_timeout)
    barrier.wait()
    for t in threads:
        t.join()
    return outcomes, time.perf_counter() - t0


def summarize(clients: int, outcomes: list[Outcome], wall: float, audio_s: float) -> dict[str, Any]:
    """One level's row: counts by status, throughput (per s of wall time) and latency (s)."""
    ok = [o.latency for o in outcomes if o.status == 200]
    other = [o for o in outcomes if o.status not in (200, 503)]
    errors: dict[str, int] = {}
    for o in other:
        key = f"{o.status or 'no answer'}: {o.error}"
        errors[key] = errors.get(key, 0) + 1
    return {
        "clients": clients, "requests": len(outcomes), "wall_s": wall,
        "ok": len(ok), "busy_503": sum(o.status == 503 for o in outcomes), "other": len(other),
        "other_errors": errors,
        "conversions_per_s": len(ok) / wall if wall > 0 else 0.0,
        "audio_s_per_s": len(ok) * audio_s / wall if wall > 0 else 0.0,
        "latency_p50_s": float(np.percentile(ok, 50)) if ok else None,
        "latency_p95_s": float(np.percentile(ok, 95)) if ok else None,
        "latency_max_s": max(ok) if ok else None,
    }


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "–" if x is None else format(x, spec)


def markdown(result: dict[str, Any]) -> list[str]:
    """The table (one row per concurrency level), then any unexpected failures in words."""
    rss_note = "peak per level" if result["rss_reset_per_level"] else "peak since start"
    lines = [f"# clsvc serve under load ({result['date']}; model {result['model']}, "
             f"clip {result['clip']} {result['clip_s']:.2f} s, speaker {result['speaker']})", "",
             ("Server: `clsvc serve " + " ".join(["--host 127.0.0.1 --port PORT", *result["serve_args"]]) + "`"
              if result["started_here"] else f"Server: {result['url']}") + ". "
             f"{result['requests_per_client']} requests per client, one after another; 503 = queue full "
             f"(not retried). Warm-up conversion (not counted): {result['warmup_s']:.2f} s. "
             f"OMP_NUM_THREADS={result['omp_num_threads']}; {result['machine']}; "
             f"beside: {result['beside'] or 'nothing'}.", "",
             f"| clients | requests | 200 | 503 | other | conversions/s | audio s/s | p50 s | p95 s | "
             f"server RSS MiB ({rss_note}) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["levels"]:
        lines.append(f"| {r['clients']} | {r['requests']} | {r['ok']} | {r['busy_503']} | {r['other']} | "
                     f"{r['conversions_per_s']:.3f} | {r['audio_s_per_s']:.2f} | {_fmt(r['latency_p50_s'])} | "
                     f"{_fmt(r['latency_p95_s'])} | {_fmt(r['peak_rss_mib'], '.0f')} |")
    failures = [(r["clients"], k, n) for r in result["levels"] for k, n in r["other_errors"].items()]
    if failures:
        lines += ["", "Unexpected failures (neither 200 nor 503):", ""]
        lines += [f"- {c} clients, {n}x {k}" for c, k, n in failures]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", help="a running server to measure (default: start `clsvc serve` here)")
    ap.add_argument("--server-pid", type=int, help="with --url: the server's process id, to read its memory")
    ap.add_argument("--serve-arg", action="append", default=[],
                    help="an extra token for `clsvc serve` when started here (repeat: --serve-arg=--workers "
                         "--serve-arg=2)")
    ap.add_argument("--clients", default="1,2,4,8", help="concurrency levels, comma-separated (default 1,2,4,8)")
    ap.add_argument("--requests-per-client", type=int, default=4)
    ap.add_argument("--clip", help=f"source audio (default: the shipped demo clip {DEFAULT_CLIP})")
    ap.add_argument("--speaker", default="slt", help="target voice (default slt)")
    ap.add_argument("--timeout", type=float, default=600.0, help="s to wait for one answer (default 600)")
    ap.add_argument("--level-timeout", type=float, default=1800.0,
                    help="s after which a level sends no new request (default 1800)")
    ap.add_argument("--start-timeout", type=float, default=300.0, help="s for the server to come up (default 300)")
    ap.add_argument("--beside", default="", help="what ran beside the measurement (recorded)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file (default %(default)s)")
    a = ap.parse_args()
    levels = [int(c) for c in a.clients.split(",") if c.strip()]
    if not levels or min(levels) < 1 or a.requests_per_client < 1:
        ap.error("--clients needs positive counts and --requests-per-client at least 1")

    body_wav, clip_s, clip_name = source_clip(a.clip)
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp, contextlib.ExitStack() as stack:
        if a.url:
            url, pid = a.url.rstrip("/"), a.server_pid
        else:
            from clsvc.serve.spawn import ServerFailed, spawned_server

            try:
                url, pid = stack.enter_context(spawned_server(a.serve_arg, Path(tmp) / "serve.log", a.start_timeout))
            except ServerFailed as e:
                raise SystemExit(str(e)) from None
        result = measure(a, levels, url, pid, body_wav, clip_s, clip_name)
    write_result(a.out, result, markdown(result))


def measure(a: argparse.Namespace, levels: list[int], url: str, pid: int | None, body_wav: bytes, clip_s: float,
            clip_name: str) -> dict[str, Any]:
    """The warm-up conversion, then every ``--clients`` level against the server at ``url``."""
    info = get_json(f"{url}/v1/speakers")
    if a.speaker not in info["speakers"]:
        raise SystemExit(f"speaker {a.speaker!r} not among the server's: {', '.join(info['speakers'])}")
    source = (f"{Path(clip_name).stem}.wav", body_wav, "audio/wav")
    body, ctype = multipart({"speaker": a.speaker}, {"source": source})
    warm = convert_once(url, body, ctype, a.timeout)
    if warm.status != 200:
        raise SystemExit(f"the warm-up conversion failed: {warm.status or 'no answer'} {warm.error}")
    result: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "url": url,
        "started_here": not a.url, "serve_args": a.serve_arg, "model": info["model"],
        "speaker": a.speaker, "clip": clip_name, "clip_s": clip_s,
        "requests_per_client": a.requests_per_client, "warmup_s": warm.latency,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "beside": a.beside,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "rss_reset_per_level": False, "levels": [],
    }
    for n in levels:
        reset = pid is not None and reset_peak_rss(pid)
        outcomes, wall = run_level(url, n, a.requests_per_client, body, ctype, a.timeout, a.level_timeout)
        row = summarize(n, outcomes, wall, clip_s)
        row["peak_rss_mib"] = peak_rss_mib(pid) if pid is not None else None
        row["rss_reset"] = reset
        result["levels"].append(row)
        print(f"{n} clients: {row['ok']} ok, {row['busy_503']} busy, {row['other']} other in {wall:.1f} s",
              file=sys.stderr)
    result["rss_reset_per_level"] = all(r["rss_reset"] for r in result["levels"])
    return result


if __name__ == "__main__":
    main()
