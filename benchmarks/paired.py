#!/usr/bin/env python3
"""Paired differences between two ``clsvc evaluate`` runs: model B minus model A on the pairs
both scored.

``clsvc evaluate`` draws its conversion pairs from the data alone (seen pairs first), so two
evaluations with the same ``--data`` and pair counts score the same pairs, and a per-pair
difference cancels what the pairs themselves vary by (a hard sentence, an easy speaker). For each
metric column of ``scores.csv`` (cosines in [-1, 1]; identification, closer and WER/CER as
fractions; MCD in dB; DNSMOS on its 1–5 scale) it reports A's mean, B's mean and the mean
difference B − A with its 95% Student-t interval (:func:`clsvc.evaluation.stats.mean_ci`, as
``clsvc evaluate``'s own tables), over the
rows of kind ``converted`` in the given condition (``seen``, ``any2many`` or ``unseen``) that both
files hold and both scored (empty cells are left out pair by pair).

Writes ``--out`` (JSON) and the Markdown table next to it (``.md``) and prints the table.

    python benchmarks/paired.py EVAL_A/scores.csv EVAL_B/scores.csv --condition seen --out /tmp/paired.json
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import write_result  # noqa: E402
from clsvc.evaluation.stats import mean_ci  # noqa: E402

METRICS = ("closer", "cos_tgt", "cos_src", "id_target", "mcd_audio", "mcd_feat", "wer", "cer", "dnsmos_ovrl")


def read_scores(path: Path, condition: str) -> dict[str, dict[str, str]]:
    """The ``converted`` rows of one condition of a ``scores.csv``, keyed by pair id; a missing or
    malformed file is a SystemExit naming it."""
    if not path.is_file():
        raise SystemExit(f"{path}: not found; give the scores.csv that `clsvc evaluate --out EVAL` writes in EVAL")
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not {"pair", "condition", "kind"} <= set(reader.fieldnames or []):
            raise SystemExit(f"{path}: not a clsvc evaluate scores.csv (needs pair, condition and kind columns)")
        return {r["pair"]: r for r in reader if r["kind"] == "converted" and r["condition"] == condition}


def paired(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]],
           metrics: tuple[str, ...] = METRICS) -> list[dict[str, float | int | str]]:
    """Per metric: n pairs, mean of A, mean of B, mean difference B − A and its 95% half-width."""
    keys = sorted(set(a) & set(b))
    rows: list[dict[str, float | int | str]] = []
    for m in metrics:
        pa, pb = [], []
        for k in keys:
            va, vb = a[k].get(m, ""), b[k].get(m, "")
            if va and vb:
                pa.append(float(va))
                pb.append(float(vb))
        if not pa:
            continue
        diff = mean_ci((np.asarray(pb) - np.asarray(pa)).tolist())
        rows.append({"metric": m, "n": diff.n, "a": float(np.mean(pa)), "b": float(np.mean(pb)),
                     "diff": diff.mean, "ci95": diff.ci})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=Path, help="scores.csv of model A (the reference)")
    ap.add_argument("b", type=Path, help="scores.csv of model B")
    ap.add_argument("--condition", default="seen", choices=["seen", "any2many", "unseen"])
    ap.add_argument("--out", type=Path, required=True, help="JSON result (the Markdown table goes beside it)")
    args = ap.parse_args(argv)
    a, b = read_scores(args.a, args.condition), read_scores(args.b, args.condition)
    shared = len(set(a) & set(b))
    if not shared:
        raise SystemExit(f"{args.a} and {args.b} share no {args.condition} pairs; evaluate both with the "
                         "same --data and pair counts")
    rows = paired(a, b)
    md = [f"Paired {args.condition} pairs: B = {args.b}, A = {args.a}; {shared} pairs in both", "",
          "| metric | n | A | B | B − A (95% interval) |", "|---|---|---|---|---|"]
    md += [f"| {r['metric']} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | {r['diff']:+.3f} ± {r['ci95']:.3f} |"
           for r in rows]
    write_result(args.out, {"a": str(args.a), "b": str(args.b), "condition": args.condition,
                            "shared_pairs": shared, "metrics": rows}, md)


if __name__ == "__main__":
    main()
