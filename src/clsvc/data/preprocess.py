"""Corpus -> features + manifest, in parallel, idempotent.

Every utterance is read with :func:`clsvc.audio.load_wav` (mono, 16 kHz), optionally trimmed of
leading/trailing silence, turned into the package mel and saved as ``feats/SPK/UTT.npy``. Files
already converted (same feature path present and complete) are skipped, so an interrupted run
resumes where it stopped. Unusable files (corrupt, silent, too short) are skipped and listed in
``skipped.tsv`` with the reason; they never stop the run.

The speaker split is decided here: ``unseen`` speakers are never trained on (one-shot tests);
of the remaining speakers, some utterances per speaker are held out as ``val``.
"""

from __future__ import annotations

import os
import random
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..audio import load_wav, trim_silence, wav_to_mel
from ..config import MelConfig
from ..errors import ClsvcError
from ..files import atomic_path
from .corpora import Utterance, read_corpus
from .manifest import Entry, check_features_mel, write_features_info, write_manifest


@dataclass
class SplitSpec:
    """How to split speakers and utterances.

    ``unseen``: explicit speaker names kept out of training; ``num_unseen``: that many more,
    drawn at random (seeded). ``holdout_per_speaker``: utterances per training speaker held out
    for validation (random, seeded); ``holdout_regex``: utterance ids matching it are held out.
    """

    unseen: list[str] = field(default_factory=list)
    num_unseen: int = 0
    holdout_per_speaker: int = 0
    holdout_regex: str = ""
    seed: int = 0


def assign_splits(utts: list[Utterance], spec: SplitSpec) -> dict[tuple[str, str], str]:
    """Split of every utterance (train, val or unseen) by the seeded :class:`SplitSpec`."""
    speakers = sorted({u.speaker for u in utts})
    unknown = sorted(set(spec.unseen) - set(speakers))
    if unknown:
        raise ClsvcError(
            f"unseen speaker(s) {', '.join(unknown)} are not in the corpus; "
            f"known speakers start with {', '.join(speakers[:8])}"
        )
    rng = random.Random(spec.seed)
    rest = [s for s in speakers if s not in spec.unseen]
    if spec.num_unseen > len(rest) - 1:
        raise ClsvcError(
            f"--num-unseen {spec.num_unseen} leaves no training speakers ({len(speakers)} in corpus)"
        )
    unseen = set(spec.unseen) | set(rng.sample(rest, spec.num_unseen))
    pattern = re.compile(spec.holdout_regex) if spec.holdout_regex else None
    by_spk: dict[str, list[Utterance]] = {}
    for u in utts:
        by_spk.setdefault(u.speaker, []).append(u)
    split = {}
    for spk in speakers:
        group = by_spk[spk]
        if spk in unseen:
            for u in group:
                split[(spk, u.utt_id)] = "unseen"
            continue
        held = set()
        if pattern is not None:
            held |= {u.utt_id for u in group if pattern.search(u.utt_id)}
        if spec.holdout_per_speaker > 0:
            # Keep at least one training utterance per speaker.
            candidates = sorted(u.utt_id for u in group if u.utt_id not in held)
            k = min(spec.holdout_per_speaker, max(0, len(candidates) - 1))
            held |= set(random.Random(f"{spec.seed}:{spk}").sample(candidates, k))
        for u in group:
            split[(spk, u.utt_id)] = "val" if u.utt_id in held else "train"
    return split


def _feature_relpath(u: Utterance) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", u.utt_id)
    return f"feats/{re.sub(r'[^A-Za-z0-9_.-]', '_', u.speaker)}/{safe}.npy"


def _existing_frames(path: Path, n_mels: int) -> int | None:
    try:
        arr = np.load(path, mmap_mode="r")
    except Exception:
        return None
    if arr.ndim == 2 and arr.shape[1] == n_mels and arr.shape[0] > 0:
        return int(arr.shape[0])
    return None


def _process_one(args: tuple) -> tuple[int, str]:
    """Worker: returns (frames, "") or (0, reason)."""
    src, dst, mel_cfg, trim_db, min_frames = args
    try:
        wav = load_wav(src, mel_cfg)
        wav = trim_silence(wav, trim_db, mel_cfg)
        mel = wav_to_mel(wav, mel_cfg)
        if mel.shape[0] < min_frames:
            return 0, f"only {mel.shape[0]} frames after trimming, need {min_frames}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(dst, suffix=".npy") as tmp:
            np.save(tmp, mel.astype(np.float32))
        return int(mel.shape[0]), ""
    except ClsvcError as e:
        return 0, str(e)
    except Exception as e:  # keep one bad file from stopping a corpus-wide job
        return 0, f"{src}: {type(e).__name__}: {e}"


def preprocess(
    corpus: str | Path | list[str | Path],
    out: str | Path,
    mel_cfg: MelConfig,
    kind: str = "auto",
    split: SplitSpec | None = None,
    trim_db: float = 40.0,
    min_frames: int = 32,
    jobs: int = 0,
    speakers: list[str] | None = None,
    progress: bool = True,
) -> list[Entry]:
    """Preprocess ``corpus`` (one folder or a list of folders, e.g. VCTK + LibriSpeech) into
    ``out``; returns the manifest entries that were written."""
    from tqdm import tqdm

    out = Path(out)
    split = split or SplitSpec()
    corpora = [Path(c) for c in corpus] if isinstance(corpus, (list, tuple)) else [Path(corpus)]
    utts: list[Utterance] = []
    owner: dict[str, Path] = {}
    for c in corpora:
        for u in read_corpus(c, kind):
            if owner.setdefault(u.speaker, c) != c:
                raise ClsvcError(
                    f"speaker {u.speaker} appears in both {owner[u.speaker]} and {c}; "
                    "preprocess them into separate folders or rename one speaker folder"
                )
            utts.append(u)
    if speakers:
        missing = sorted(set(speakers) - {u.speaker for u in utts})
        if missing:
            raise ClsvcError(f"--speakers: {', '.join(missing)} not found in {', '.join(map(str, corpora))}")
        utts = [u for u in utts if u.speaker in set(speakers)]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{out}: cannot create the output folder ({e.strerror}); choose a writable path") from None
    if not os.access(out, os.W_OK):
        raise ClsvcError(f"{out}: folder is not writable; choose another --out")
    check_features_mel(out, mel_cfg)
    assign_splits(utts, split)  # fail on bad speaker names before any work
    settings = {"corpus": [str(c.resolve()) for c in corpora], "kind": kind, "trim_db": trim_db,
                "min_frames": min_frames, "split": asdict(split)}
    write_features_info(out, mel_cfg, settings)

    todo, frames = [], {}
    for u in utts:
        dst = out / _feature_relpath(u)
        n = _existing_frames(dst, mel_cfg.n_mels) if dst.exists() else None
        if n is not None:
            frames[(u.speaker, u.utt_id)] = n
        else:
            todo.append(u)

    skipped: list[tuple[Utterance, str]] = []
    jobs = jobs or os.cpu_count() or 1
    args = [(u.path, out / _feature_relpath(u), mel_cfg, trim_db, min_frames) for u in todo]
    bar = tqdm(total=len(utts), initial=len(utts) - len(todo), desc="preprocess",
               unit="utt", disable=not progress, dynamic_ncols=True)
    if jobs == 1 or len(todo) < 8:
        results = map(_process_one, args)
        for u, (n, reason) in zip(todo, results, strict=True):
            _collect(u, n, reason, frames, skipped)
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for u, (n, reason) in zip(todo, pool.map(_process_one, args, chunksize=4), strict=True):
                _collect(u, n, reason, frames, skipped)
                bar.update(1)
    bar.close()

    usable = [u for u in utts if (u.speaker, u.utt_id) in frames]
    if not usable:
        raise ClsvcError(
            f"{', '.join(map(str, corpora))}: none of the {len(utts)} files could be used (first reason: "
            f"{skipped[0][1] if skipped else 'none'})"
        )
    # Split only the usable utterances, so a skipped file never takes a held-out slot.
    splits = assign_splits(usable, split)
    entries = [
        Entry(u.speaker, u.gender, u.utt_id, splits[(u.speaker, u.utt_id)],
              frames[(u.speaker, u.utt_id)], _feature_relpath(u), str(u.path), u.transcript)
        for u in usable
    ]
    write_manifest(out, entries)
    skip_path = out / "skipped.tsv"
    if skipped:
        lines = "".join(f"{u.path}\t{reason}\n" for u, reason in skipped)
        skip_path.write_text("source\treason\n" + lines)
    elif skip_path.exists():
        skip_path.unlink()
    return entries


def _collect(u, n, reason, frames, skipped):
    if n > 0:
        frames[(u.speaker, u.utt_id)] = n
    else:
        skipped.append((u, reason))
