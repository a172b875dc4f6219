"""The preprocessed-feature folder: ``features.json`` + ``manifest.tsv`` + ``feats/SPK/UTT.npy``
(and beside each, ``UTT.wav.npy`` with ``clsvc preprocess --keep-wav``, ``UTT.f0.npy`` with ``--f0``,
``UTT.phones.npy`` with ``--phones``).

``features.json`` records the mel definition and preprocessing settings the features were made
with, so training and evaluation can refuse features that do not match their config.
``manifest.tsv`` has one row per utterance:

=========== ====================================================================
speaker     speaker name (folder name / corpus id)
gender      F, M or empty
utt_id      utterance id, unique per speaker
split       ``train``, ``val`` (held-out utterances of training speakers) or ``unseen``
frames      number of mel frames
feature     path of the ``(frames, n_mels)`` float32 .npy, relative to the folder (never absolute,
            never leaving the folder through ``..``)
source      the audio file the features came from
transcript  text when the corpus has it, else empty
=========== ====================================================================
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MelConfig, from_dict
from ..errors import ClsvcError
from ..files import atomic_path, atomic_write_text

MANIFEST = "manifest.tsv"
FEATURES_INFO = "features.json"
DEFAULT_N_MELS = 80  # the mel bands of folders written before features.json recorded them


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


def norm_text(text: str) -> str:
    """A transcript reduced to lower-case words (letters, digits, apostrophes), one space apart."""
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def sentence_key(e: Entry) -> str:
    """What makes two utterances "the same sentence": the normalised transcript when known,
    else the utterance id without its speaker prefix (``p225_003`` -> ``003``)."""
    text = norm_text(e.transcript)
    if text:
        return "t:" + text
    return "u:" + re.sub(rf"^{re.escape(e.speaker)}[_-]?", "", e.utt_id)


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
            feature = entries[-1].feature
            if not is_inside(feature):
                raise ClsvcError(
                    f"{path}: line {i} names feature {feature!r}, outside {folder} (a manifest may only "
                    "name files inside its own folder); re-run `clsvc preprocess` to rewrite it"
                )
    return entries


def is_inside(feature: str) -> bool:
    """Whether the manifest path ``feature`` names a file inside the folder: relative and not
    climbing out with ``..``. (A lexical test: a symlink the folder's owner placed inside, e.g.
    ``feats`` moved to another disk, is theirs to make.)"""
    if not feature or os.path.isabs(feature) or Path(feature).is_absolute():
        return False
    norm = os.path.normpath(feature)
    return norm != "." and norm != ".." and not norm.startswith(".." + os.sep)


def feature_path(folder: str | Path, entry: Entry) -> Path:
    """The feature file of ``entry`` in ``folder``; a path leaving the folder is a ClsvcError."""
    if not is_inside(entry.feature):
        raise ClsvcError(
            f"{folder}: the row of {entry.speaker}/{entry.utt_id} names feature {entry.feature!r}, outside the "
            "folder; re-run `clsvc preprocess` to rewrite the manifest"
        )
    return Path(folder) / entry.feature


def feature_problem(mel: Any, n_mels: int, frames: int | None = None) -> str:
    """What is wrong with a loaded feature array ("" when nothing): it must be a 2-D float
    ``(frames, n_mels)`` array of finite values in [0, 1] (the feature scale), with ``frames``
    rows when given."""
    if not isinstance(mel, np.ndarray):
        return "not a single array (.npy)"
    if not np.issubdtype(mel.dtype, np.floating):
        return f"holds {mel.dtype} values, not float"
    if mel.ndim != 2:
        return f"has shape {mel.shape}, not (frames, {n_mels})"
    if mel.shape[1] != n_mels:
        return f"has {mel.shape[1]} mel bands, the features' config has {n_mels}"
    if mel.shape[0] == 0:
        return "has no frames"
    if frames is not None and mel.shape[0] != frames:
        return f"has {mel.shape[0]} frames, the manifest says {frames}"
    finite = np.isfinite(mel)
    if not finite.all():
        return f"holds {int(mel.size - finite.sum())} NaN/inf value(s)"
    lo, hi = float(mel.min()), float(mel.max())
    if lo < 0.0 or hi > 1.0:
        return f"has values in [{lo:.3g}, {hi:.3g}], outside the feature scale [0, 1]"
    return ""


def load_feature(folder: str | Path, entry: Entry, n_mels: int) -> np.ndarray:
    """The validated float32 mel ``(frames, n_mels)`` of ``entry``; a missing, unreadable or
    malformed file (wrong shape or frame count, NaN/inf, values outside [0, 1]) is a one-line
    ClsvcError naming the file."""
    path = feature_path(folder, entry)
    try:
        mel = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise ClsvcError(
            f"{path}: feature file missing or corrupt; re-run `clsvc preprocess` on the corpus"
        ) from None
    problem = feature_problem(mel, n_mels, entry.frames)
    if problem:
        raise ClsvcError(f"{path}: feature file {problem}; re-run `clsvc preprocess` on the corpus")
    return mel.astype(np.float32, copy=False)


def write_features_info(folder: Path, mel: MelConfig, settings: dict) -> None:
    """Record the mel definition the features were made with."""
    info = {"mel": asdict(mel), "preprocess": settings}
    atomic_write_text(folder / FEATURES_INFO, json.dumps(info, indent=2) + "\n")


def read_features_info(folder: str | Path) -> dict[str, Any] | None:
    """The whole ``features.json`` of a feature folder (None when there is none)."""
    path = Path(folder) / FEATURES_INFO
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        info = None
    if not isinstance(info, dict):
        raise ClsvcError(f"{path}: unreadable; delete the folder and re-run `clsvc preprocess`")
    return info


def read_features_mel(folder: str | Path) -> MelConfig | None:
    """The mel definition of a feature folder (None for folders written before it was recorded)."""
    info = read_features_info(folder)
    if info is None:
        return None
    path = Path(folder) / FEATURES_INFO
    if not isinstance(info.get("mel"), dict):
        raise ClsvcError(f"{path}: unreadable; delete the folder and re-run `clsvc preprocess`")
    return from_dict(MelConfig, info["mel"], str(path))


def load_aligned_wav(folder: str | Path, entry: Entry, hop: int) -> np.ndarray:
    """The int16 waveform kept beside ``entry``'s features by ``clsvc preprocess --keep-wav``
    (``frames * hop`` samples); missing or malformed is a one-line ClsvcError."""
    feature = feature_path(folder, entry)
    path = feature.with_name(feature.stem + ".wav.npy")
    if not path.is_file():
        raise ClsvcError(f"{path}: no waveform beside the features; this model learns audio: re-run "
                         "`clsvc preprocess` with --keep-wav into the same --out (finished files are kept)")
    try:
        wav = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise ClsvcError(f"{path}: waveform file unreadable; re-run `clsvc preprocess --keep-wav`") from None
    if wav.dtype != np.int16 or wav.ndim != 1 or len(wav) != entry.frames * hop:
        raise ClsvcError(f"{path}: waveform file is not {entry.frames * hop} int16 samples; "
                         "re-run `clsvc preprocess --keep-wav`")
    return wav


def f0_path(feature: Path) -> Path:
    """Where the F0 contour of feature file ``X.npy`` is kept (``clsvc preprocess --f0``): ``X.f0.npy``."""
    return feature.with_name(feature.stem + ".f0.npy")


def _load_beside(path: Path, what: str, flag: str, missing: str, alternative: str = "") -> object:
    """The array ``np.load`` reads from ``path``, a file ``clsvc preprocess FLAG`` keeps beside a
    feature file; missing (``missing``, then the fix and ``alternative``) or unreadable is a
    one-line ClsvcError naming it. The caller checks the array's shape and values."""
    if not path.is_file():
        raise ClsvcError(f"{path}: {missing}: re-run `clsvc preprocess` with {flag} into the same --out "
                         f"(utterances that have theirs are kept){alternative}")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError):
        raise ClsvcError(f"{path}: {what} file unreadable; re-run `clsvc preprocess {flag}`") from None


def load_f0(folder: str | Path, entry: Entry) -> np.ndarray:
    """The F0 contour (frames,) float32 in Hz (0 = unvoiced) kept beside ``entry``'s features by
    ``clsvc preprocess --f0``; missing or malformed (not ``frames`` finite values >= 0) is a
    one-line ClsvcError naming the file."""
    path = f0_path(feature_path(folder, entry))
    f0 = _load_beside(path, "F0", "--f0", "no F0 contour beside the features; this model is conditioned on "
                      "pitch (model.f0_condition)")
    if (not isinstance(f0, np.ndarray) or not np.issubdtype(f0.dtype, np.floating) or f0.shape != (entry.frames,)
            or not np.isfinite(f0).all() or (f0 < 0).any()):
        raise ClsvcError(f"{path}: F0 file is not {entry.frames} finite values >= 0 (Hz, one per frame); "
                         "re-run `clsvc preprocess --f0`")
    return f0.astype(np.float32, copy=False)


def phones_path(feature: Path) -> Path:
    """Where the phone labels of feature file ``X.npy`` are kept (``clsvc preprocess --phones``):
    ``X.phones.npy``."""
    return feature.with_name(feature.stem + ".phones.npy")


def load_phones(folder: str | Path, entry: Entry, n_phones: int) -> np.ndarray:
    """The phone labels (frames,) int16 kept beside ``entry``'s features by ``clsvc preprocess
    --phones``: an index below ``n_phones`` per frame, -1 where unknown; missing or malformed is
    a one-line ClsvcError naming the file."""
    path = phones_path(feature_path(folder, entry))
    phones = _load_beside(path, "phone", "--phones", "no phone labels beside the features; this training "
                          "supervises the content code with phones (loss.phone)", ", or set loss.phone=0")
    if (not isinstance(phones, np.ndarray) or not np.issubdtype(phones.dtype, np.integer)
            or phones.shape != (entry.frames,) or (phones < -1).any() or (phones >= n_phones).any()):
        raise ClsvcError(f"{path}: phone file is not {entry.frames} integers in [-1, {n_phones}) (one per frame); "
                         "re-run `clsvc preprocess --phones`")
    return phones.astype(np.int64, copy=False)


def features_n_mels(folder: str | Path) -> int:
    """The mel bands of the features in ``folder`` (its recorded config, else the default 80)."""
    mel = read_features_mel(folder)
    return mel.n_mels if mel is not None else DEFAULT_N_MELS


def recorded_corpora(folder: str | Path) -> list[str] | None:
    """The (resolved) corpus folders whose features ``folder`` holds, as recorded by
    :func:`clsvc.data.preprocess` (None for folders written before they were recorded)."""
    settings = (read_features_info(folder) or {}).get("preprocess")
    corpora = settings.get("corpus") if isinstance(settings, dict) else None
    if isinstance(corpora, str):
        corpora = [corpora]
    if not isinstance(corpora, list) or not all(isinstance(c, str) for c in corpora):
        return None
    return corpora


def check_features_mel(folder: str | Path, mel: MelConfig) -> None:
    """Refuse features made with another mel definition than ``mel``."""
    have = read_features_mel(folder)
    diff = mel.differences(have) if have is not None else []
    if diff:
        raise ClsvcError(
            f"{folder}: features were computed with a different mel config (differs in "
            f"{', '.join(diff)}); re-run `clsvc preprocess` with this config or use the "
            "config the features were made with"
        )
