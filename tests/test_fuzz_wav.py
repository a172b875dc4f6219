"""In-process WAV-header fuzzing of :func:`clsvc.audio.load_wav`.

A real 0.6 s WAV (16-bit PCM, and float32 with its ``fact``/``PEAK`` chunks) is written with
soundfile; a seeded loop then damages its header region (byte flips, field overwrites with 0 /
0xffffffff / 0x7fffffff / random values, truncations, chunk-size lies, and combinations) and loads
each variant. Every call must end in a clean :class:`ClsvcError` or a valid waveform (finite
float32, 1-D, in [-1, 1], of bounded length) -- never another exception, never a hang (the loop
runs in a thread under a deadline), never a large allocation (tracemalloc peak). Counts of the
outcomes are printed (``pytest -s``).
"""

from __future__ import annotations

import random
import re
import struct
import threading
import time
import tracemalloc
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clsvc.audio import AudioScaleWarning, load_wav
from clsvc.config import MelConfig
from clsvc.errors import ClsvcError

from helpers import SR, synth_utterance

CFG = MelConfig()
SEED = 20240601
N_MUTATIONS = 150  # per base file (two bases: 300 in all)
DEADLINE_S = 60.0  # the whole loop; it takes a few seconds
MAX_LEN = 10 * SR * 60  # 10 minutes at 16 kHz: far beyond anything a 20 KB file can hold
MAX_TRACED_BYTES = 256 << 20  # peak of Python/numpy allocations during one call
HEADER = 64  # bytes of the header region that byte flips target
# Little-endian 32-bit fields of the canonical 44-byte PCM header, and 16-bit ones.
FIELDS32 = [4, 16, 24, 28, 40]
FIELDS16 = [20, 22, 32, 34]
VALUES32 = [0, 1, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 44, 8, 16000, 768001, 999]
VALUES16 = [0, 1, 2, 3, 0xFFFF, 0x7FFF, 0xFFFE, 8, 24, 32, 64]


def _chunks(data: bytes) -> list[int]:
    """Offsets of the chunk-size fields of the RIFF sub-chunks (fmt, fact, PEAK, data, ...)."""
    out, pos = [], 12
    while pos + 8 <= len(data):
        out.append(pos + 4)
        size = struct.unpack_from("<I", data, pos + 4)[0]
        pos += 8 + size + (size & 1)
    return out


def _mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random damage (or a few combined) of ``data``'s header; returns (kind, bytes)."""
    buf = bytearray(data)
    sizes = _chunks(data)
    kinds = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choice(["flip", "field32", "field16", "chunk_size", "truncate", "tag"])
        kinds.append(kind)
        if kind == "flip":
            for _ in range(rng.randint(1, 4)):
                i = rng.randrange(min(HEADER, len(buf)) or 1)
                if i < len(buf):
                    buf[i] = rng.randrange(256) if rng.random() < 0.5 else buf[i] ^ (1 << rng.randrange(8))
        elif kind == "field32":
            off = rng.choice(FIELDS32 + [rng.randrange(0, HEADER - 4)])
            val = rng.choice(VALUES32 + [rng.getrandbits(32)])
            if off + 4 <= len(buf):
                buf[off:off + 4] = struct.pack("<I", val)
        elif kind == "field16":
            off = rng.choice(FIELDS16)
            val = rng.choice(VALUES16 + [rng.getrandbits(16)])
            if off + 2 <= len(buf):
                buf[off:off + 2] = struct.pack("<H", val)
        elif kind == "chunk_size":  # a sub-chunk (or the RIFF chunk) lies about its size
            off = rng.choice([4] + sizes)
            true = struct.unpack_from("<I", buf, off)[0] if off + 4 <= len(buf) else 0
            val = rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, true + rng.randint(-64, 64) & 0xFFFFFFFF,
                              true * 1000 & 0xFFFFFFFF, rng.getrandbits(32)])
            if off + 4 <= len(buf):
                buf[off:off + 4] = struct.pack("<I", val)
        elif kind == "truncate":
            cut = rng.choice([rng.randrange(0, 80), rng.randrange(0, len(buf) + 1)])
            del buf[cut:]
        else:  # "tag": damage a chunk id or the format tag to another known codec
            if rng.random() < 0.5 and sizes:
                off = rng.choice(sizes) - 4
                buf[off:off + 4] = rng.choice([b"data", b"fmt ", b"fact", b"LIST", b"\0\0\0\0", b"RIFX"])
            elif len(buf) >= 22:
                buf[20:22] = struct.pack("<H", rng.choice([1, 2, 3, 6, 7, 0x11, 0x31, 0x55, 0xFFFE, 0]))
    return "+".join(kinds), bytes(buf)


def _check_valid(wav: object, what: str) -> None:
    assert isinstance(wav, np.ndarray), what
    assert wav.dtype == np.float32 and wav.ndim == 1 and 0 < len(wav) < MAX_LEN, (what, wav.dtype, wav.shape)
    assert np.all(np.isfinite(wav)), what
    assert float(np.max(np.abs(wav))) <= 1.0, what


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("fuzz-base")
    wav = synth_utterance(150, 1.0, seed=11, seconds=0.6)
    out = {}
    for name, subtype in [("pcm16", "PCM_16"), ("float32", "FLOAT")]:
        p = root / f"{name}.wav"
        sf.write(p, wav, SR, subtype=subtype)
        out[name] = p.read_bytes()
        _check_valid(load_wav(p, CFG), name)  # the undamaged file loads
    return out


def test_wav_header_fuzz(bases, tmp_path):
    rng = random.Random(SEED)
    cases = [(name, *_mutate(data, rng)) for name, data in bases.items() for _ in range(N_MUTATIONS)]
    results: list[tuple[str, str, str]] = []  # (base, outcome, detail)
    failures: list[str] = []
    current: list[str] = [""]
    slowest = [0.0]

    def loop() -> None:
        tracemalloc.start()
        try:
            for i, (base, kind, data) in enumerate(cases):
                current[0] = f"case {i} ({base}, {kind})"
                p: Path = tmp_path / f"m{i:03d}.wav"
                p.write_bytes(data)
                tracemalloc.reset_peak()
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        wav = load_wav(p, CFG)
                    _check_valid(wav, current[0])
                    scaled = any(issubclass(w.category, AudioScaleWarning) for w in caught)
                    results.append((base, "valid", "normalised" if scaled else "as is"))
                except ClsvcError as e:
                    msg = str(e)
                    assert "\n" not in msg and str(p) in msg, (current[0], msg)
                    what = re.sub(r"\d+", "N", msg[len(str(p)) + 2:].split(" (")[0].split(";")[0])
                    results.append((base, "ClsvcError", what))
                except Exception as e:  # noqa: BLE001 - any other type is the failure being looked for
                    failures.append(f"{current[0]}: {type(e).__name__}: {e}")
                slowest[0] = max(slowest[0], time.perf_counter() - t0)
                peak = tracemalloc.get_traced_memory()[1]
                if peak > MAX_TRACED_BYTES:
                    failures.append(f"{current[0]}: allocated {peak / 2**20:.0f} MiB")
                p.unlink()
        finally:
            tracemalloc.stop()

    worker = threading.Thread(target=loop, daemon=True)
    start = time.perf_counter()
    worker.start()
    worker.join(DEADLINE_S)
    assert not worker.is_alive(), f"load_wav hung (or the loop overran {DEADLINE_S} s) at {current[0]}"
    took = time.perf_counter() - start
    assert not failures, "\n".join(failures[:20])
    assert len(results) == len(cases)

    counts = Counter((b, o) for b, o, _ in results)
    print(f"\nWAV header fuzz: {len(cases)} mutations (seed {SEED}) in {took:.1f} s, slowest call {slowest[0]:.3f} s")
    for base in bases:
        print(f"  {base}: valid {counts[(base, 'valid')]}, ClsvcError {counts[(base, 'ClsvcError')]}")
    print("  valid outputs:", dict(Counter(d for _, o, d in results if o == "valid")))
    print("  errors by message:")
    for msg, n in Counter(d for _, o, d in results if o == "ClsvcError").most_common():
        print(f"    {n:4d}  {msg}")
    # The fuzzing must reach both outcomes (else the mutations are too mild or too harsh to test much).
    assert counts[("pcm16", "valid")] + counts[("float32", "valid")] > 0
    assert counts[("pcm16", "ClsvcError")] + counts[("float32", "ClsvcError")] > 0
