"""The preprocessed-feature folder: ``features.json`` + ``manifest.tsv`` + ``feats/SPK/UTT.npy``.

``features.json`` records the mel definition and preprocessing settings the features were made
with, so training and evaluation can refuse features that do not match their config.
``manifest.tsv`` has one row per utterance:

=========== ====================================================================
speaker     speaker name (folder name / corpus id)
gender      F, M or empty
utt_id      utterance id, unique per speaker
split       ``train``, ``val`` (held-out utterances of training speakers) or ``unseen``
frames      number of mel frames
feature     path of the ``(frames, n_mels)`` float32 .npy, relative to the folder
source      the audio file the features came from
transcript  text when the corpus has it, else empty
=========== ====================================================================
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..config import MelConfig, from_dict
from ..errors import ClsvcError
from ..files import atomic_path, atomic_write_text

MANIFEST = "manifest.tsv"
FEATURES_INFO = "features.json"


@dataclass
class Entry:
    """One row of ``manifest.tsv``: an utterance, its split and feature file (relative to the folder)."""
    speaker: str
    gender: str
    utt_id: str
    split: str
    frames: int
    feature: str
    source: str
    transcript: str = ""


def write_manifest(folder: Path, entries: list[Entry]) -> None:
    """Write ``manifest.tsv`` atomically."""
    names = [f.name for f in fields(Entry)]
    with atomic_path(folder / MANIFEST) as tmp, tmp.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(names)
        for e in entries:
            row = asdict(e)
            row["transcript"] = " ".join(str(row["transcript"]).split())  # no tabs/newlines
            w.writerow([row[n] for n in names])


def read_manifest(folder: str | Path) -> list[Entry]:
    """The rows of ``folder/manifest.tsv``; a missing or malformed file is a ClsvcError."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise ClsvcError(
            f"{folder}: no {MANIFEST} here; run `clsvc preprocess CORPUS --out {folder}` first"
        )
    entries = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f, delimiter="\t")
        for i, row in enumerate(reader, start=2):
            try:
                entries.append(Entry(
                    speaker=row["speaker"], gender=row.get("gender") or "", utt_id=row["utt_id"],
                    split=row["split"], frames=int(row["frames"]), feature=row["feature"],
                    source=row.get("source") or "", transcript=row.get("transcript") or "",
                ))
            except (KeyError, TypeError, ValueError):
                raise ClsvcError(
                    f"{path}: line {i} is malformed; re-run `clsvc preprocess` to rewrite it"
                ) from None
    return entries


def write_features_info(folder: Path, mel: MelConfig, settings: dict) -> None:
    """Record the mel definition the features were made with."""
    info = {"mel": asdict(mel), "preprocess": settings}
    atomic_write_text(folder / FEATURES_INFO, json.dumps(info, indent=2) + "\n")


def read_features_mel(folder: str | Path) -> MelConfig | None:
    """The mel definition of a feature folder (None for folders written before it was recorded)."""
    path = Path(folder) / FEATURES_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
        return from_dict(MelConfig, info["mel"], str(path))
    except (json.JSONDecodeError, KeyError):
        raise ClsvcError(f"{path}: unreadable; delete the folder and re-run `clsvc preprocess`") from None


def check_features_mel(folder: str | Path, mel: MelConfig) -> None:
    """Refuse features made with another mel definition than ``mel``."""
    have = read_features_mel(folder)
    if have is not None and have != mel:
        diff = [f.name for f in fields(MelConfig) if getattr(have, f.name) != getattr(mel, f.name)]
        raise ClsvcError(
            f"{folder}: features were computed with a different mel config (differs in "
            f"{', '.join(diff)}); re-run `clsvc preprocess` with this config or use the "
            "config the features were made with"
        )
