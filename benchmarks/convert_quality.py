#!/usr/bin/env python3
"""Conversion quality on the shared parallel TTS corpus (issue 2, item 10).

Trains a config on sentences 001-050 of voices v00-v20 for a wall-clock budget, then converts
held-out sentences 051-060 between random voice pairs:

* seen: source and target among v00-v20, target = the stored training-speaker embedding;
* unseen (one-shot): target among v21-v23 (never trained on), embedding = mean of 3 reference
  utterances of the target.

For every conversion it scores, with Resemblyzer, the cosine of the converted audio to the target
voice's centroid and to the source voice's centroid (centroids of 10 real training-sentence
utterances each), and the same for two bounds: the real target utterance sent through
mel -> Griffin-Lim (the best a mel system can do with this vocoder) and the unconverted source
through the same path. It also probes the frozen codes with fresh classifiers (speaker accuracy
from C_x frames, C_x pooled and S_x). Results: ``OUT/quality.json`` and ``OUT/quality.md``.

With ``--real`` it also trains on LibriSpeech ``train-clean-100-sample`` (251 real speakers) and
adds a "real-unseen" condition: one-shot conversion between the 10 real ``test-other-sample``
speakers, none of them trained on (3 references each).

    python benchmarks/convert_quality.py --name cpu --config cpu --minutes 60
    python benchmarks/convert_quality.py --name paper --config cpu-paper --minutes 60 train.threads=1
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import write_result

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "tts-parallel"
SEEN = [f"v{i:02d}" for i in range(21)]
UNSEEN = ["v21", "v22", "v23"]
TRAIN_SENTS = range(1, 51)
TEST_SENTS = range(51, 61)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work")
    p.add_argument("--name", required=True, help="run name (folder under WORK/runs)")
    p.add_argument("--config", default="cpu")
    p.add_argument("--minutes", type=float, default=60.0, help="training wall-clock budget")
    p.add_argument("--seen-pairs", type=int, default=48)
    p.add_argument("--unseen-pairs", type=int, default=36)
    p.add_argument("--refs", type=int, default=3, help="reference utterances per unseen target")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-only", action="store_true", help="score the existing checkpoint")
    p.add_argument("--checkpoint", type=Path, help="score this checkpoint instead of training")
    p.add_argument("--samples", type=int, default=6, help="converted wavs to keep per condition")
    p.add_argument("--real", action="store_true",
                   help="also train on LibriSpeech train-clean-100-sample and score one-shot conversion "
                        "between the real test-other-sample speakers (never trained on)")
    p.add_argument("--librispeech", type=Path, default=DEFAULT_CORPUS.parent / "librispeech")
    p.add_argument("--real-pairs", type=int, default=36)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. loss.lambda_adv=1.0")
    return p.parse_args(argv)


def utt(corpus: Path, voice: str, sent: int) -> Path:
    return corpus / voice / f"{voice}_{sent:03d}.flac"


def prepare(args) -> Path:
    from clsvc.config import MelConfig
    from clsvc.data import SplitSpec, preprocess

    corpora, unseen = [args.corpus], list(UNSEEN)
    if args.real:
        corpora += [args.librispeech / "train-clean-100-sample", args.librispeech / "test-other-sample"]
        unseen += real_speakers(args)
    feats = args.work / ("features-real" if args.real else "features")
    preprocess(corpora, feats, MelConfig(), split=SplitSpec(
        unseen=unseen, holdout_regex=r"_(05[1-9]|060)$"), progress=False)
    return feats


def real_speakers(args) -> list[str]:
    root = args.librispeech / "test-other-sample"
    return sorted(p.name for p in root.iterdir() if p.is_dir())


def run_training(args, feats: Path, run: Path) -> Path:
    from clsvc.config import load_config
    from clsvc.training import train

    last = run / "checkpoints" / "last.pt"
    if args.eval_only:
        return last
    cfg = load_config(args.config, list(args.overrides) + [f"train.max_minutes={args.minutes}"])

    def on_log(kind, step, values):
        if kind == "val" or step % (cfg.train.log_every * 20) == 0:
            shown = {k: round(v, 3) for k, v in values.items()
                     if k in ("recon", "code", "cls_acc", "adv_acc", "conv_code", "minutes")}
            print(f"[{args.name}] {kind} step {step}: {shown}", flush=True)

    resume = last.exists()
    return train(None if resume else cfg, feats, run, resume=resume, progress=False, on_log=on_log)


def probes(vc, feats: Path) -> dict:
    from clsvc.data import read_manifest
    from clsvc.evaluation.probes import probe_codes

    entries = [e for e in read_manifest(feats) if e.speaker in SEEN]
    return probe_codes(vc.model, feats, [e for e in entries if e.split == "train"],
                       [e for e in entries if e.split == "val"])


def evaluate(args, ckpt: Path, out: Path, feats: Path) -> dict:
    import clsvc
    from clsvc.audio import load_wav, save_wav, wav_to_mel
    from clsvc.dvector import embed_wav
    from clsvc.evaluation.similarity import centroid, cosine

    vc = clsvc.load(ckpt)
    rng = random.Random(args.seed)
    sr = vc.sample_rate
    cent = {}
    for v in SEEN + UNSEEN:
        sents = random.Random(f"{args.seed}:{v}").sample(list(TRAIN_SENTS), 10)
        cent[v] = centroid([embed_wav(load_wav(utt(args.corpus, v, s), vc.mel_cfg), sr) for s in sents])

    samples = out / "samples"
    samples.mkdir(parents=True, exist_ok=True)
    jobs = []  # (condition, source voice, target voice, source file, real target file, refs or None)
    for cond, targets, n in (("seen", SEEN, args.seen_pairs), ("unseen", UNSEEN, args.unseen_pairs)):
        for _ in range(n):
            src = rng.choice(SEEN)
            tgt = rng.choice([t for t in targets if t != src])
            sent = rng.choice(list(TEST_SENTS))
            refs = (None if cond == "seen"
                    else [utt(args.corpus, tgt, s) for s in rng.sample(list(TRAIN_SENTS), args.refs)])
            jobs.append((cond, src, tgt, utt(args.corpus, src, sent), utt(args.corpus, tgt, sent), refs))
    if args.real:
        # Real read speech, both speakers unseen: per speaker, files 0-3 make the Resemblyzer
        # centroid, 4-6 are the references, 7-9 are sources and real-target bounds.
        files = {spk: sorted((args.librispeech / "test-other-sample" / spk).glob("*.flac"))
                 for spk in real_speakers(args)}
        for spk, fs in files.items():
            cent[spk] = centroid([embed_wav(load_wav(f, vc.mel_cfg), sr) for f in fs[:4]])
        for _ in range(args.real_pairs):
            src, tgt = rng.sample(sorted(files), 2)
            jobs.append(("real-unseen", src, tgt, rng.choice(files[src][7:]), rng.choice(files[tgt][7:]),
                         files[tgt][4:7]))

    rows = []
    for i, (cond, src, tgt, src_path, tgt_path, refs) in enumerate(jobs):
        spk = vc.speaker_embedding(tgt) if refs is None else vc.embed(refs)
        src_mel = vc.mel(src_path)
        conv = vc.vocode(vc.convert_mel(src_mel, spk))
        real_tgt = vc.vocode(wav_to_mel(load_wav(tgt_path, vc.mel_cfg), vc.mel_cfg))
        src_gl = vc.vocode(src_mel)
        if sum(r["condition"] == cond for r in rows) < args.samples:
            save_wav(samples / f"{cond}_{i:03d}_{src}-to-{tgt}_{src_path.stem}.wav", conv, sr)
        row = {"condition": cond, "source": src, "target": tgt, "source_file": src_path.name,
               "refs": [p.name for p in refs or []]}
        for kind, wav in (("converted", conv), ("target_gl", real_tgt), ("source_gl", src_gl)):
            e = embed_wav(wav, sr)
            row[f"{kind}_cos_tgt"] = cosine(e, cent[tgt])
            row[f"{kind}_cos_src"] = cosine(e, cent[src])
        rows.append(row)

    summary = {}
    for cond in dict.fromkeys(r["condition"] for r in rows):
        rs = [r for r in rows if r["condition"] == cond]
        summary[cond] = {}
        for kind in ("converted", "target_gl", "source_gl"):
            t = np.array([r[f"{kind}_cos_tgt"] for r in rs])
            s = np.array([r[f"{kind}_cos_src"] for r in rs])
            summary[cond][kind] = {"cos_tgt": float(t.mean()), "cos_src": float(s.mean()),
                                   "closer_to_target": float((t > s).mean()), "n": len(rs)}
    return {"summary": summary, "rows": rows, "probes": probes(vc, feats)}


def markdown(name: str, result: dict) -> list[str]:
    """The Markdown table of ``result`` under heading ``name``, as lines."""
    lines = [f"### {name}", "", f"config `{result['config']}`, overrides `{' '.join(result['overrides']) or '-'}`; "
             f"{result['steps']} steps in {result['train_minutes']:.1f} min; final train "
             f"adv_acc {result['final_train'].get('adv_acc', float('nan')):.3f}, "
             f"cls_acc {result['final_train'].get('cls_acc', float('nan')):.3f}", "",
             "| condition | audio | cos to target | cos to source | closer to target | n |",
             "|---|---|---|---|---|---|"]
    for cond, kinds in result["summary"].items():
        for kind, m in kinds.items():
            lines.append(f"| {cond} | {kind} | {m['cos_tgt']:.3f} | {m['cos_src']:.3f} | "
                         f"{100 * m['closer_to_target']:.0f}% | {m['n']} |")
    p = result["probes"]
    lines += ["", f"Fresh probes (speaker accuracy on held-out sentences, chance {p['chance']:.3f}): "
                  f"C_x frames {p['content_frame']:.3f}, C_x pooled {p['content_pooled']:.3f}, "
                  f"S_x {p['speaker']:.3f}"]
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.corpus.is_dir():
        print(f"skipped: corpus {args.corpus} not found")
        return 0
    from clsvc.training import read_log
    from clsvc.training.checkpoint import load_checkpoint

    t0 = time.time()
    run = args.work / "runs" / args.name
    feats = prepare(args)
    ckpt = args.checkpoint or run_training(args, feats, run)
    meta = load_checkpoint(ckpt)
    out = run
    out.mkdir(parents=True, exist_ok=True)
    train_rows = read_log(run, "train")
    result = {
        "name": args.name, "config": str(args.config), "overrides": list(args.overrides),
        "steps": int(meta["step"]), "train_minutes": float(meta.get("elapsed", 0.0)) / 60,
        "final_train": train_rows[-1] if train_rows else {},
        "date": time.strftime("%Y-%m-%d"), "machine": machine(),
    }
    result.update(evaluate(args, ckpt, out, feats))
    result["wall_minutes"] = (time.time() - t0) / 60
    write_result(out / "quality.json", result, markdown(args.name, result))  # and quality.md
    return 0


def machine() -> str:
    import os
    import platform

    model = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


if __name__ == "__main__":
    sys.exit(main())
