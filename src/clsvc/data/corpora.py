"""Corpus readers: turn a corpus folder into a list of :class:`Utterance` records.

Supported layouts (detected automatically by :func:`read_corpus` or chosen by name):

* ``vctk``: VCTK 0.80 ``wav48/pNNN/pNNN_MMM.wav`` or 0.92
  ``wav48_silence_trimmed/pNNN/pNNN_MMM_mic1.flac``; genders from ``speaker-info.txt``,
  transcripts from ``txt/pNNN/pNNN_MMM.txt``.
* ``librispeech``: ``SPK/CHAPTER/SPK-CHAPTER-NNNN.flac`` with ``SPK-CHAPTER.trans.txt``, or the
  flat ``SPK/*.flac``; genders from ``SPEAKERS.TXT``.
* ``folders``: any folder-per-speaker tree (``SPEAKER/**/*.wav|flac|ogg``). Genders from a
  ``speakers.tsv``/``voices.tsv`` with ``speaker`` and ``gender`` columns; transcripts from a
  side-car ``UTT.txt``/``UTT.lab`` or, for parallel corpora, from a root ``sentences.txt``
  whose line N is the text of every utterance named ``*_N`` (e.g. ``v03_007`` -> line 7).
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClsvcError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")


@dataclass
class Utterance:
    """One audio file of a corpus: speaker, id, path, gender and transcript when known."""

    speaker: str
    utt_id: str
    path: Path
    gender: str = ""  # "F", "M" or "" when unknown
    transcript: str = ""


def _audio_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
    )


# ----------------------------------------------------------------------------------------------
# speaker metadata


def _read_vctk_genders(path: Path) -> dict[str, str]:
    genders = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines()[1:]:
            parts = line.split()
            if len(parts) >= 3:
                spk = parts[0] if parts[0].startswith("p") or parts[0].startswith("s") else f"p{parts[0]}"
                # 0.80 has "ID AGE GENDER ...", 0.92 "ID AGE GENDER ..." with ID like p225.
                g = parts[2].upper()[:1]
                if g in ("F", "M"):
                    genders[spk] = g
    return genders


def _read_librispeech_genders(path: Path) -> dict[str, str]:
    genders = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(";"):
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 2 and parts[1].upper() in ("F", "M"):
                genders[parts[0]] = parts[1].upper()
    return genders


def _read_table_genders(root: Path) -> dict[str, str]:
    for name in ("speakers.tsv", "voices.tsv", "speakers.csv"):
        path = root / name
        if not path.is_file():
            continue
        delim = "," if path.suffix == ".csv" else "\t"
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f, delimiter=delim))
        out = {}
        for row in rows:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            spk = row.get("speaker") or row.get("id")
            g = (row.get("gender") or row.get("sex") or "").upper()[:1]
            if spk and g in ("F", "M"):
                out[spk] = g
        return out
    return {}


# ----------------------------------------------------------------------------------------------
# readers


def read_vctk(root: Path) -> list[Utterance]:
    """Utterances of a VCTK tree (0.80 `wav48/` or 0.92 `wav48_silence_trimmed/` layout)."""
    wav_root = None
    for name, pattern in (("wav48_silence_trimmed", "*_mic1.flac"), ("wav48", "*.wav")):
        if (root / name).is_dir():
            wav_root, pat = root / name, pattern
            break
    if wav_root is None:
        raise ClsvcError(
            f"{root}: not a VCTK folder (no wav48/ or wav48_silence_trimmed/); "
            "use --corpus folders for other layouts"
        )
    genders = _read_vctk_genders(root / "speaker-info.txt")
    utts = []
    for spk_dir in sorted(p for p in wav_root.iterdir() if p.is_dir()):
        spk = spk_dir.name
        for path in sorted(spk_dir.glob(pat)):
            utt_id = path.stem.replace("_mic1", "")
            txt = root / "txt" / spk / f"{utt_id}.txt"
            transcript = txt.read_text(errors="replace").strip() if txt.is_file() else ""
            utts.append(Utterance(spk, utt_id, path, genders.get(spk, ""), transcript))
    return utts


def read_librispeech(root: Path) -> list[Utterance]:
    """Utterances of a LibriSpeech tree (speaker/chapter/*.flac, or flat)."""
    genders = _read_librispeech_genders(root / "SPEAKERS.TXT")
    utts = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        spk = spk_dir.name
        transcripts: dict[str, str] = {}
        for trans in spk_dir.rglob("*.trans.txt"):
            for line in trans.read_text(errors="replace").splitlines():
                if " " in line:
                    key, text = line.split(" ", 1)
                    transcripts[key] = text.strip()
        for path in _audio_files(spk_dir):
            utts.append(
                Utterance(spk, path.stem, path, genders.get(spk, ""), transcripts.get(path.stem, ""))
            )
    return utts


def _read_prompts(root: Path) -> dict[str, str]:
    """``prompts.txt`` (``UTT_ID<TAB or spaces>text`` per line, as CMU ARCTIC's prompts): id -> text."""
    path = root / "prompts.txt"
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.strip().split(maxsplit=1)
        if len(parts) == 2:
            out[parts[0]] = parts[1].strip()
    return out


def read_folders(root: Path) -> list[Utterance]:
    """Utterances of a folder-per-speaker tree. Transcripts come from a side file per utterance
    (``UTT.txt`` / ``UTT.lab``), else from ``prompts.txt`` at the root (``UTT_ID text`` per line,
    shared by every speaker, as in ARCTIC), else from ``sentences.txt`` (line N is the text of
    every utterance named ``*_N``); genders from ``speakers.tsv`` (``speaker<TAB>gender``)."""
    genders = _read_table_genders(root)
    prompts = _read_prompts(root)
    sentences: list[str] = []
    if (root / "sentences.txt").is_file():
        sentences = (root / "sentences.txt").read_text(errors="replace").splitlines()
    utts = []
    for spk_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        spk = spk_dir.name
        for path in _audio_files(spk_dir):
            transcript = ""
            for ext in (".txt", ".lab"):
                side = path.with_suffix(ext)
                if side.is_file():
                    transcript = side.read_text(errors="replace").strip()
                    break
            if not transcript:
                transcript = prompts.get(path.stem, "")
            if not transcript and sentences:
                m = re.search(r"_(\d+)$", path.stem)
                if m and 1 <= int(m.group(1)) <= len(sentences):
                    transcript = sentences[int(m.group(1)) - 1].strip()
            utts.append(Utterance(spk, path.stem, path, genders.get(spk, ""), transcript))
    return utts


READERS = {"vctk": read_vctk, "librispeech": read_librispeech, "folders": read_folders}


def detect_corpus(root: Path) -> str:
    """The corpus kind of a folder: vctk, librispeech or folders."""
    if (root / "wav48").is_dir() or (root / "wav48_silence_trimmed").is_dir():
        return "vctk"
    if (root / "SPEAKERS.TXT").is_file():
        return "librispeech"
    return "folders"


def read_corpus(root: str | Path, kind: str = "auto") -> list[Utterance]:
    """All utterances of the corpus at ``root``; ``kind`` is auto, vctk, librispeech or folders."""
    root = Path(root)
    if not root.is_dir():
        raise ClsvcError(f"{root}: corpus folder not found; pass the folder that holds the speakers")
    if kind == "auto":
        kind = detect_corpus(root)
    if kind not in READERS:
        raise ClsvcError(f"corpus kind {kind!r} unknown; use one of auto, {', '.join(READERS)}")
    utts = READERS[kind](root)
    if not utts:
        raise ClsvcError(
            f"{root}: no audio found for a {kind} corpus; expected SPEAKER/*.wav|flac "
            "(one folder per speaker)"
        )
    seen: dict[tuple[str, str], Path] = {}
    for u in utts:
        key = (u.speaker, u.utt_id)
        if key in seen:
            raise ClsvcError(
                f"{u.path}: utterance id {u.utt_id} of speaker {u.speaker} also names {seen[key]}; "
                "rename one of them"
            )
        seen[key] = u.path
    return utts
