#!/usr/bin/env python3
"""Copy-synthesis benchmark of the vocoders: held-out real speech -> mel -> vocoder, scored against
the original recording.

Sets (read from the shared corpus, ``../shared/corpus``):

* ``arctic``: the held-out ARCTIC prompts ``arctic_b0490``-``arctic_b0539`` of bdl, slt and cathy
  (the first N per voice); speaker centroid from ``arctic_a0001``-``a0010`` of the voice.
* ``librispeech``: ``test-other-sample`` (10 speakers never trained on, the first N utterances
  each, sorted by name); speaker centroid from the speaker's other utterances not in the test
  list, or, when fewer than 3 are left (N >= 8), from all the speaker's other utterances
  (leave-one-out).

Each utterance is read with ``load_wav`` and trimmed like preprocessing does
(``trim_silence(wav, 40 dB)``); then ``mel = wav_to_mel(wav)`` and ``out = vocoder(mel)``. The
reference is the trimmed original cut/zero-padded to ``frames * hop`` samples, the output is cut or
padded to the same length. Per utterance:

* DNSMOS P.835 SIG / BAK / OVRL of the output (and, once, of the original: the ceiling);
* wide-band PESQ and STOI against the original;
* F0 error against the original: log-F0 RMSE (cents), log-F0 correlation, V/UV error;
* Resemblyzer cosine of the output to the speaker's centroid and the share accepted at
  ``ACCEPT_THRESHOLD`` (0.84); the original's own cosine is the ceiling;
* log-mel distance: mean |mel(output) - mel| of the [0, 1] features in dB (x100), and the
  feature MCD (:func:`clsvc.evaluation.mcd.feature_mcd`);
* speed: RTF = vocoding seconds / audio seconds, with ``--threads`` torch threads, after one
  warm-up call.

``--through CKPT`` (a VC checkpoint, an exported model or a shipped model's name): each vocoder
is fed, instead of ``mel``, the VC model's own reconstruction of it -- the utterance converted to
its own voice (the voice the model's voice part makes of the utterance itself; a model without
one-shot voices takes the speaker's row of its table, when the speaker is one of its training
speakers), clipped to [0, 1] and cut or padded (with silence) to the original frame count, as
``clsvc reconstruct`` makes the features a vocoder is fine-tuned on. Everything is still scored
against the original recording (the log-mel distance against the original ``mel``). This measures
whether a vocoder fine-tuned on a VC model's reconstructions (``clsvc reconstruct`` then
``clsvc train --init VOCODER``) turns that model's mels into better speech than the base vocoder.
The JSON gets a ``through`` record (the model, its step and weights' SHA-256, the reconstructions'
own log-mel distance to the original mels per set) and a ``through`` field in each row; the
Markdown a "through" title and column. The VC model runs on ``--device``; its mel definition must
be the benchmark's (``MelConfig()``).

Summary: means with 95% intervals per vocoder x set (acceptance: Wilson interval), plus the
"original recording" rows. Writes ``--out`` (JSON) and the Markdown table next to it (``.md``),
and prints the table.

    python benchmarks/vocoder.py --vocoder griffin-lim --vocoder runs/vocoder-cpu/checkpoints/last.pt \\
        --per-speaker 10 --out results/vocoder.json
    python benchmarks/vocoder.py --vocoder griffin-lim --per-speaker 3 --threads 1 --out /tmp/voc.json
    python benchmarks/vocoder.py --through runs/real-cpu-base/checkpoints/last.pt \\
        --vocoder runs/vocoder-cpu/checkpoints/last.pt --vocoder runs/vocoder-ft/checkpoints/last.pt \\
        --per-speaker 10 --out results/vocoder-through-real-cpu-base.json
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import markdown_path, write_result

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus"
SETS = ("arctic", "librispeech")
ARCTIC_VOICES = ("bdl", "slt", "cathy")
ARCTIC_TEST = tuple(f"arctic_b{i:04d}" for i in range(490, 540))
ARCTIC_REFS = tuple(f"arctic_a{i:04d}" for i in range(1, 11))
LIBRI_PART = Path("librispeech") / "test-other-sample"
TRIM_DB = 40.0  # preprocessing's default --trim-db
MIN_REFS = 3  # fewest held-apart utterances for a LibriSpeech centroid before leave-one-out
WARMUP_FRAMES = 256  # frames of the first utterance vocoded once before timing (about 4 s)

# (key, column header, digits, kind): kind "mean" -> mean_ci, "share" -> proportion_ci.
METRICS: tuple[tuple[str, str, int, str], ...] = (
    ("dnsmos_ovrl", "DNSMOS OVRL", 2, "mean"),
    ("dnsmos_sig", "SIG", 2, "mean"),
    ("dnsmos_bak", "BAK", 2, "mean"),
    ("pesq_wb", "PESQ-WB", 2, "mean"),
    ("stoi", "STOI", 3, "mean"),
    ("log_f0_rmse_cents", "log-F0 RMSE (cents)", 0, "mean"),
    ("f0_corr", "F0 corr", 3, "mean"),
    ("vuv_error", "V/UV err", 3, "mean"),
    ("cos", "cos to speaker", 3, "mean"),
    ("accepted", "accepted", 0, "share"),
    ("logmel_db", "log-mel dist (dB)", 2, "mean"),
    ("feature_mcd", "feature MCD (dB)", 2, "mean"),
    ("rtf", "RTF", 3, "mean"),
)
ORIGINAL_METRICS = ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "cos", "accepted")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the shared corpus folder (default %(default)s)")
    p.add_argument("--vocoder", action="append", default=None, metavar="NAME_OR_PATH",
                   help="griffin-lim or a vocoder checkpoint / exported file; repeat for several "
                        "(default: griffin-lim)")
    p.add_argument("--set", dest="sets", action="append", choices=SETS, default=None,
                   help="test set; repeat for several (default: both)")
    p.add_argument("--per-speaker", type=int, default=3, help="utterances per speaker (default %(default)s)")
    p.add_argument("--speakers", default=None,
                   help="comma-separated speakers to keep (e.g. bdl,1688); default: all of each set")
    p.add_argument("--threads", type=int, default=2, help="torch threads (also DNSMOS/BLAS threads; default 2)")
    p.add_argument("--f0-method", choices=("harvest", "dio"), default="harvest",
                   help="pyworld F0 tracker of the F0 error (default harvest; dio is about 3x faster)")
    p.add_argument("--device", default="cpu", help="torch device of neural vocoders and --through (default cpu)")
    p.add_argument("--through", default=None, metavar="CKPT",
                   help="feed the vocoders VC model CKPT's reconstructions (each utterance converted to its own "
                        "voice) instead of the mels: a checkpoint, an exported model or a shipped model's name")
    p.add_argument("--out", type=Path, default=Path("results/vocoder.json"),
                   help="JSON output; the Markdown table goes next to it (.md)")
    args = p.parse_args(argv)
    if args.per_speaker < 1:
        p.error("--per-speaker must be >= 1")
    if args.threads < 1:
        p.error("--threads must be >= 1")
    args.vocoder = args.vocoder or ["griffin-lim"]
    args.sets = list(dict.fromkeys(args.sets or SETS))
    return args


# ----------------------------------------------------------------------------------------------
# utterances


@dataclass
class Utt:
    """One test utterance: trimmed original ``ref`` (frames * hop samples) and its ``mel``."""

    set: str
    speaker: str
    utt_id: str
    path: Path
    refs: list[Path]  # utterances whose d-vectors make the speaker centroid
    ref: np.ndarray = field(repr=False)
    mel: np.ndarray = field(repr=False)

    @property
    def seconds(self) -> float:
        return len(self.ref) / 16000.0


def check_corpus(corpus: Path, sets: list[str]) -> str | None:
    """None when every folder the sets need exists, else the one-line complaint."""
    need = [corpus / "arctic" / v for v in ARCTIC_VOICES] if "arctic" in sets else []
    if "librispeech" in sets:
        need.append(corpus / LIBRI_PART)
    missing = [p for p in need if not p.is_dir()]
    if missing:
        return (f"error: corpus folder {missing[0]} not found ({len(missing)} of the {len(need)} folders these sets "
                f"need are missing); pass --corpus PATH of the shared corpus (see ../shared/corpus/README.md)")
    return None


def select(corpus: Path, sets: list[str], per_speaker: int, speakers: set[str] | None) -> list[tuple]:
    """``(set, speaker, path, ref paths, centroid mode)`` of every test utterance."""
    jobs = []
    if "arctic" in sets:
        for v in ARCTIC_VOICES:
            if speakers and v not in speakers:
                continue
            refs = [corpus / "arctic" / v / f"{u}.flac" for u in ARCTIC_REFS]
            for u in ARCTIC_TEST[:per_speaker]:
                jobs.append(("arctic", v, corpus / "arctic" / v / f"{u}.flac", refs, "arctic_a0001-a0010"))
    if "librispeech" in sets:
        root = corpus / LIBRI_PART
        for spk in sorted((p.name for p in root.iterdir() if p.is_dir()), key=lambda s: (len(s), s)):
            if speakers and spk not in speakers:
                continue
            files = sorted(root.joinpath(spk).glob("*.flac"))
            test, rest = files[:per_speaker], files[per_speaker:]
            for f in test:
                if len(rest) >= MIN_REFS:
                    jobs.append(("librispeech", spk, f, rest, "other utterances"))
                else:
                    jobs.append(("librispeech", spk, f, [g for g in files if g != f], "leave-one-out"))
    return jobs


def load_utterances(jobs: list[tuple], cfg: Any) -> list[Utt]:
    from clsvc.audio import load_wav, trim_silence, wav_to_mel

    out = []
    for set_, spk, path, refs, _ in jobs:
        wav = trim_silence(load_wav(path, cfg), TRIM_DB, cfg)
        mel = wav_to_mel(wav, cfg)
        out.append(Utt(set_, spk, path.stem, path, refs, fit(wav, len(mel) * cfg.hop_length), mel))
    return out


def fit(wav: np.ndarray, n: int) -> np.ndarray:
    """``wav`` cut or zero-padded to ``n`` samples (float32)."""
    out = np.zeros(n, dtype=np.float32)
    k = min(n, len(wav))
    out[:k] = wav[:k]
    return out


# ----------------------------------------------------------------------------------------------
# scoring


class Embeddings:
    """Resemblyzer d-vectors of trimmed corpus files, each computed once."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self._cache: dict[Path, np.ndarray] = {}

    def of_file(self, path: Path) -> np.ndarray:
        from clsvc.audio import load_wav, trim_silence
        from clsvc.dvector import embed_wav

        if path not in self._cache:
            self._cache[path] = embed_wav(trim_silence(load_wav(path, self.cfg), TRIM_DB, self.cfg), 16000)
        return self._cache[path]

    def centroid(self, paths: list[Path]) -> np.ndarray:
        from clsvc.evaluation.similarity import centroid

        return centroid([self.of_file(p) for p in paths])


def limit_threads(n: int) -> Any:
    """torch, BLAS/OpenMP (threadpoolctl, when installed) and DNSMOS's ONNX sessions to ``n``
    threads; returns the threadpoolctl limiter (``restore_original_limits()`` undoes it) or None."""
    import torch

    torch.set_num_threads(n)
    try:  # speechmos builds its sessions with onnxruntime's default (all cores): build them here
        import onnxruntime as ort
        import speechmos.dnsmos as sd

        base = os.path.dirname(os.path.abspath(sd.__file__))
        primary = os.path.join(base, "dnsmos_models", "sig_bak_ovr.onnx")
        current = getattr(sd, "dnsmos", None)
        if current is None or getattr(current, "_clsvc_threads", None) != n:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = n
            opts.inter_op_num_threads = 1
            model = sd.DNSMOS.__new__(sd.DNSMOS)
            model.primary_model_path = primary
            model.onnx_sess = ort.InferenceSession(primary, opts)
            model.p808_onnx_sess = ort.InferenceSession(os.path.join(base, "dnsmos_models", "model_v8.onnx"), opts)
            model._clsvc_threads = n
            sd.dnsmos = model
    except Exception:  # another speechmos layout: its own sessions (default threads) then
        pass
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(n)
    except ImportError:
        return None


def score_output(u: Utt, out: np.ndarray, cent: np.ndarray, cfg: Any, f0_method: str = "harvest") -> dict[str, Any]:
    """Every quality figure of one vocoded utterance against its original."""
    from clsvc.audio import wav_to_mel
    from clsvc.config import ACCEPT_THRESHOLD
    from clsvc.dvector import embed_wav
    from clsvc.evaluation.mcd import feature_mcd
    from clsvc.evaluation.pitch import f0_error
    from clsvc.evaluation.quality import dnsmos, pesq_wb, stoi
    from clsvc.evaluation.similarity import cosine

    sr = cfg.sample_rate
    row: dict[str, Any] = {}
    d = dnsmos(out, sr)
    row.update(dnsmos_sig=d["sig"], dnsmos_bak=d["bak"], dnsmos_ovrl=d["ovrl"], dnsmos_p808=d["p808"])
    row["pesq_wb"] = pesq_wb(u.ref, out, sr)
    row["stoi"] = stoi(u.ref, out, sr)
    f0 = f0_error(u.ref, out, sr, method=f0_method)
    row.update({k: f0[k] for k in ("log_f0_rmse_cents", "log_f0_mean_cents", "f0_corr", "vuv_error",
                                   "voiced_pairs")})
    row["cos"] = cosine(embed_wav(out, sr), cent)
    row["accepted"] = bool(row["cos"] >= ACCEPT_THRESHOLD)
    mel_out = wav_to_mel(out, cfg)[: len(u.mel)]
    row["logmel_db"] = logmel_db(mel_out, u.mel, cfg)
    row["feature_mcd"] = feature_mcd(u.mel, mel_out, cfg)
    return row


def logmel_db(mel: np.ndarray, ref: np.ndarray, cfg: Any) -> float:
    """Mean |mel - ref| of two [0, 1] mels (frames, n_mels) over their common frames, in dB
    (x ``-cfg.min_level_db``, i.e. x100)."""
    n = min(len(mel), len(ref))
    return float(np.mean(np.abs(mel[:n] - ref[:n])) * -cfg.min_level_db)


def score_original(u: Utt, emb: Embeddings, cent: np.ndarray) -> dict[str, Any]:
    from clsvc.config import ACCEPT_THRESHOLD
    from clsvc.evaluation.quality import dnsmos
    from clsvc.evaluation.similarity import cosine

    d = dnsmos(u.ref, 16000)
    cos = cosine(emb.of_file(u.path), cent)
    return {"dnsmos_sig": d["sig"], "dnsmos_bak": d["bak"], "dnsmos_ovrl": d["ovrl"], "dnsmos_p808": d["p808"],
            "cos": cos, "accepted": bool(cos >= ACCEPT_THRESHOLD)}


def summarise(rows: list[dict], keys: tuple[str, ...] | None = None) -> dict[str, dict]:
    from clsvc.evaluation.stats import mean_ci, proportion_ci

    out = {}
    for key, _, _, kind in METRICS:
        if keys is not None and key not in keys:
            continue
        values = [r.get(key) for r in rows]
        out[key] = (proportion_ci if kind == "share" else mean_ci)(values).to_dict()
    return out


# ----------------------------------------------------------------------------------------------
# vocoders


def load_vocoders(specs: list[str], cfg: Any, device: str) -> list[tuple[str, dict, Callable]]:
    """``(display name, info, callable)`` per ``--vocoder``; names are griffin-lim or
    ``FILE (step S)``, made unique when two files share a name."""
    from clsvc.vocoder import GRIFFIN_LIM, get_vocoder

    out: list[tuple[str, dict, Callable]] = []
    for spec in specs:
        voc = get_vocoder(spec, cfg, device)
        if spec in GRIFFIN_LIM:
            name, info = "griffin-lim", {"kind": "griffin-lim", "iterations": cfg.griffin_lim_iters}
        else:
            step = int(getattr(voc, "step", 0))
            name = f"{Path(spec).name} (step {step})"
            info = {"kind": "neural", "path": str(Path(spec).resolve()), "step": step}
        base, i = name, 2
        while any(n == name for n, _, _ in out):
            name, i = f"{base} #{i}", i + 1
        out.append((name, info, voc))
    return out


# ----------------------------------------------------------------------------------------------
# the VC model of --through


def load_through(spec: str, cfg: Any, device: str) -> tuple[Any, dict[str, Any]]:
    """The :class:`clsvc.inference.Converter` of VC model ``spec`` (a checkpoint, an exported model
    or a shipped name) and what identifies it (``name`` for tables: ``FILE (step S)`` or the
    shipped name). A model that is not a VC model, or one made for another mel definition than
    ``cfg``, is one ClsvcError line."""
    from clsvc.errors import ClsvcError
    from clsvc.inference import load

    conv = load(spec, device=device, vocoder="griffin-lim")  # only its mels are used
    diff = ", ".join(cfg.differences(conv.mel_cfg))
    if diff:
        raise ClsvcError(f"{spec}: the VC model was trained on another mel definition than this benchmark's "
                         f"(differs in {diff}); pass a model trained on the default mel features")
    name = f"{Path(spec).name} (step {conv.step})" if Path(spec).is_file() else str(spec)
    return conv, {"name": name, **conv.origin}


def reconstruct(conv: Any, u: Utt) -> np.ndarray:
    """VC model ``conv``'s reconstruction of ``u.mel``: the utterance converted to its own voice,
    clipped to [0, 1], cut or padded with silence (0) to ``len(u.mel)`` frames: (frames, n_mels)."""
    from clsvc.errors import ClsvcError
    from clsvc.models import Reference

    ref = Reference(u.mel, wav=u.ref, key=f"{u.speaker}/{u.utt_id}")
    if conv.one_shot:
        voice = conv.voice([ref])
    elif u.speaker in conv.speakers:  # a model without one-shot voices: the speaker's own row
        voice = conv.speaker_embedding(u.speaker)
    else:
        raise ClsvcError(f"{conv.checkpoint}: a {conv.system} model makes no voice from audio and {u.speaker} is "
                         "not one of its training speakers; --through needs a one-shot model for these sets")
    rec = np.clip(np.asarray(conv.convert_mel(ref, voice), dtype=np.float32), 0.0, 1.0)
    return fit_frames(rec, len(u.mel))


def fit_frames(mel: np.ndarray, n: int) -> np.ndarray:
    """``mel`` (frames, n_mels) cut or padded with zeros (silence) to ``n`` frames (float32)."""
    out = np.zeros((n, mel.shape[1]), dtype=np.float32)
    k = min(n, len(mel))
    out[:k] = mel[:k]
    return out


def through_inputs(conv: Any, utts: list[Utt], sets: list[str], cfg: Any) -> tuple[list[np.ndarray], dict]:
    """:func:`reconstruct` of every utterance (what the vocoders are fed with ``--through``), and
    ``reconstruct_seconds`` plus, per set, the mean log-mel distance of the reconstructions to
    the original mels (``logmel_db``, a :func:`~clsvc.evaluation.stats.mean_ci` dict)."""
    import torch

    from clsvc.evaluation.stats import mean_ci

    t = time.perf_counter()
    with torch.inference_mode():
        inputs = [reconstruct(conv, u) for u in utts]
    seconds = time.perf_counter() - t
    dist = [logmel_db(x, u.mel, cfg) for x, u in zip(inputs, utts, strict=True)]
    by_set = {set_: mean_ci([d for d, u in zip(dist, utts, strict=True) if u.set == set_]).to_dict() for set_ in sets}
    return inputs, {"reconstruct_seconds": seconds, "logmel_db": by_set}


# ----------------------------------------------------------------------------------------------
# report


def _fmt(est: dict | None, digits: int, share: bool) -> str:
    if not est or est["n"] == 0 or est["mean"] is None or math.isnan(est["mean"]):
        return "–"
    if share:
        return f"{100 * est['mean']:.0f}% [{100 * est['low']:.0f}, {100 * est['high']:.0f}]"
    return f"{est['mean']:.{digits}f} ± {est['ci95']:.{digits}f}"


def markdown(result: dict) -> list[str]:
    """The Markdown report of ``result`` (a title, what was measured, the table), as lines."""
    sets = result["sets"]
    desc = []
    if "arctic" in sets:
        s = sets["arctic"]
        desc.append(f"ARCTIC held-out prompts ({', '.join(s['speakers'])}; first {result['per_speaker']} of "
                    f"arctic_b0490–b0539 each; {s['utterances']} utterances, {s['audio_seconds']:.0f} s; "
                    "centroid: arctic_a0001–a0010 of the voice)")
    if "librispeech" in sets:
        s = sets["librispeech"]
        desc.append(f"LibriSpeech test-other-sample ({len(s['speakers'])} unseen speakers; first "
                    f"{result['per_speaker']} utterances each; {s['utterances']} utterances, "
                    f"{s['audio_seconds']:.0f} s; centroid: {s['centroid']})")
    through = result.get("through")
    path = "mel → vocoder"
    if through:
        dist = ", ".join(f"{set_} {_fmt(through['logmel_db'].get(set_), 2, False)} dB" for set_ in sets)
        path = (f"mel → its reconstruction by the {through['system']} model {through['checkpoint']} (step "
                f"{through['step']}; the utterance converted to its own voice; log-mel dist to the original mel: "
                f"{dist}) → vocoder")
    title = f" through {through['name']}" if through else ""
    lines = [
        f"### Vocoder copy-synthesis{title} ({result['date']})", "",
        f"{' and '.join(desc)}. Utterances trimmed at {TRIM_DB:g} dB like preprocessing, {path}, "
        "scored against the trimmed original. Means ± 95% CI (acceptance: share with Wilson interval at "
        f"cos ≥ {result['accept_threshold']}). RTF = vocoding time / audio time with {result['threads']} torch "
        f"thread(s) after one warm-up call. F0 error: pyworld {result['f0_method']}, DTW-aligned; log-mel dist: "
        f"mean |mel(out) − mel| of the [0, 1] features × 100 dB. {result['machine']}.", "",
        "| vocoder | " + ("through | " if through else "") + "set | n | " + " | ".join(h for _, h, _, _ in METRICS)
        + " |",
        "|---|" + ("---|" if through else "") + "---|---|" + "---|" * len(METRICS),
    ]
    for name in ["original recording"] + [v["name"] for v in result["vocoders"]]:
        table = result["original"] if name == "original recording" else result["summary"][name]
        via = "" if not through else "– | " if name == "original recording" else f"{through['name']} | "
        for set_ in sets:
            est = table[set_]
            cells = [_fmt(est.get(key), digits, kind == "share") for key, _, digits, kind in METRICS]
            lines.append(f"| {name} | {via}{set_} | {sets[set_]['utterances']} | " + " | ".join(cells) + " |")
    vocoding = ", ".join(f"{v['name']} {v['vocode_seconds']:.0f} s" for v in result["vocoders"])
    if through:
        vocoding += f"; reconstructions by {through['name']} {through['reconstruct_seconds']:.0f} s"
    lines += ["", f"Wall time {result['wall_seconds'] / 60:.1f} min (vocoding only: {vocoding})."]
    return lines


def machine() -> str:
    import torch

    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def _clean(x: Any) -> Any:
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


# ----------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict:
    """The whole benchmark with ``args.threads`` threads (the caller's settings are restored)."""
    import torch

    before = torch.get_num_threads()
    limiter = limit_threads(args.threads)
    try:
        return _run(args)
    finally:
        torch.set_num_threads(before)
        if limiter is not None:
            limiter.restore_original_limits()


def _run(args: argparse.Namespace) -> dict:
    from clsvc.config import ACCEPT_THRESHOLD, MelConfig

    t0 = time.time()
    cfg = MelConfig()
    speakers = {s.strip() for s in args.speakers.split(",") if s.strip()} if args.speakers else None
    jobs = select(args.corpus, args.sets, args.per_speaker, speakers)
    if not jobs:
        raise SystemExit("error: no utterances selected (check --speakers / --set)")
    vocoders = load_vocoders(args.vocoder, cfg, args.device)
    conv, through = load_through(args.through, cfg, args.device) if args.through else (None, None)
    utts = load_utterances(jobs, cfg)
    emb = Embeddings(cfg)
    cents = [emb.centroid(u.refs) for u in utts]
    print(f"{len(utts)} utterances ({sum(u.seconds for u in utts):.0f} s) in {', '.join(args.sets)}; "
          f"{len(vocoders)} vocoder(s); {args.threads} thread(s)", flush=True)
    inputs = [u.mel for u in utts]  # what the vocoders are fed
    if conv is not None and through is not None:
        inputs, made = through_inputs(conv, utts, args.sets, cfg)
        through.update(made)
        print(f"through {through['name']}: {len(inputs)} reconstructions in {made['reconstruct_seconds']:.0f} s",
              flush=True)

    original_rows = []
    for u, c in zip(utts, cents, strict=True):
        original_rows.append({"set": u.set, "speaker": u.speaker, "utt": u.utt_id, "seconds": u.seconds,
                              **score_original(u, emb, c)})

    import torch

    rows, voc_info = [], []
    with torch.inference_mode():
        for name, info, voc in vocoders:
            voc(inputs[0][:WARMUP_FRAMES])  # warm-up, untimed
            total = 0.0
            for set_ in args.sets:
                ts = time.time()
                for u, c, x in ((u, c, x) for u, c, x in zip(utts, cents, inputs, strict=True) if u.set == set_):
                    t = time.perf_counter()
                    raw = np.asarray(voc(x), dtype=np.float32).reshape(-1)
                    dt = time.perf_counter() - t
                    total += dt
                    out = fit(raw, len(u.ref))
                    row = {"vocoder": name, "set": u.set, "speaker": u.speaker, "utt": u.utt_id,
                           "seconds": u.seconds, "vocode_seconds": dt, "rtf": dt / u.seconds,
                           "output_samples": int(raw.size)}
                    if through is not None:
                        row["through"] = through["name"]
                    row.update(score_output(u, out, c, cfg, args.f0_method))
                    rows.append(row)
                n = sum(r["set"] == set_ for r in rows if r["vocoder"] == name)
                print(f"[{name}] {set_}: {n} utterances scored in {time.time() - ts:.0f} s", flush=True)
            voc_info.append({"name": name, **info, "vocode_seconds": total})

    sets = {}
    for set_ in args.sets:
        su = [u for u in utts if u.set == set_]
        modes = sorted({j[4] for j in jobs if j[0] == set_})
        sets[set_] = {"speakers": list(dict.fromkeys(u.speaker for u in su)), "utterances": len(su),
                      "audio_seconds": sum(u.seconds for u in su), "centroid": " / ".join(modes),
                      "files": [str(u.path.relative_to(args.corpus)) for u in su]}
    summary = {}
    for v in voc_info:
        summary[v["name"]] = {}
        for set_ in args.sets:
            rs = [r for r in rows if r["vocoder"] == v["name"] and r["set"] == set_]
            s = summarise(rs)
            audio = sum(r["seconds"] for r in rs)
            s["rtf_total"] = sum(r["vocode_seconds"] for r in rs) / audio if audio else math.nan
            s["pesq_missing"] = sum(1 for r in rs if r["pesq_wb"] is None or math.isnan(r["pesq_wb"]))
            summary[v["name"]][set_] = s
    original = {set_: summarise([r for r in original_rows if r["set"] == set_], ORIGINAL_METRICS)
                for set_ in args.sets}
    return {
        "benchmark": "vocoder copy-synthesis", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
        "python": platform.python_version(), "threads": args.threads, "device": args.device,
        "per_speaker": args.per_speaker, "corpus": str(args.corpus), "trim_db": TRIM_DB, "f0_method": args.f0_method,
        "accept_threshold": ACCEPT_THRESHOLD, "sets": sets, "vocoders": voc_info,
        **({"through": through} if through is not None else {}),  # only with --through: other runs' files as before
        "summary": summary, "original": original, "rows": rows, "original_rows": original_rows,
        "command": "python benchmarks/vocoder.py " + " ".join(sys.argv[1:]) if __name__ == "__main__" else None,
        "wall_seconds": time.time() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = check_corpus(args.corpus, args.sets)
    if problem:
        print(problem)
        return 2
    from clsvc.errors import ClsvcError

    try:
        result = _clean(run(args))  # strict JSON: NaN/inf as null
        write_result(args.out, result, markdown(result))
    except ClsvcError as e:
        print(f"error: {e}")
        return 2
    print(f"\nwrote {args.out} and {markdown_path(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
