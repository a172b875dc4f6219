#!/usr/bin/env python3
"""Where a VC model's audio MCD on parallel pairs comes from: the vocoder, the decoder, or the
change of voice.

For each parallel pair of one condition of a ``clsvc evaluate`` run (its ``pairs.csv``: a source
utterance converted into a target voice whose speaker said the same sentence), the target's real
recording is the reference, and three renderings of it are scored with the evaluation's audio MCD
(:func:`clsvc.evaluation.mcd.audio_mcd`: WORLD envelope, order-24 mel-cepstra c1–c24, DTW, dB):

* ``vocoded``: the recording's own mel through the vocoder (the evaluation's bound);
* ``reconstructed``: the recording decoded by the model with the target speaker's own stored
  voice (content and voice of the same utterance: what the decoder loses without a change of voice);
* ``converted``: the pair's source converted into the target speaker's stored voice, as the
  evaluation converts it (the model's card settings; converted again here, since an evaluation
  keeps only a few sample wavs);
* ``target code`` (with ``--target-code``, ClsVC only): the same conversion with the source's
  content code C_x replaced by the code of the target's recording, DTW-aligned onto the source's
  frames (:func:`clsvc.data.dataset.align_frames`), everything else as converted (the source's
  pitch, timing and level contour, the card's contrast). No conversion can have that code: it is
  the best the change of voice can do through this decoder if the content path kept nothing of the
  source's voice or its way of saying the words.

Source and target are trimmed of leading and trailing silence as ``clsvc preprocess`` trims them
(``--trim-db``), so every rendering has the timing of the evaluation's; the reference stays the
whole recording, as in the evaluation.

The steps between them split the conversion's distance from the real target into the vocoder's
share, the decoder's share and the voice change's share. Writes ``--out`` (JSON) and the Markdown
table beside it, and prints the table.

    python benchmarks/mcd_gap.py --eval EVAL --checkpoint arctic [--vocoder auto] --out /tmp/gap.json
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_report.py, however this file is loaded
from _report import write_result  # noqa: E402
from clsvc.audio import load_wav, trim_silence  # noqa: E402
from clsvc.evaluation.mcd import audio_mcd  # noqa: E402
from clsvc.evaluation.stats import mean_ci  # noqa: E402

KINDS = ("vocoded", "reconstructed", "converted")
TARGET_CODE = "target code"


@contextmanager
def content_replaced(model: Any, code: torch.Tensor) -> Iterator[None]:
    """While open, ``model.encode`` of any input of ``code``'s frames returns ``code`` (1, T, c)
    as its content code (S_x and the mask as computed), so the model's own conversion path
    decodes that code: no copy of the pipeline here."""
    encode = model.encode

    def patched(mel: torch.Tensor, lengths: torch.Tensor | None = None) -> Any:
        speaker, content, mask = encode(mel, lengths)
        if content.shape[:2] == code.shape[:2]:
            content = code.to(content.device, content.dtype)
        return speaker, content, mask

    model.encode = patched
    try:
        yield
    finally:
        del model.encode  # the class's method again


def target_code(vc: Any, source_mel: np.ndarray, target_mel: np.ndarray) -> torch.Tensor:
    """C_x (1, Ta, c) of the target's mel (Tb, M) at the source's frames: frame i holds the target
    frame DTW matches to source frame i."""
    from clsvc.data.dataset import align_frames

    code = vc.model.content(torch.from_numpy(np.ascontiguousarray(target_mel, dtype=np.float32)).unsqueeze(0))
    return code[:, torch.from_numpy(align_frames(source_mel, target_mel))]


def read_pairs(eval_dir: Path, condition: str, limit: int, one_shot: bool = False) -> list[dict[str, str]]:
    """The first ``limit`` parallel pairs of ``condition`` in ``eval_dir/pairs.csv`` (with
    ``one_shot``: the pairs converted from reference clips, ``ref_audio``, parallel or not); a
    missing file or no such pair is a SystemExit naming the file."""
    path = eval_dir / "pairs.csv"
    if not path.is_file():
        raise SystemExit(f"{path}: not found; give the folder `clsvc evaluate --out EVAL` wrote")
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["condition"] == condition
                and (r.get("ref_audio") if one_shot else r["parallel"] == "1")]
    if not rows:
        kind = "one-shot (reference-clip)" if one_shot else "parallel"
        hint = ("one-shot pairs come from `clsvc evaluate --unseen-pairs N`, condition unseen" if one_shot
                else "only ARCTIC-style corpora have them")
        raise SystemExit(f"{path}: no {kind} {condition} pairs ({hint})")
    return rows[:limit]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--eval", type=Path, required=True, help="a `clsvc evaluate --out` folder")
    ap.add_argument("--checkpoint", required=True, help="the model that run evaluated")
    ap.add_argument("--vocoder", default="auto", help="the vocoder that run used")
    ap.add_argument("--gv-max", type=float, default=None,
                    help="global-variance compensation of the decoded mels (default: the model's own)")
    ap.add_argument("--condition", default="seen")
    ap.add_argument("--limit", type=int, default=60, help="pairs to score (the first ones)")
    ap.add_argument("--trim-db", type=float, default=40.0, help="as the features' `clsvc preprocess --trim-db`")
    ap.add_argument("--target-code", action="store_true",
                    help="also convert with the target recording's own content code, aligned (ClsVC only)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True, help="JSON result (the Markdown table goes beside it)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    pairs = read_pairs(args.eval, args.condition, args.limit)
    import clsvc

    vc = clsvc.load(args.checkpoint, vocoder=args.vocoder, gv_max=args.gv_max)
    sr = vc.sample_rate
    kinds = KINDS + ((TARGET_CODE,) if args.target_code else ())
    if args.target_code and vc.system != "clsvc":
        raise SystemExit(f"--target-code: {args.checkpoint} is not a ClsVC model (system {vc.system}); the "
                         "rendering needs ClsVC's content code (leave --target-code out for this model)")
    scores: dict[str, list[float]] = {k: [] for k in kinds}
    for p in pairs:
        real = load_wav(p["target_audio"], vc.mel_cfg)
        target = trim_silence(real, args.trim_db, vc.mel_cfg)
        source = trim_silence(load_wav(p["source_audio"], vc.mel_cfg), args.trim_db, vc.mel_cfg)
        ref = vc.reference(target)  # the target's mel once, for both of its renderings
        src = vc.reference(source)  # the source's, for its conversions (as `Converter.convert` makes them)
        spk = vc.speaker_embedding(p["target_speaker"])
        renders = {"vocoded": vc.vocode(ref.mel),
                   "reconstructed": vc.vocode(vc.convert_mel(ref, spk)),
                   "converted": vc.vocode(vc.convert_mel(src, spk))}
        if args.target_code:
            chunk, vc.chunk_frames = vc.chunk_frames, len(src.mel)  # one piece: the code replaced is the whole source's
            try:
                with content_replaced(vc.model, target_code(vc, src.mel, ref.mel)):
                    renders[TARGET_CODE] = vc.vocode(vc.convert_mel(src, spk))
            finally:
                vc.chunk_frames = chunk
        for k, wav in renders.items():
            scores[k].append(audio_mcd(real, wav, sr))
    stats = {k: mean_ci(v) for k, v in scores.items()}
    steps = {"decoder (reconstructed − vocoded)": np.subtract(scores["reconstructed"], scores["vocoded"]),
             "voice change (converted − reconstructed)": np.subtract(scores["converted"], scores["reconstructed"])}
    if args.target_code:
        steps["the source's code (converted − target code)"] = np.subtract(scores["converted"], scores[TARGET_CODE])
    step_stats = {k: mean_ci(v.tolist()) for k, v in steps.items()}
    n = len(scores["converted"])
    md = [f"Audio MCD against the real target, {n} parallel {args.condition} pairs of {args.eval}; "
          f"`{args.checkpoint}`, vocoder {vc.vocoder_name}", "",
          "| rendering of the target sentence | MCD audio (dB) |", "|---|---|"]
    md += [f"| {k} | {s.mean:.2f} ± {s.ci:.2f} |" for k, s in stats.items()]
    md += [f"| step: {k} | {s.mean:+.2f} ± {s.ci:.2f} |" for k, s in step_stats.items()]
    write_result(args.out, {"eval": str(args.eval), "checkpoint": args.checkpoint, "vocoder": vc.vocoder_name,
                            "condition": args.condition, "pairs": n,
                            "mcd_audio": {k: {"mean": s.mean, "ci95": s.ci} for k, s in stats.items()},
                            "steps": {k: {"mean": s.mean, "ci95": s.ci} for k, s in step_stats.items()},
                            "per_pair": scores}, md)


if __name__ == "__main__":
    main()
