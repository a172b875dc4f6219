"""Write the real speech clips that ship with ``clsvc demo`` (src/clsvc/resources/demo/).

Reads ``../shared/corpus`` (never run in CI; the clips it wrote are committed):

* three LibriSpeech test-other speakers, never trained on by any shipped model: one short source
  clip each of 2609 (M) and 1998 (F), and three reference clips of 2033 (M), the one-shot target;
* one held-out ARCTIC clip (``arctic_b0490``-``b0539``, never trained on) of each of bdl, slt and
  cathy: the similarity reference of that voice; bdl's and slt's are sources too (bdl -> slt ...).

Each clip is read as 16 kHz mono, trimmed of leading and trailing silence (quieter than
``TOP_DB`` below its peak, keeping ``MARGIN_S`` on each side), peak-normalised to ``PEAK`` and
written as 16-bit FLAC, together with ``clips.json`` (role, speaker, gender, source file and
transcript of each clip) and ``CREDITS.md``. Transcripts come from ARCTIC's ``prompts.txt`` and,
for LibriSpeech, from ``SPK-CHAPTER.trans.txt`` files found under the corpus or under
``--librispeech-trans`` (a LibriSpeech ``test-other`` folder); without them a LibriSpeech
transcript is left null.

    .venv/bin/python scripts/make_demo_clips.py [--corpus ../shared/corpus] [--out src/clsvc/resources/demo]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import soundfile as sf

from clsvc.audio import load_wav
from clsvc.config import MelConfig
from clsvc.errors import ClsvcError
from clsvc.files import atomic_path, atomic_write_text

REPO = Path(__file__).resolve().parents[1]
RATE = 16000
TOP_DB = 40.0  # dB below the clip's peak counted as silence at either end
MARGIN_S = 0.1  # seconds of the trimmed silence kept at each end
PEAK = 0.9  # peak after normalisation (-0.9 dBFS)
MIN_S, MAX_S = 2.5, 5.0  # accepted length of every clip after trimming

LIBRI = "librispeech/test-other-sample"
# (speaker label, role, corpus speaker id, utterance ids)
LIBRISPEECH = [
    ("ls2609", "source", "2609", ["2609-156975-0003"]),
    ("ls1998", "source", "1998", ["1998-15444-0008"]),
    ("ls2033", "one-shot", "2033", ["2033-164914-0004", "2033-164914-0005", "2033-164914-0007"]),
]
# ARCTIC voice -> held-out utterance (different prompts, so that no two voices say the same words)
ARCTIC = {"bdl": "arctic_b0503", "slt": "arctic_b0523", "cathy": "arctic_b0512"}
ARCTIC_SOURCES = ("bdl", "slt")  # voices whose clip is also converted into the others

CREDITS = """# Demo clips: sources and licences

The clips in this folder are short excerpts of two public corpora, resampled to 16 kHz mono,
trimmed of leading and trailing silence and peak-normalised (`scripts/make_demo_clips.py` made
them; `clips.json` lists each clip's speaker, source file and transcript). None of them is in the
training data of the shipped `arctic` model (ARCTIC `arctic_a` prompts and LibriSpeech
train-clean-100): the ARCTIC clips are held-out `arctic_b` prompts, the LibriSpeech readers are from
test-other.

* `ls*.flac`: **LibriSpeech** ASR corpus, test-other subset (speakers 2609, 1998 and 2033), by
  Vassil Panayotov, Guoguo Chen, Daniel Povey and Sanjeev Khudanpur ("LibriSpeech: an ASR corpus
  based on public domain audio books", ICASSP 2015), from LibriVox recordings. Licensed under
  Creative Commons Attribution 4.0 International (CC BY 4.0,
  <https://creativecommons.org/licenses/by/4.0/>); <https://www.openslr.org/12>. Changes: cut,
  resampled, trimmed, normalised and re-encoded as described above.
* `bdl_*.flac`, `slt_*.flac`: **CMU ARCTIC** databases (cmu_us_bdl_arctic and cmu_us_slt_arctic
  0.95) by John Kominek and Alan W Black ("The CMU Arctic speech databases", 5th ISCA Speech
  Synthesis Workshop, 2004), Language Technologies Institute, Carnegie Mellon University
  (<http://www.festvox.org/cmu_arctic/>). **Modified** here: cut, trimmed, normalised and
  re-encoded as described above. Distributed under the CMU ARCTIC licence (the `COPYING` file of
  the ARCTIC release), whose notice is kept here as it requires:

  ```
  Language Technologies Institute
  Carnegie Mellon University
  Copyright (c) 2003
  All Rights Reserved.

  Permission is hereby granted, free of charge, to use and distribute
  this software and its documentation without restriction, including
  without limitation the rights to use, copy, modify, merge, publish,
  distribute, sublicense, and/or sell copies of this work, and to
  permit persons to whom this work is furnished to do so, subject to
  the following conditions:
   1. The code must retain the above copyright notice, this list of
      conditions and the following disclaimer.
   2. Any modifications must be clearly marked as such.
   3. Original authors' names are not deleted.
   4. The authors' names are not used to endorse or promote products
      derived from this software without specific prior written
      permission.

  CARNEGIE MELLON UNIVERSITY AND THE CONTRIBUTORS TO THIS WORK
  DISCLAIM ALL WARRANTIES WITH REGARD TO THIS SOFTWARE, INCLUDING
  ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND FITNESS, IN NO EVENT
  SHALL CARNEGIE MELLON UNIVERSITY NOR THE CONTRIBUTORS BE LIABLE
  FOR ANY SPECIAL, INDIRECT OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
  WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN
  AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING
  OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.
  ```
* `cathy_*.flac`: a recording of the CMU ARCTIC prompts by a U.S. English speaker
  (dataset-voice-cathy), dedicated to the public domain under CC0 1.0
  (<https://creativecommons.org/publicdomain/zero/1.0/>). The prompt texts are CMU ARCTIC's.
"""


def librispeech_transcripts(*roots: Path) -> dict[str, str]:
    """Utterance id -> transcript from every ``*.trans.txt`` under ``roots`` (missing roots skipped)."""
    out: dict[str, str] = {}
    for root in roots:
        if not root.is_dir():
            continue
        for f in sorted(root.rglob("*.trans.txt")):
            for line in f.read_text(encoding="utf-8").splitlines():
                utt, _, text = line.strip().partition(" ")
                if utt:
                    out[utt] = text.strip()
    return out


def arctic_prompts(path: Path) -> dict[str, str]:
    """ARCTIC utterance id -> prompt text (``prompts.txt``: ``id<TAB>text`` per line)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        utt, _, text = line.partition("\t")
        if utt.strip():
            out[utt.strip()] = text.strip()
    return out


def speaker_genders(path: Path) -> dict[str, str]:
    """LibriSpeech reader id -> ``M``/``F`` from ``SPEAKERS.TXT`` (``ID | SEX | ...`` rows)."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(";"):
            continue
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 2 and parts[0].isdigit():
            out[parts[0]] = parts[1]
    return out


def clip(src: Path) -> np.ndarray:
    """``src`` as 16 kHz mono float32, trimmed (keeping ``MARGIN_S``) and peak-normalised."""
    wav = load_wav(src, MelConfig(sample_rate=RATE))
    _, (start, end) = librosa.effects.trim(wav, top_db=TOP_DB, frame_length=1024, hop_length=256)
    margin = int(MARGIN_S * RATE)
    wav = wav[max(0, start - margin):min(len(wav), end + margin)]
    seconds = len(wav) / RATE
    if not MIN_S <= seconds <= MAX_S:
        raise ClsvcError(f"{src}: {seconds:.2f} s after trimming, outside {MIN_S}-{MAX_S} s; pick another clip")
    return (wav * (PEAK / float(np.max(np.abs(wav))))).astype(np.float32)


def write_flac(path: Path, wav: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.flac") as tmp:
        sf.write(tmp, wav, RATE, subtype="PCM_16", format="FLAC")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus")
    p.add_argument("--out", type=Path, default=REPO / "src" / "clsvc" / "resources" / "demo")
    p.add_argument("--librispeech-trans", type=Path, help="folder holding LibriSpeech *.trans.txt files")
    a = p.parse_args(argv)
    corpus: Path = a.corpus
    out: Path = a.out
    out.mkdir(parents=True, exist_ok=True)
    genders = speaker_genders(corpus / LIBRI / "SPEAKERS.TXT")
    trans = librispeech_transcripts(corpus / "librispeech", *([a.librispeech_trans] if a.librispeech_trans else []))
    prompts = arctic_prompts(corpus / "arctic" / "prompts.txt")
    arctic_gender = {}
    for line in (corpus / "arctic" / "speakers.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        spk, gender, *_ = line.split("\t")
        arctic_gender[spk] = gender

    rows: list[dict[str, Any]] = []
    for label, role, spk, utts in LIBRISPEECH:
        for utt in utts:
            src = corpus / LIBRI / spk / f"{utt}.flac"
            wav = clip(src)
            name = f"{label}_{utt.rsplit('-', 1)[1]}.flac"
            write_flac(out / name, wav)
            rows.append({"file": name, "speaker": label, "roles": [role], "gender": genders[spk],
                         "corpus": "LibriSpeech test-other (CC BY 4.0)", "corpus_speaker": spk,
                         "source_file": f"{LIBRI}/{spk}/{utt}.flac", "transcript": trans.get(utt),
                         "seconds": round(len(wav) / RATE, 2)})
    for spk, utt in ARCTIC.items():
        src = corpus / "arctic" / spk / f"{utt}.flac"
        wav = clip(src)
        name = f"{spk}_{utt}.flac"
        write_flac(out / name, wav)
        licence = "CC0 1.0" if spk == "cathy" else "CMU ARCTIC licence"
        rows.append({"file": name, "speaker": spk, "roles": ["voice"] + (["source"] if spk in ARCTIC_SOURCES else []),
                     "gender": arctic_gender[spk], "corpus": f"ARCTIC ({licence})", "corpus_speaker": spk,
                     "source_file": f"arctic/{spk}/{utt}.flac", "transcript": prompts[utt],
                     "seconds": round(len(wav) / RATE, 2)})
    missing = [str(r["file"]) for r in rows if r["transcript"] is None]
    doc = {
        "about": "Clips of clsvc demo. roles: source = converted into every target voice; voice = the "
                 "similarity reference of an ARCTIC voice (a shipped model's training speaker, picked by name); "
                 "one-shot = the reference clips of the unseen target voice (one-shot conversion). "
                 "See CREDITS.md for sources and licences.",
        "sample_rate": RATE,
        "transcripts_missing": ("LibriSpeech *.trans.txt files were not found next to the corpus used; rerun with "
                                "--librispeech-trans to fill them") if missing else "",
        "clips": rows,
    }
    atomic_write_text(out / "clips.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "CREDITS.md", CREDITS)
    total = sum(f.stat().st_size for f in out.glob("*.flac"))
    print(f"wrote {len(rows)} clips ({total / 1e6:.2f} MB of FLAC), clips.json and CREDITS.md to {out}"
          + (f"; transcripts missing for {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
