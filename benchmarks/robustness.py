#!/usr/bin/env python3
"""Conversions of recordings made away from a studio: noise and reverberation on the source or
on the one-shot reference clips.

Users convert their own recordings (a laptop's microphone, a room), not ARCTIC's studio. With
``--degrade source`` (the default), for the first ``--limit`` parallel pairs of one condition of a
``clsvc evaluate`` run (its ``pairs.csv``: an ARCTIC source sentence converted into another ARCTIC
voice that said the same sentence), the source waveform is degraded in each of ``--conditions``
and converted as ``clsvc convert`` does (``Converter.convert`` with the target speaker's name), by
each model of ``--checkpoint``. With ``--degrade references`` the pairs are one-shot ones
(``--condition unseen``: a clip converted into an unseen voice given by its reference clips, the
evaluation's ``ref_audio``): the source stays clean and every reference clip is degraded, as a
user's recordings of the voice they want would be (``clsvc convert --target ref1.wav ref2.wav``).
With ``--max-refs K`` the conversions use each pair's first K reference clips only, and the voices
are still judged on recordings other than all of them: runs with different K score the same pairs
against the same centroids (how many clips a one-shot voice needs).
Conditions:

* ``clean``: the recording as it is;
* ``whiteSNR`` / ``pinkSNR``: stationary white or pink (1/f) noise at SNR dB;
* ``babbleSNR``: three LibriSpeech readers talking at once (``--babble``), at SNR dB;
* ``reverbRT60``: the recording in a room: convolved with an exponentially decaying noise
  impulse response of that RT60 (seconds) and a 3 dB direct-to-reverberant ratio, a statistical
  model of a diffuse room (no geometry).

Each degraded clip is made from a seed of its file and the condition, so every model converts
the same audio. Scores per conversion: Resemblyzer cosine to the target voice and to the source
voice (centroids of 10 of each ARCTIC voice's ``arctic_a`` recordings, or of the first 10 in the
voice's folder for other corpora, leaving out the pair's reference clips; "closer" when nearer
the target), pocketsphinx WER against the pair's transcript where it has one (and of
the degraded source itself, for context: what a recogniser still hears in it), and, for parallel
pairs, audio MCD against the target's real recording (:func:`clsvc.evaluation.mcd.audio_mcd`).
Per model and condition: the means, and the paired differences (mean and 95% interval) against
the same model's clean conversions and against the first model's conversions of the same audio.
Writes ``--out`` (JSON) and the Markdown tables beside it, and prints them.

    python benchmarks/robustness.py --eval EVAL --checkpoint arctic [other.pt ...] --out /tmp/robust.json
    python benchmarks/robustness.py --eval EVAL --degrade references --condition unseen --out /tmp/refs.json
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import write_result  # noqa: E402
from clsvc.audio import load_wav  # noqa: E402
from clsvc.evaluation.similarity import centroid, cosine  # noqa: E402
from clsvc.evaluation.stats import mean_ci  # noqa: E402
from mcd_gap import read_pairs  # noqa: E402  (the evaluation's parallel pairs, as mcd_gap reads them)

DEFAULT_CONDITIONS = "clean,white20,pink20,pink10,babble15,reverb0.4,reverb0.8"
METRICS = ("cos_tgt", "cos_src", "closer", "wer", "wer_input", "mcd_audio")
DRR_DB = 3.0
CENTROID_CLIPS = 10


def parse_condition(name: str) -> tuple[str, float]:
    """``pink20`` -> ("pink", 20.0), ``reverb0.4`` -> ("reverb", 0.4), ``clean`` -> ("clean", 0)."""
    for kind in ("clean", "white", "pink", "babble", "reverb"):
        if name.startswith(kind):
            rest = name[len(kind):]
            try:
                value = float(rest) if rest else 0.0
            except ValueError:
                break
            if (kind == "clean") == (rest == "") and (kind != "reverb" or value > 0):
                return kind, value
            break
    raise SystemExit(f"--conditions: {name!r} is not one of clean, whiteSNR, pinkSNR, babbleSNR, reverbRT60 "
                     "(e.g. pink20, reverb0.4)")


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("|".join(parts).encode()).digest()[:8], "little")


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise (n,) whose power spectral density goes as 1/f^exponent (0 white, 1 pink)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / f ** (exponent / 2), n)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled to ``snr_db`` (mean powers over the whole clip)."""
    noise = np.resize(noise, len(speech))
    gain = np.sqrt(np.mean(speech**2) / (np.mean(noise**2) * 10 ** (snr_db / 10) + 1e-20))
    return speech + gain * noise


def room_response(rt60: float, sr: int, rng: np.random.Generator, drr_db: float = DRR_DB) -> np.ndarray:
    """An impulse response (samples,): a unit direct path, then Gaussian noise decaying 60 dB in
    ``rt60`` s whose energy is ``drr_db`` below the direct path's."""
    t = np.arange(1, int(rt60 * sr)) / sr
    tail = rng.standard_normal(len(t)) * 10 ** (-3.0 * t / rt60)  # amplitude: -60 dB of power at rt60
    tail *= np.sqrt(10 ** (-drr_db / 10) / np.sum(tail**2))
    return np.concatenate([[1.0], tail])


def degrade(wav: np.ndarray, condition: str, sr: int, rng: np.random.Generator,
            babble: list[np.ndarray] | None) -> np.ndarray:
    """The source waveform (float32, peak <= 0.99) as recorded in ``condition``."""
    from scipy.signal import fftconvolve

    kind, value = parse_condition(condition)
    x = wav.astype(np.float64)
    if kind == "white":
        x = mix_at_snr(x, rng.standard_normal(len(x)), value)
    elif kind == "pink":
        x = mix_at_snr(x, coloured_noise(len(x), 1.0, rng), value)
    elif kind == "babble":
        if not babble:
            raise SystemExit("babble conditions need --babble (a folder of other speakers' recordings)")
        talkers = np.zeros(len(x))
        for i in rng.choice(len(babble), size=min(3, len(babble)), replace=False):
            clip = babble[i]
            start = int(rng.integers(0, max(1, len(clip) - len(x))))
            piece = np.resize(clip[start:start + len(x)], len(x))
            talkers += piece / (np.sqrt(np.mean(piece**2)) + 1e-9)
        x = mix_at_snr(x, talkers, value)
    elif kind == "reverb":
        x = fftconvolve(x, room_response(value, sr, rng))[: len(x)]
    peak = float(np.max(np.abs(x)))
    return (x * (0.99 / peak) if peak > 0.99 else x).astype(np.float32)


def voice_centroid(speaker_dir: Path, cfg: Any, exclude: frozenset[str] = frozenset(),
                   cache: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """Resemblyzer centroid (256,) of the first CENTROID_CLIPS ``arctic_a`` recordings in
    ``speaker_dir`` (of its first recordings when it has no ``arctic_a`` ones), files named in
    ``exclude`` (their paths) left out; ``cache`` keeps each file's embedding by its path."""
    from clsvc.dvector import embed_wav

    audio = sorted(p for p in speaker_dir.iterdir()
                   if p.suffix.lower() in (".wav", ".flac") and str(p) not in exclude)
    clips = ([p for p in audio if p.name.startswith("arctic_a")] or audio)[:CENTROID_CLIPS]
    if not clips:
        raise SystemExit(f"{speaker_dir}: no recordings to make the voice's centroid from")
    cache = {} if cache is None else cache
    for c in clips:
        if str(c) not in cache:
            cache[str(c)] = embed_wav(load_wav(c, cfg), cfg.sample_rate)
    return centroid([cache[str(c)] for c in clips])


def _num(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}f}" if np.isfinite(x) else "–"


def _diff(x: dict[str, float]) -> str:
    return f"{x['diff']:+.3f} ± {x['ci95']:.3f}" if np.isfinite(x["diff"]) else "–"


def paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Mean and 95% interval of b - a over the items both scored (NaN-free)."""
    d = [y - x for x, y in zip(a, b, strict=True) if np.isfinite(x) and np.isfinite(y)]
    if len(d) < 2:
        return {"diff": float("nan"), "ci95": float("nan"), "n": len(d)}
    ci = mean_ci(d)
    return {"diff": float(ci.mean), "ci95": float(ci.ci), "n": len(d)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", type=Path, required=True, help="a `clsvc evaluate --out` folder (its pairs.csv)")
    ap.add_argument("--checkpoint", nargs="+", default=["arctic"],
                    help="models to compare (the first is the reference)")
    ap.add_argument("--vocoder", default="auto",
                    help="the vocoder of every model (auto: each model's own; Griffin-Lim for a file without a card)")
    ap.add_argument("--degrade", choices=("source", "references"), default="source",
                    help="what is recorded badly: the source (pairs converted into a named voice) or the "
                         "reference clips of one-shot pairs (use with --condition unseen)")
    ap.add_argument("--condition", default="seen", help="the evaluation's condition to take pairs from")
    ap.add_argument("--conditions", default=DEFAULT_CONDITIONS, help=f"comma-separated (default {DEFAULT_CONDITIONS})")
    ap.add_argument("--limit", type=int, default=30, help="pairs to score (the first ones)")
    ap.add_argument("--max-refs", type=int, default=None,
                    help="with --degrade references: convert from each pair's first K reference clips only "
                         "(the voices are still judged without all of them, so runs with different K are paired)")
    ap.add_argument("--babble", type=Path, default=None,
                    help="recordings of other speakers for babble (default: librispeech/train-clean-100-sample "
                         "in a folder above the pairs' source recordings)")
    ap.add_argument("--no-asr", action="store_true", help="skip pocketsphinx (WER)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="JSON result (the Markdown tables go beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    conditions = [c.strip() for c in args.conditions.split(",") if c.strip()]
    for c in conditions:
        parse_condition(c)
    one_shot = args.degrade == "references"
    if args.max_refs is not None and (not one_shot or args.max_refs < 1):
        raise SystemExit("--max-refs: give a count of 1 or more, with --degrade references")
    pairs = read_pairs(args.eval, args.condition, args.limit, one_shot=one_shot)
    import clsvc
    from clsvc.dvector import embed_wav
    from clsvc.evaluation.mcd import audio_mcd

    models = [clsvc.load(c, vocoder=args.vocoder) for c in args.checkpoint]
    cfg = models[0].mel_cfg
    sr = cfg.sample_rate
    babble: list[np.ndarray] | None = None
    if any(parse_condition(c)[0] == "babble" for c in conditions):
        folder = args.babble or next(
            (d for d in (up / "librispeech" / "train-clean-100-sample" for up in Path(pairs[0]["source_audio"]).parents)
             if d.is_dir()), Path("librispeech/train-clean-100-sample"))
        files = sorted(folder.rglob("*.flac"))[:30] + sorted(folder.rglob("*.wav"))[:30]
        if not files:
            raise SystemExit(f"{folder}: no .flac or .wav recordings for babble; give --babble DIR or drop babble")
        babble = [load_wav(f, cfg) for f in files]
    # A pair's voices are judged on recordings other than its reference clips (the references
    # are what is being degraded): each pair has its centroids, of the clips it does not use.
    refs_of = {p["name"]: [r for r in p.get("ref_audio", "").split(";") if r] if one_shot else [] for p in pairs}
    embeddings: dict[str, np.ndarray] = {}
    centroids: dict[tuple[str, frozenset[str]], np.ndarray] = {}

    def voice_of(p: dict[str, str], side: str) -> np.ndarray:
        key = (p[f"{side}_speaker"], frozenset(refs_of[p["name"]]))
        if key not in centroids:
            centroids[key] = voice_centroid(Path(p[f"{side}_audio"]).parent, cfg, key[1], embeddings)
        return centroids[key]
    asr = None
    if not args.no_asr:
        from clsvc.evaluation import asr as asr_module

        asr = asr_module
    scores: dict[str, dict[str, dict[str, list[float]]]] = {
        m: {c: {k: [] for k in METRICS} for c in conditions} for m in args.checkpoint}
    def bad(path: str, clip: np.ndarray, c: str) -> np.ndarray:
        return degrade(clip, c, sr, np.random.default_rng(_seed(path, c)), babble)

    for i, p in enumerate(pairs):
        source = load_wav(p["source_audio"], cfg)
        real = load_wav(p["target_audio"], cfg) if p["parallel"] == "1" else None
        refs = [(r, load_wav(r, cfg)) for r in refs_of[p["name"]][:args.max_refs]]
        transcript = p.get("transcript") or ""
        for c in conditions:
            wav = source if one_shot else bad(p["source_audio"], source, c)
            targets = [bad(r, clip, c) for r, clip in refs] if one_shot else None
            heard = float("nan")
            if asr is not None and transcript:
                heard = asr.error_rates(transcript, asr.transcribe(wav, sr))["wer"]
            for name, vc in zip(args.checkpoint, models, strict=True):
                out = (vc.convert(wav, targets=targets) if one_shot
                       else vc.convert(wav, target_speaker=p["target_speaker"]))
                e = embed_wav(out, sr)
                row = scores[name][c]
                row["cos_tgt"].append(cosine(e, voice_of(p, "target")))
                row["cos_src"].append(cosine(e, voice_of(p, "source")))
                row["closer"].append(float(row["cos_tgt"][-1] > row["cos_src"][-1]))
                row["wer_input"].append(heard)
                row["wer"].append(float("nan") if asr is None or not transcript
                                  else asr.error_rates(transcript, asr.transcribe(out, sr))["wer"])
                row["mcd_audio"].append(float("nan") if real is None else float(audio_mcd(real, out, sr)))
        print(f"{i + 1}/{len(pairs)} pairs", file=sys.stderr, flush=True)

    def mean(v: list[float]) -> float:
        v = [x for x in v if np.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    result: dict[str, Any] = {"eval": str(args.eval), "condition": args.condition, "degrade": args.degrade,
                              "max_refs": args.max_refs,
                              "pairs": len(pairs), "conditions": conditions, "drr_db": DRR_DB, "models": {}}
    what = "reference clips" if one_shot else "sources"
    if args.max_refs is not None:
        what += f", the first {args.max_refs} of each pair"
    lines = [f"### Conversions with degraded {what} ({len(pairs)} {args.condition} pairs of `{args.eval}`)", ""]
    ref = args.checkpoint[0]
    for name in args.checkpoint:
        per: dict[str, Any] = {}
        lines += [f"**{name}** (vocoder: {models[args.checkpoint.index(name)].vocoder_name})", "",
                  f"| {what} | closer | cos to target | cos to source | WER (source's own) | audio MCD | "
                  "vs clean: cos to target | vs clean: WER | vs clean: MCD |"
                  + ("" if name == ref else f" vs {ref}: cos to target | vs {ref}: WER | vs {ref}: MCD |"),
                  "|---|---|---|---|---|---|---|---|---|" + ("" if name == ref else "---|---|---|")]
        for c in conditions:
            s = scores[name][c]
            entry = {k: mean(s[k]) for k in METRICS}
            entry["vs_clean"] = {k: paired(scores[name]["clean"][k], s[k]) for k in ("wer", "mcd_audio", "cos_tgt")} \
                if "clean" in conditions else {}
            entry["vs_reference"] = {k: paired(scores[ref][c][k], s[k]) for k in ("wer", "mcd_audio", "cos_tgt")}
            per[c] = entry

            vc_ = entry["vs_clean"]
            cells = [c, f"{100 * entry['closer']:.0f}%", _num(entry["cos_tgt"]), _num(entry["cos_src"]),
                     f"{_num(entry['wer'])} ({_num(entry['wer_input'])})", _num(entry["mcd_audio"], 2),
                     *(_diff(vc_[k]) if vc_ else "–" for k in ("cos_tgt", "wer", "mcd_audio"))]
            if name != ref:
                cells += [_diff(entry["vs_reference"][k]) for k in ("cos_tgt", "wer", "mcd_audio")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        result["models"][name] = per
        result.setdefault("vocoders", {})[name] = models[args.checkpoint.index(name)].vocoder_name
    # Every pair's scores (model -> condition -> metric -> one value per pair, NaN where a metric
    # does not apply), so that runs of the same pairs can be compared pair by pair (benchmarks/paired.py's way).
    result["per_pair"] = {"names": [p["name"] for p in pairs], "scores": scores}
    write_result(args.out, result, lines)


if __name__ == "__main__":
    main()
