#!/usr/bin/env python3
"""Speed on this machine: training steps of ClsVC vs the in-project AutoVC, and wav -> wav
conversion of 10 s of speech with a shipped (or any) model and vocoder.

Training: each config (``--train-config``; default ``autovc`` = AutoVC at its width, ``paper`` =
ClsVC at the paper's width on AutoVC-sized layers, ``paper-lean`` = the same on narrower layers)
is built with ``model.n_speakers = 100`` and stepped through the trainer's own ``train_step``
(every phase, forward + backward + Adam) on random batches of ``--batch`` x ``--frames`` mel
frames. The configs take turns (one step of each per round, after ``--warmup`` rounds), so a
load that varies during the run hits them alike; the median seconds per step is reported, and
each config's ratio to the first one.

Conversion: ``clsvc.load(CHECKPOINT, vocoder=VOCODER)`` once, then ``--repeats`` conversions of
10 s of speech (a shipped demo clip looped to 10 s, or ``--wav``) to the model's first speaker:
read + mel + encode + decode + vocoder; RTF = seconds / 10 s (median over the repeats, after one
warm-up call).

Writes ``--out`` (JSON) and the Markdown table next to it (``.md``) and prints the table.

    python benchmarks/speed.py --threads 2 --out results/speed.json
    python benchmarks/speed.py --convert arctic --vocoder griffin-lim --threads 2 --out /tmp/speed.json
    python benchmarks/speed.py --device cuda --train-config real-gpu --out /tmp/speed-gpu.json

On a GPU (``--device cuda``) the networks and each step's batch are on it, a step runs under the
trainer's autocast (bf16 where the GPU has it, when the config's ``train.amp`` is on) and is
timed from a synchronised start to a synchronised end. ``benchmarks/device_check.sh`` runs this
and the test suite on a lent GPU machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from clsvc.config import load_config
from clsvc.data.dataset import Batch
from clsvc.models import build_system, system_class
from clsvc.training.loop import amp_dtype, train_step
from clsvc.training.state import TrainState, build_optimizers

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import write_result

# The comparison: ClsVC's step against AutoVC's (first, so the ratios are to it).
TRAIN_CONFIGS = ("autovc", "paper", "paper-lean")
CPU = torch.device("cpu")


def _state(config: str, seed: int, device: torch.device) -> TrainState:
    cfg = load_config(config, ["model.n_speakers=100"])
    torch.manual_seed(seed)
    model = build_system(cfg).to(device)
    voice = getattr(model, "voice", None)
    if hasattr(voice, "set_table"):  # AutoVC: random d-vectors stand in for the fitted table
        voice.set_table(torch.randn(100, 256, device=device))
    # A GradScaler where the trainer makes one (float16 autocast, on GPUs without bf16).
    scaler = torch.amp.GradScaler("cuda") if amp_dtype(cfg, device) == torch.float16 else None
    return TrainState(cfg=cfg, model=model, net=model, optimizers=build_optimizers(model, cfg), scaler=scaler,
                      data_gen=torch.Generator().manual_seed(seed), speakers=[str(i) for i in range(100)])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: a step ends when its last kernel does
        torch.cuda.synchronize(device)


def train_speed(configs: list[str], batch: int, frames: int, rounds: int, warmup: int,
                device: torch.device = CPU) -> list[dict]:
    """Median seconds per training step of each config, stepped in turns (on CUDA with each
    config's ``train.amp``, as the trainer runs it)."""
    states = [_state(c, i, device) for i, c in enumerate(configs)]
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(batch, frames, 80, generator=g)
    speaker = torch.randint(0, 100, (batch,), generator=g)
    # What a system needs beyond the mels (its batch_inputs): random pitch features (z-scored
    # log F0, voiced flag) or waveforms of the crops' length; the cost of a step does not
    # depend on the values.
    f0 = torch.cat([torch.randn(batch, frames, 1, generator=g), torch.ones(batch, frames, 1)], dim=-1)
    times: list[list[float]] = [[] for _ in configs]
    batches = []
    for st in states:
        inputs = system_class(st.cfg.model.system).batch_inputs(st.cfg)
        hop = st.cfg.mel.hop_length
        wav = torch.rand(batch, frames * hop, generator=g) * 2 - 1 if "wav" in inputs else None
        batches.append(Batch(mel, torch.full((batch,), frames), speaker, wav=wav,
                             f0=f0 if "f0" in inputs else None))
    for r in range(warmup + rounds):
        for i, st in enumerate(states):
            _sync(device)
            t0 = time.perf_counter()
            train_step(st, batches[i], device)
            _sync(device)
            if r >= warmup:
                times[i].append(time.perf_counter() - t0)
    base = statistics.median(times[0])
    rows = []
    for c, st, t in zip(configs, states, times, strict=True):
        med = statistics.median(t)
        rows.append({"config": c, "system": st.cfg.model.system,
                     "weights": sum(p.numel() for p in st.model.parameters()),
                     "amp": {None: "", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype(st.cfg, device)],
                     "s_per_step": med, "min": min(t), "max": max(t), "n": len(t), "ratio": med / base})
    return rows


def convert_speed(checkpoint: str, vocoder: str, wav: str | None, repeats: int, gv_max: float | None = None,
                  device: torch.device = CPU) -> dict:
    """RTF of wav -> wav conversion of 10 s of speech (``gv_max``: the converter's global-variance
    compensation; None = the model's) with the networks on ``device``."""
    import soundfile as sf

    import clsvc
    from clsvc.audio import load_wav, save_wav

    conv = clsvc.load(checkpoint, device=device, vocoder=vocoder, gv_max=gv_max)
    sr = conv.cfg.mel.sample_rate
    if wav is None:
        from importlib import resources

        clips = sorted(p for p in resources.files("clsvc").joinpath("resources/demo").iterdir()
                       if p.name.endswith(".flac"))
        if not clips:
            raise SystemExit("no shipped demo clips; pass --wav")
        src = str(clips[0])
    else:
        src = wav
    x = load_wav(src, conv.cfg.mel)
    x = np.tile(x, int(np.ceil(10 * sr / len(x))))[: 10 * sr]
    speaker = conv.speakers[0]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ten_s.wav"
        save_wav(path, x, sr)
        out = Path(tmp) / "out.wav"
        times = []
        for i in range(repeats + 1):  # the first call warms up
            t0 = time.perf_counter()
            save_wav(out, conv.convert(path, target_speaker=speaker), sr)
            if i:
                times.append(time.perf_counter() - t0)
        n = len(sf.read(out)[0]) / sr
    med = statistics.median(times)
    return {"checkpoint": checkpoint, "vocoder": vocoder, "gv_max": conv.gv_max, "source": Path(src).name,
            "audio_s": n, "s": med, "rtf": med / 10.0, "repeats": repeats}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train-config", action="append",
                    help="configs to time (default: autovc, paper, paper-lean; ratios are to the first)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--convert", action="append", default=[], help="checkpoint (path or shipped name) to time")
    ap.add_argument("--vocoder", action="append", default=[], help="vocoders (default griffin-lim)")
    ap.add_argument("--wav", help="source speech (default: a shipped demo clip), looped to 10 s")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--gv-max", type=float,
                    help="global-variance compensation of the conversions (default: the model's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ... (auto: cuda when there is one)")
    ap.add_argument("--beside", default="", help="what ran beside the measurement (recorded)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from clsvc.devices import pick_device

    device = pick_device(a.device)
    where = f"{device}: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "cpu"
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "threads": a.threads,
                    "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads", "device": where,
                    "beside": a.beside,
                    "torch": torch.__version__}
    lines = [f"# Speed ({result['date']}, {where}, {a.threads} threads; beside: {a.beside or 'nothing'})", ""]
    if not a.no_train:
        rows = train_speed(a.train_config or list(TRAIN_CONFIGS), a.batch, a.frames, a.rounds, a.warmup, device)
        result["train"] = {"batch": a.batch, "frames": a.frames, "rows": rows}
        lines += [f"Training step, B{a.batch} x T{a.frames}, median of {a.rounds} (configs in turns):", "",
                  "| config | system | weights | AMP | s/step | min–max | ratio to first |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['config']} | {r['system']} | {r['weights'] / 1e6:.2f}M | {r['amp'] or '–'} | "
                  f"{r['s_per_step']:.4f} | "
                  f"{r['min']:.4f}–{r['max']:.4f} | {r['ratio']:.2f} |" for r in rows]
        lines.append("")
    conv_rows = [convert_speed(c, v, a.wav, a.repeats, a.gv_max, device) for c in a.convert
                 for v in (a.vocoder or ["griffin-lim"])]
    if conv_rows:
        result["convert"] = conv_rows
        lines += ["wav -> wav conversion of 10 s (read, mel, convert, vocode, write):", "",
                  "| checkpoint | vocoder | gv_max | s | RTF |", "|---|---|---|---|---|"]
        lines += [f"| {r['checkpoint']} | {r['vocoder']} | {r['gv_max']:g} | {r['s']:.3f} | {r['rtf']:.4f} |"
                  for r in conv_rows]
    write_result(Path(a.out), result, lines)


if __name__ == "__main__":
    main()
