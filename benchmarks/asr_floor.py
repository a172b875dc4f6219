#!/usr/bin/env python3
"""How well pocketsphinx transcribes the shared parallel TTS corpus *before* any conversion.

The WER of converted speech only means something relative to this floor. Scores raw (unvocoded)
held-out utterances (sentences 051-059, odd numbers) of a few voices against ``sentences.txt``
and writes ``asr_floor.json`` next to ``--out``.

    python benchmarks/asr_floor.py --out /work/bench/asr_floor.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "tts-parallel"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    p.add_argument("--voices", default="v00,v05,v10,v15,v21,v22")
    p.add_argument("--out", type=Path, default=Path("asr_floor.json"))
    a = p.parse_args(argv)
    if not a.corpus.is_dir():
        print(f"skipped: corpus {a.corpus} not found")
        return 0
    from clsvc.audio import load_wav
    from clsvc.config import MelConfig
    from clsvc.evaluation.asr import error_rates, transcribe

    sents = (a.corpus / "sentences.txt").read_text().splitlines()
    rates = [error_rates(sents[i - 1], transcribe(load_wav(a.corpus / v / f"{v}_{i:03d}.flac", MelConfig())))
             for v in a.voices.split(",") for i in range(51, 60, 2)]
    result = {"utterances": len(rates), "wer": float(np.mean([r["wer"] for r in rates])),
              "cer": float(np.mean([r["cer"] for r in rates]))}
    a.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"raw audio, {result['utterances']} utterances: WER {result['wer']:.3f}, CER {result['cer']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
