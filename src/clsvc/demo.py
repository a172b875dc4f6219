"""``clsvc demo``: the whole pipeline on a machine with no data of the user's.

1. Synthesise a small multi-voice parallel corpus with espeak-ng (Harvard sentences; several
   accents, variants, pitches and speeds). The last voice is kept out of training.
2. Preprocess it (the last 10 sentences of every voice held out).
3. Train ``configs/cpu.yaml`` for a bounded time.
4. Convert held-out sentences: each training voice into the next one (many-to-many) and into the
   unseen voice from 3 reference utterances (one-shot).
5. Score each conversion with Resemblyzer: cosine to the target voice vs to the source voice, and
   write ``results.md`` / ``results.json`` next to the wavs.

Each step is skipped when its output is already there, so a second run only re-scores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ClsvcError
from .pretrained import DEFAULT_VOCODER, vocoder_file

# (espeak-ng voice+variant, pitch 0-99, words per minute, gender). Distinct accents, variants,
# pitches and speeds, so that the voices differ the way speakers do.
VOICES = [
    ("en-us+m1", 40, 160, "M"), ("en-gb+f2", 70, 165, "F"), ("en-us+m3", 50, 150, "M"),
    ("en-gb-scotland+f4", 75, 155, "F"), ("en-029+m5", 35, 160, "M"), ("en-us+f1", 60, 170, "F"),
    ("en-gb-x-rp+m7", 45, 150, "M"), ("en-us+f5", 65, 160, "F"), ("en-gb+m2", 55, 165, "M"),
    ("en-us+f3", 70, 150, "F"), ("en-gb-x-rp+m6", 30, 155, "M"), ("en-us+Linda", 68, 160, "F"),
]
HELD_OUT = 10  # last sentences of every voice, never trained on


def sentences() -> list[str]:
    """The demo's sentences (Harvard sentences shipped with the package)."""
    text = resources.files("clsvc").joinpath("resources/harvard.txt").read_text()
    return [s.strip() for s in text.splitlines() if s.strip()]


def synthesise(corpus: Path, n_voices: int, n_sentences: int) -> None:
    """Write ``corpus/vNN/vNN_MMM.wav`` (espeak-ng), ``speakers.tsv`` and ``sentences.txt``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ClsvcError(
            "espeak-ng not found; install it (Debian/Ubuntu: sudo apt-get install espeak-ng, "
            "macOS: brew install espeak-ng) and run `clsvc demo` again"
        )
    texts = sentences()[:n_sentences]
    corpus.mkdir(parents=True, exist_ok=True)
    jobs = []
    for v in range(n_voices):
        name = f"v{v:02d}"
        voice, pitch, speed, _ = VOICES[v]
        (corpus / name).mkdir(exist_ok=True)
        for i, text in enumerate(texts, start=1):
            out = corpus / name / f"{name}_{i:03d}.wav"
            if not out.exists():
                jobs.append((voice, pitch, speed, text, out))

    def run(job):
        voice, pitch, speed, text, out = job
        tmp = out.with_name(f".{out.name}")
        r = subprocess.run([exe, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(tmp), text],
                           capture_output=True, text=True)
        if r.returncode != 0 or not tmp.exists():
            raise ClsvcError(f"espeak-ng failed for voice {voice}: {r.stderr.strip() or r.returncode}")
        tmp.replace(out)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(run, jobs))
    (corpus / "sentences.txt").write_text("\n".join(texts) + "\n")
    rows = [f"v{v:02d}\t{VOICES[v][0]}\t{VOICES[v][3]}" for v in range(n_voices)]
    (corpus / "speakers.tsv").write_text("speaker\tvoice\tgender\n" + "\n".join(rows) + "\n")


def run_demo(out: Path, minutes: float = 12.0, voices: int = 8, force: bool = False,
             quick: bool = False, vocoder: str = DEFAULT_VOCODER) -> dict:
    """Synthesise voices, train for ``minutes``, convert held-out sentences and score them into ``out``."""
    from .audio import load_wav, save_wav
    from .config import load_config
    from .data import SplitSpec, preprocess
    from .dvector import embed_wav
    from .evaluation.similarity import centroid, cosine
    from .inference import load
    from .training import train

    if not 4 <= voices <= len(VOICES):
        raise ClsvcError(f"--voices must be between 4 and {len(VOICES)}")
    vocoder_file(vocoder)  # an unknown --vocoder is reported before minutes of training
    n_sent = 14 if quick else 40
    held = 2 if quick else HELD_OUT
    if quick:
        voices = 4
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{out}: cannot create the demo folder ({e.strerror}); choose another --out") from None

    print(f"[1/5] synthesising {voices} voices x {n_sent} sentences with espeak-ng -> {out / 'corpus'}")
    corpus = out / "corpus"
    synthesise(corpus, voices, n_sent)
    names = [f"v{v:02d}" for v in range(voices)]
    unseen, seen = names[-1], names[:-1]

    print("[2/5] preprocessing")
    feats = out / "features"
    cfg = load_config("cpu", ["train.max_steps=30", "train.log_every=10", "train.ckpt_every=30",
                              "train.val_every=30"] if quick else [f"train.max_minutes={minutes}"])
    first_test = n_sent - held + 1
    regex = "_(" + "|".join(f"{i:03d}" for i in range(first_test, n_sent + 1)) + ")$"
    preprocess(corpus, feats, cfg.mel, split=SplitSpec(unseen=[unseen], holdout_regex=regex),
               progress=not quick)

    run = out / "run"
    last = run / "checkpoints" / "last.pt"
    if force and run.exists():
        shutil.rmtree(run)
    if last.exists():
        print(f"[3/5] found a trained model in {run} (pass --force to retrain)")
    else:
        budget = "30 steps" if quick else f"{minutes:g} minutes"
        print(f"[3/5] training configs/cpu.yaml for {budget} (progress bar below; TensorBoard: {run / 'tb'})")
        train(cfg, feats, run, progress=not quick)

    print("[4/5] converting held-out sentences")
    vc = load(last, vocoder=vocoder)
    conv_dir = out / "converted"
    conv_dir.mkdir(exist_ok=True)
    test_ids = list(range(first_test, n_sent + 1))

    def wav(v: str, i: int) -> Path:
        return corpus / v / f"{v}_{i:03d}.wav"

    refs = [wav(unseen, i) for i in (1, 2, 3)]
    jobs = []
    for k, src in enumerate(seen):
        sent = test_ids[k % len(test_ids)]
        jobs.append((src, seen[(k + 1) % len(seen)], sent, "seen"))
        jobs.append((src, unseen, test_ids[(k + 1) % len(test_ids)], "one-shot"))
    results: list[dict[str, Any]] = []
    for src, tgt, sent, kind in jobs:
        if kind == "seen":
            y = vc.convert(wav(src, sent), target_speaker=tgt)
        else:
            y = vc.convert(wav(src, sent), refs)
        path = conv_dir / f"{src}-to-{tgt}_{sent:03d}.wav"
        save_wav(path, y, vc.sample_rate)
        results.append({"source": src, "target": tgt, "sentence": sent, "kind": kind,
                        "file": str(path.relative_to(out)), "wav": y})

    print("[5/5] scoring with Resemblyzer (cosine to each voice's centroid of training sentences)")
    train_ids = range(1, 4 if quick else min(11, first_test))
    cents = {v: centroid([embed_wav(load_wav(wav(v, i), vc.mel_cfg)) for i in train_ids]) for v in names}
    for r in results:
        emb = embed_wav(r.pop("wav"))
        r["cos_target"] = cosine(emb, cents[r["target"]])
        r["cos_source"] = cosine(emb, cents[r["source"]])
        r["closer_to_target"] = r["cos_target"] > r["cos_source"]
    summary = {}
    for kind in ("seen", "one-shot"):
        rs = [r for r in results if r["kind"] == kind]
        summary[kind] = {
            "n": len(rs),
            "cos_target": float(np.mean([r["cos_target"] for r in rs])),
            "cos_source": float(np.mean([r["cos_source"] for r in rs])),
            "closer_to_target": float(np.mean([r["closer_to_target"] for r in rs])),
        }
    lines = ["| conversion | kind | cos to target | cos to source | closer to target |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['file']} | {r['kind']} | {r['cos_target']:.3f} | {r['cos_source']:.3f} | "
                     f"{'yes' if r['closer_to_target'] else 'no'} |")
    lines.append("")
    for kind, s in summary.items():
        lines.append(f"**{kind}**: {s['n']} conversions, mean cosine to target {s['cos_target']:.3f} vs "
                     f"to source {s['cos_source']:.3f}; {100 * s['closer_to_target']:.0f}% closer to the target.")
    table = "\n".join(lines)
    (out / "results.md").write_text(
        "# clsvc demo\n\nResemblyzer cosine of each converted file to the target voice and to the "
        "source voice (centroids of real training sentences).\n\n" + table + "\n")
    (out / "results.json").write_text(json.dumps({"results": results, "summary": summary}, indent=2))
    print(table)
    print(f"\nconverted wavs in {conv_dir}; table in {out / 'results.md'}")
    return summary
