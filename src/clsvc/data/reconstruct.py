"""A feature folder whose mels are a voice-conversion model's own reconstructions.

A neural vocoder trained on real mels meets a VC model's *converted* mels at inference, which are
smoother than real ones. :func:`reconstruct_features` writes a copy of a feature folder made by
``clsvc preprocess --keep-wav`` in which every utterance's mel ``X.npy`` (T, n_mels) is replaced
by the model's reconstruction of it (for ClsVC D(C_x, S_x / |S_x|): its content decoded with its
own voice), while its aligned waveform ``X.wav.npy`` stays the recording: a vocoder fine-tuned on
that folder (``clsvc train --init VOCODER``) learns to map the model's mels to real audio.

The layout is the source folder's: ``manifest.tsv`` with the same rows (speakers, splits, frame
counts, feature paths, sources), ``features.json`` with its mel definition and preprocessing
settings plus a ``reconstruct`` record (source folder, model file, its weights' SHA-256), and
``feats/SPK/UTT.npy`` + ``UTT.wav.npy``. The waveforms are hard links to the source's files
where the file system allows it (else copies).

The model is given as a callable (the CLI builds it from a checkpoint with
:class:`clsvc.inference.Converter`), so this module needs nothing above the data layer.

Faults: everything is checked before anything is written (the features' mel definition against
the model's, every waveform present, the output folder). Each file is written atomically and an
utterance's waveform before its mel, so a run killed at any point resumes where it stopped when
run again (finished files are skipped; the manifest is written last). An output folder holding
anything but this job (same source folder, same weights) is refused unless ``force``; with
``force`` every file is made again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import MelConfig
from ..errors import ClsvcError
from ..files import atomic_path, atomic_write_text, write_error
from .manifest import (
    FEATURES_INFO,
    MANIFEST,
    Entry,
    feature_path,
    feature_problem,
    features_n_mels,
    load_aligned_wav,
    load_feature,
    read_features_info,
    read_features_mel,
    read_manifest,
    write_manifest,
)
from .preprocess import wav_path

RECORD = "reconstruct"  # the key of the job's record in the output's features.json

# (mel (T, n_mels) float32 in [0, 1], waveform (T * hop,) float32 in [-1, 1] the mel was made
# from, the utterance's manifest row) -> the model's reconstruction (T, n_mels) in [0, 1].
Reconstruct = Callable[[np.ndarray, np.ndarray, Entry], np.ndarray]

# link() refused by the file system or by policy (another disk, no hard links, protected links):
# the waveform is copied instead.
_NO_LINK = frozenset(getattr(errno, n) for n in ("EXDEV", "EPERM", "ENOTSUP", "EOPNOTSUPP", "EMLINK", "ENOSYS")
                     if hasattr(errno, n))


@dataclass
class Reconstructed:
    """What :func:`reconstruct_features` did: utterances made now and skipped as already made
    (a resumed run), and how their waveforms got there (hard links or copies)."""

    out: Path
    made: int = 0
    skipped: int = 0
    linked: int = 0
    copied: int = 0


def reconstruct_features(data: str | Path, out: str | Path, reconstruct: Reconstruct, mel: MelConfig,
                         model: dict[str, Any], force: bool = False, progress: bool = True,
                         ) -> Reconstructed:
    """Write ``out``: the feature folder ``data`` with every mel replaced by ``reconstruct``'s
    output (see the module docstring); returns what was done.

    ``mel``: the model's mel definition (features made with another are refused); ``model``:
    what identifies the model (JSON values), stored in ``out/features.json``: at least
    ``checkpoint`` (its path) and ``weights_sha256``, which a rerun compares to resume.
    ``force``: write into a folder holding something else, and make every file again.
    """
    from tqdm import tqdm

    data, out = Path(data), Path(out)
    where = model.get("checkpoint", "the model")
    entries = _check_source(data, mel, where)
    record = {"data": str(data.resolve()), **model}
    _check_output(data, out, record, force)
    n_mels, hop = mel.n_mels, mel.hop_length
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ClsvcError(f"{out}: cannot create the output folder ({err.strerror}); choose a writable --out") from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise ClsvcError(f"{out}: folder is not writable; choose another --out")
    fresh = force or not _same_job(_record(out), record)
    if fresh and any(out.iterdir()):  # nothing there may pass for this job's work: another job's files go
        for e in entries:
            for p in (out / e.feature, wav_path(out / e.feature)):
                with contextlib.suppress(FileNotFoundError):
                    p.unlink()
    with contextlib.suppress(FileNotFoundError):
        (out / MANIFEST).unlink()  # written last: a folder without one is unfinished
    info = read_features_info(data) or {}
    atomic_write_text(out / FEATURES_INFO, json.dumps(
        {"mel": asdict(mel), "preprocess": info.get("preprocess", {}), RECORD: record}, indent=2) + "\n")

    done = Reconstructed(out)
    with tqdm(entries, desc="reconstruct", unit="utt", disable=not progress, dynamic_ncols=True) as bar:
        for e in bar:
            dst = out / e.feature
            if not fresh and _finished(dst, n_mels, e.frames):
                done.skipped += 1
                continue
            source = load_feature(data, e, n_mels)
            wav = load_aligned_wav(data, e, hop)
            dst.parent.mkdir(parents=True, exist_ok=True)
            # The waveform first: a mel without its waveform beside it is never taken as finished.
            if _link_or_copy(wav_path(feature_path(data, e)), wav_path(dst)):
                done.linked += 1
            else:
                done.copied += 1
            recon = _checked(reconstruct(source, wav.astype(np.float32) / 32767.0, e), source.shape, n_mels,
                             f"{where}: its reconstruction of {e.speaker}/{e.utt_id}")
            with atomic_path(dst, suffix=".npy") as tmp:
                np.save(tmp, recon)
            done.made += 1
    write_manifest(out, entries)
    return done


# ----------------------------------------------------------------------------------------------
# checks before anything is written


def _check_source(data: Path, mel: MelConfig, where: str) -> list[Entry]:
    """The manifest rows of ``data``, once its mel definition is ``mel`` and every utterance has
    its waveform (``--keep-wav``)."""
    entries = read_manifest(data)
    have = read_features_mel(data)
    diff = ", ".join(mel.differences(have)) if have is not None else ""
    if diff:  # the test of check_features_mel, in this command's words
        raise ClsvcError(f"{where}: the model was trained on another mel definition than the features in {data} "
                         f"(differs in {diff}); pass features preprocessed with the model's config, or a model "
                         "trained on these features")
    if have is None and features_n_mels(data) != mel.n_mels:  # written before features.json recorded it
        raise ClsvcError(f"{data}: features of {features_n_mels(data)} mel bands, {where} takes {mel.n_mels}; "
                         "pass features preprocessed with the model's config")
    for e in entries:
        w = wav_path(feature_path(data, e))
        if not w.is_file():
            raise ClsvcError(f"{w}: no waveform beside the features; a vocoder learns from them: re-run "
                             f"`clsvc preprocess` with --keep-wav into {data} (finished files are kept)")
    return entries


def _record(out: Path) -> dict[str, Any] | None:
    """The job record of an output folder (None: none, or not a reconstruction)."""
    try:
        info = read_features_info(out)
    except ClsvcError:
        return None
    rec = (info or {}).get(RECORD)
    return rec if isinstance(rec, dict) else None


def _same_job(have: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """Whether a folder's record is this job's: the same source folder and the same weights (the
    model file may have moved since)."""
    return have is not None and all(have.get(k) == record.get(k) for k in ("data", "weights_sha256"))


def _check_output(data: Path, out: Path, record: dict[str, Any], force: bool) -> None:
    """Refuse an ``out`` that is the source folder, a file, or (without ``force``) a folder
    holding anything but this job's files."""
    if out.exists() and not out.is_dir():
        raise ClsvcError(f"{out}: is a file, not a folder; choose another --out")
    if out.is_dir() and data.is_dir() and os.path.samefile(out, data):
        raise ClsvcError(f"{out}: is the source feature folder; choose another --out (the source is kept)")
    if force or not out.is_dir() or not any(out.iterdir()):
        return
    have = _record(out)
    if _same_job(have, record):
        return  # resume it
    if have is None:
        what = "other files"
    elif have.get("data") != record["data"]:
        what = f"reconstructions of {have.get('data')}"
    else:
        what = f"reconstructions by other weights ({have.get('checkpoint')})"
    raise ClsvcError(f"{out}: already holds {what}; pass --force to overwrite it or choose another --out")


# ----------------------------------------------------------------------------------------------
# files


def _finished(dst: Path, n_mels: int, frames: int) -> bool:
    """Whether an earlier run of this job left ``dst`` complete (a valid mel of ``frames``
    frames, its waveform beside it)."""
    if not dst.is_file() or not wav_path(dst).is_file():
        return False
    try:
        mel = np.load(dst, allow_pickle=False)
    except Exception:
        return False
    return not feature_problem(mel, n_mels, frames)


def _checked(recon: Any, shape: tuple[int, ...], n_mels: int, what: str) -> np.ndarray:
    """The model's output as float32 (T, n_mels) in [0, 1], of the source's shape exactly."""
    recon = np.asarray(recon, dtype=np.float32)
    if recon.shape != shape:
        raise ClsvcError(f"{what} has shape {recon.shape}, the source mel {shape}; the model must keep the "
                         "frame count (a bug in the model's convert)")
    problem = feature_problem(np.clip(recon, 0.0, 1.0), n_mels, shape[0])
    if problem:
        raise ClsvcError(f"{what} {problem}; the model's weights are unusable, pass another checkpoint")
    return np.clip(recon, 0.0, 1.0)


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Put ``src`` at ``dst`` atomically (replacing what is there): a hard link where the file
    system allows one (True), else a copy (False)."""
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.link.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise (write_error(dst, e, tmp) or e) from None
        with atomic_path(dst, suffix=".npy") as part:
            shutil.copyfile(src, part)
        return False
    try:
        os.replace(tmp, dst)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise (write_error(dst, e, tmp) or e) from None
    return True
