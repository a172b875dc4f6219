"""Corpus -> features + manifest, in parallel, idempotent.

Every utterance is read with :func:`clsvc.audio.load_wav` (mono, 16 kHz), optionally trimmed of
leading/trailing silence, turned into the package mel and saved as ``feats/SPK/UTT.npy``. Files
already converted (same feature path present and complete) are skipped, so an interrupted run
resumes where it stopped. Unusable files (corrupt, silent, too short) are skipped and listed in
``skipped.tsv`` with the reason; they never stop the run.

The speaker split is decided here: ``unseen`` speakers are never trained on (one-shot tests);
of the remaining speakers, some utterances per speaker are held out as ``val``.

Faults: every argument is checked before anything is written. The folder records the corpus
folders it holds (``features.json``); preprocessing another corpus into it is refused unless
``merge=True`` (then the rows of both are kept). A corpus given twice, or overlapping folders,
yield each audio file once. Worker processes die with the parent, even when it is killed with
SIGKILL (Linux: ``PR_SET_PDEATHSIG``); on SIGINT/SIGTERM the parent stops them, keeps the
finished feature files (each written atomically) and raises KeyboardInterrupt without writing
the manifest, so the next run resumes.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import math
import multiprocessing
import os
import random
import re
import signal
import sys
import threading
from collections.abc import Generator, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..audio import load_wav, trim_silence, wav_to_mel
from ..config import MelConfig
from ..errors import ClsvcError
from ..files import WriteError, atomic_path, write_error
from ..pitch import frame_f0
from .align import phone_labels
from .corpora import Utterance, read_corpus
from .manifest import (
    MANIFEST,
    Entry,
    check_features_mel,
    f0_path,
    feature_problem,
    phones_path,
    read_manifest,
    recorded_corpora,
    write_features_info,
    write_manifest,
)


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

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Refuse values no split can be made with (one-line ClsvcError naming the flag)."""
        for name, flag in (("num_unseen", "--num-unseen"), ("holdout_per_speaker", "--holdout-per-speaker")):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ClsvcError(f"{flag} {value!r}: must be a whole number >= 0 (0 = none)")
        if not _is_int(self.seed):
            raise ClsvcError(f"--seed {self.seed!r}: must be a whole number")
        if not isinstance(self.holdout_regex, str):
            raise ClsvcError(f"--holdout-regex {self.holdout_regex!r}: must be a text pattern")
        if self.holdout_regex:
            try:
                re.compile(self.holdout_regex)
            except re.error as e:
                raise ClsvcError(
                    f"--holdout-regex {self.holdout_regex!r}: not a valid regular expression ({e}); "
                    r"fix the pattern (Python re syntax, e.g. '_00[1-5]$')"
                ) from None
        if isinstance(self.unseen, str) or not all(isinstance(s, str) for s in self.unseen):
            raise ClsvcError(f"--unseen {self.unseen!r}: must be a list of speaker names")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_settings(jobs: int, trim_db: float, min_frames: int) -> None:
    """Refuse worker counts and thresholds :func:`preprocess` cannot run with."""
    if not _is_int(jobs) or jobs < 0:
        raise ClsvcError(f"--jobs {jobs!r}: must be a whole number >= 0 (0 = all cores)")
    if not _is_int(min_frames) or min_frames < 1:
        raise ClsvcError(f"--min-frames {min_frames!r}: must be a whole number >= 1")
    if isinstance(trim_db, bool) or not isinstance(trim_db, (int, float)) or not math.isfinite(trim_db) \
            or trim_db < 0:
        raise ClsvcError(f"--trim-db {trim_db!r}: must be a number >= 0 (0 = no trimming)")


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


def wav_path(feature: Path) -> Path:
    """Where the aligned waveform of feature file ``X.npy`` is kept: ``X.wav.npy``."""
    return feature.with_name(feature.stem + ".wav.npy")


def aligned_pcm16(wav: np.ndarray, frames: int, hop: int) -> np.ndarray:
    """Waveform (samples,) in [-1, 1] -> int16 (frames * hop,): mel frame t (centred on sample
    t * hop) covers samples [t * hop, (t + 1) * hop); the tail is cut or zero-padded to match."""
    out = np.zeros(frames * hop, dtype=np.int16)
    n = min(len(wav), len(out))
    out[:n] = np.round(np.clip(wav[:n], -1.0, 1.0) * 32767.0).astype(np.int16)
    return out


def _feature_relpath(u: Utterance) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", u.utt_id)
    return f"feats/{re.sub(r'[^A-Za-z0-9_.-]', '_', u.speaker)}/{safe}.npy"


def _existing_frames(path: Path, n_mels: int) -> int | None:
    """Frames of a finished, valid feature file (None: missing or bad, so it is made again —
    the same test :class:`~clsvc.data.FeatureSet` applies, so its "re-run" advice works)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception:
        return None
    if feature_problem(arr, n_mels):
        return None
    return int(arr.shape[0])


def _any_known_phone(path: Path) -> bool:
    """True when the phone-label file ``path`` exists, reads, and knows at least one frame."""
    try:
        return bool((np.load(path, allow_pickle=False) >= 0).any())
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# worker processes: they die with the parent and never print a traceback when stopped

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_writing: Path | None = None  # the feature file a worker is making (its temporary files go on SIGTERM)


def _on_worker_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: remove the half-written temporary file of the current feature (named
    ``.NAME.*`` by :func:`clsvc.files.atomic_path`) and exit at once. Nothing is raised: an
    exception could be swallowed by a C callback (numba) and leave the worker running."""
    dst = _writing
    if dst is not None:
        for tmp in dst.parent.glob(f".{glob.escape(dst.name)}.*"):
            with contextlib.suppress(OSError):
                tmp.unlink()
    os._exit(128 + signum)


def _worker_init(parent: int, start_method: str) -> None:
    """Worker initializer: ignore Ctrl-C (it reaches the whole process group; the parent stops
    the pool), exit quietly on SIGTERM and, on Linux, get SIGTERM when the parent dies, even by
    SIGKILL, so no worker is left behind waiting for work."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_worker_sigterm)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    # The parent may have died before the death signal was armed: then it never comes.
    if start_method in ("fork", "spawn") and os.getppid() != parent:
        os._exit(1)


def _process_one(args: tuple) -> tuple[int, str]:
    """Worker: returns (frames, "") or (0, reason)."""
    global _writing
    src, dst, mel_cfg, trim_db, min_frames, keep_wav, f0, phones, phone_loop, transcript = args
    _writing = dst
    try:
        wav = load_wav(src, mel_cfg)
        wav = trim_silence(wav, trim_db, mel_cfg)
        mel = wav_to_mel(wav, mel_cfg)
        if mel.shape[0] < min_frames:
            return 0, f"only {mel.shape[0]} frames after trimming, need {min_frames}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        if keep_wav:  # written first: a feature file without its waveform is redone on resume
            _writing = wav_path(dst)
            with atomic_path(wav_path(dst), suffix=".npy") as tmp:
                np.save(tmp, aligned_pcm16(wav, len(mel), mel_cfg.hop_length))
            _writing = dst
        if f0:  # likewise: a feature file without its F0 contour is redone on resume
            _writing = f0_path(dst)
            with atomic_path(f0_path(dst), suffix=".npy") as tmp:
                np.save(tmp, frame_f0(wav, len(mel), mel_cfg))
            _writing = dst
        if phones:  # likewise; without a transcript (or an alignment) every frame is -1, unknown
            _writing = phones_path(dst)
            with atomic_path(phones_path(dst), suffix=".npy") as tmp:
                np.save(tmp, phone_labels(wav, transcript, len(mel), mel_cfg, loop=phone_loop))
            _writing = dst
        with atomic_path(dst, suffix=".npy") as tmp:
            np.save(tmp, mel.astype(np.float32))
        return int(mel.shape[0]), ""
    except WriteError:
        raise  # the output cannot take files (disk full, read-only): stop, it is not this file's fault
    except ClsvcError as e:
        return 0, str(e)
    except Exception as e:  # keep one bad file from stopping a corpus-wide job
        err = write_error(dst, e)
        if err is not None:
            raise err from None
        return 0, f"{src}: {type(e).__name__}: {e}"
    finally:
        _writing = None


@contextlib.contextmanager
def _sigterm_raises_interrupt() -> Iterator[None]:
    """In the main thread, turn SIGTERM into KeyboardInterrupt (once; a second one kills) so a
    stopped run cleans up like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel what has not started and terminate the workers now (not after the queue drains)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    # CPython's atexit hook wakes every executor it still lists, through a pipe that a broken
    # pool has closed: it would print "Bad file descriptor" after our one-line error. Unlist it.
    with contextlib.suppress(Exception):
        import concurrent.futures.process as cfp

        cfp._threads_wakeups.pop(pool._executor_manager_thread, None)


def _run_pool(args: list[tuple], jobs: int) -> Generator[tuple[int, str], None, None]:
    """``_process_one`` over ``args`` in ``jobs`` worker processes, results in order."""
    ctx = multiprocessing.get_context()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                               initargs=(os.getpid(), ctx.get_start_method()))
    try:
        yield from pool.map(_process_one, args, chunksize=4)
    except BrokenProcessPool:
        _stop_pool(pool)
        raise ClsvcError(
            "a preprocessing worker process died (killed, or out of memory?); the finished features "
            "are kept: re-run the same command to resume (with a smaller --jobs if memory is short)"
        ) from None
    except BaseException:
        _stop_pool(pool)
        raise
    pool.shutdown()


# ----------------------------------------------------------------------------------------------
# which corpora a feature folder holds


def _under(path: str | Path, root: Path) -> bool:
    return Path(path).resolve().is_relative_to(root)


def _check_owner(out: Path, roots: list[Path], merge: bool) -> tuple[list[str], list[Entry]]:
    """The corpus folders ``out`` already holds and the manifest rows to keep (those of other
    corpora, when merging). Features of another corpus are refused unless ``merge``."""
    have = recorded_corpora(out)
    ours = [str(r) for r in roots]
    manifest = out / MANIFEST
    if have is None:  # written before the corpora were recorded: judge by the manifest's sources
        try:
            rows = read_manifest(out) if manifest.is_file() else []
        except ClsvcError:
            if merge:
                raise
            rows = []  # unreadable: it is rewritten
        foreign = [str(Path(e.source).resolve().parent) for e in rows if not any(_under(e.source, r) for r in roots)]
        others = [os.path.commonpath(foreign)] if foreign else []
        have = ours + others
    else:
        others = [c for c in have if c not in ours]
    if not others:
        return ours, []
    if not merge:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ClsvcError(f"{out}: holds features of {shown}; choose another --out or pass --merge")
    kept = read_manifest(out) if manifest.is_file() else []
    return have + [c for c in ours if c not in have], kept


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
    merge: bool = False,
    keep_wav: bool = False,
    f0: bool = False,
    phones: bool = False,
    phone_loop: bool = False,
) -> list[Entry]:
    """Preprocess ``corpus`` (one folder or a list of folders, e.g. VCTK + LibriSpeech) into
    ``out``; returns the manifest entries that were written.

    ``jobs``: worker processes (0 = every usable core). ``out`` may already hold features of the
    same corpus folders (the run resumes); features of other corpora are refused unless
    ``merge``, which keeps their rows (and their splits) next to this run's. Each audio file is
    used once, however many times its corpus is given. Everything is checked before anything is
    written; an interrupted run (SIGINT/SIGTERM: KeyboardInterrupt) keeps its finished feature
    files and writes no manifest.

    ``keep_wav``: also keep each utterance's waveform, exactly the (trimmed) samples its mel was
    made from, as 16-bit PCM aligned to the frames (``FEATURE.wav.npy``, ``frames * hop``
    samples; see :func:`aligned_pcm16`), so a vocoder trains on the features the converter makes.

    ``f0``: also keep each utterance's F0 contour, one value in Hz per mel frame (0 = unvoiced),
    tracked on the same (trimmed) samples (``FEATURE.f0.npy``, float32; :func:`clsvc.pitch.frame_f0`),
    for a ClsVC conditioned on pitch (``model.f0_condition``).

    ``phones``: also keep each utterance's phone labels, one per mel frame (``FEATURE.phones.npy``,
    int16 indices into :data:`clsvc.data.align.PHONES`, -1 = unknown), by forced alignment of its
    transcript on the same (trimmed) samples (:func:`clsvc.data.align.phone_labels`; an utterance
    without a transcript gets -1 throughout), for a content code supervised with phones
    (``loss.phone``). ``phone_loop`` (implies ``phones``): an utterance without a transcript, or
    whose alignment fails, is labelled by PocketSphinx's phone-loop decoding instead (noisier; no
    words needed), and on a re-run an utterance whose labels are all unknown is labelled again.
    """
    from tqdm import tqdm

    out = Path(out)
    split = split or SplitSpec()
    split.validate()
    check_settings(jobs, trim_db, min_frames)
    given = list(corpus) if isinstance(corpus, (list, tuple)) else [corpus]
    if not given:
        raise ClsvcError("no corpus folder given; pass the folder(s) that hold the speakers")
    corpora = list(dict.fromkeys(Path(c).resolve() for c in given))  # the same folder twice: once
    utts: list[Utterance] = []
    owner: dict[str, Path] = {}
    seen_src: set[Path] = set()
    for c in corpora:
        for u in read_corpus(c, kind):
            src = u.path.resolve()
            if src in seen_src:  # overlapping corpus folders, or a link to a file already listed
                continue
            seen_src.add(src)
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
    by_feature: dict[str, Utterance] = {}
    for u in utts:
        other = by_feature.setdefault(_feature_relpath(u), u)
        if other is not u:
            raise ClsvcError(
                f"{u.path}: its feature file name {_feature_relpath(u)} is also that of {other.path}; "
                "rename one of them (speaker and utterance names are kept to letters, digits, '_.-')"
            )
    assign_splits(utts, split)  # fail on bad speaker names before any work

    recorded: list[str] = [str(c) for c in corpora]
    kept: list[Entry] = []
    if out.is_dir():
        check_features_mel(out, mel_cfg)
        recorded, kept = _check_owner(out, corpora, merge)
        kept = _merge_rows(out, kept, utts, owner)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{out}: cannot create the output folder ({e.strerror}); choose a writable path") from None
    if not os.access(out, os.W_OK):
        raise ClsvcError(f"{out}: folder is not writable; choose another --out")
    phones = phones or phone_loop
    settings = {"corpus": recorded, "kind": kind, "trim_db": trim_db,
                "min_frames": min_frames, "split": asdict(split), "keep_wav": keep_wav, "f0": f0,
                "phones": phones, "phone_loop": phone_loop}
    write_features_info(out, mel_cfg, settings)

    skipped: list[tuple[Utterance, str]] = []
    frames: dict[tuple[str, str], int] = {}
    with _sigterm_raises_interrupt():
        todo = []
        for u in utts:
            dst = out / _feature_relpath(u)
            n = _existing_frames(dst, mel_cfg.n_mels) if dst.exists() else None
            if n is not None and keep_wav and not wav_path(dst).is_file():
                n = None  # made without its waveform: redo it
            if n is not None and f0 and not f0_path(dst).is_file():
                n = None  # made without its F0 contour: redo it
            if n is not None and phones and not phones_path(dst).is_file():
                n = None  # made without its phone labels: redo it
            if n is not None and phone_loop and not _any_known_phone(phones_path(dst)):
                n = None  # labelled without the phone loop (or before it could): try it
            if n is not None:
                frames[(u.speaker, u.utt_id)] = n
            else:
                todo.append(u)

        workers = min(jobs or _usable_cores(), len(todo)) or 1
        args = [(u.path, out / _feature_relpath(u), mel_cfg, trim_db, min_frames, keep_wav, f0, phones, phone_loop,
                 u.transcript) for u in todo]
        bar = tqdm(total=len(utts), initial=len(utts) - len(todo), desc="preprocess",
                   unit="utt", disable=not progress, dynamic_ncols=True)
        pooled = workers > 1 and len(todo) >= 8
        results = _run_pool(args, workers) if pooled else map(_process_one, args)
        try:
            for u, (n, reason) in zip(todo, results, strict=True):
                _collect(u, n, reason, frames, skipped)
                bar.update(1)
        finally:
            bar.close()
            if isinstance(results, Generator):
                results.close()  # an interrupt outside the pool's wait stops the workers now, too

    usable = [u for u in utts if (u.speaker, u.utt_id) in frames]
    if not usable:
        raise ClsvcError(
            f"{', '.join(map(str, corpora))}: none of the {len(utts)} files could be used (first reason: "
            f"{skipped[0][1] if skipped else 'none'})"
        )
    # Split only the usable utterances, so a skipped file never takes a held-out slot.
    splits = assign_splits(usable, split)
    entries = kept + [
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


def _merge_rows(out: Path, rows: list[Entry], utts: list[Utterance], owner: dict[str, Path]) -> list[Entry]:
    """The rows of ``out`` to keep next to this run's: not of a file this run makes (again), nor
    of a speaker of this run from the same corpus; a speaker or feature file of both is refused."""
    made = {u.path.resolve() for u in utts}
    ours = {u.speaker: owner[u.speaker] for u in utts}
    features = {_feature_relpath(u) for u in utts}
    kept = []
    for e in rows:
        if Path(e.source).resolve() in made or (e.speaker in ours and _under(e.source, ours[e.speaker])):
            continue  # made again by this run
        if e.speaker in ours or e.feature in features:
            raise ClsvcError(
                f"{out}: speaker {e.speaker} ({e.source}) is already there, and {ours.get(e.speaker, 'this run')} "
                "has one of the same name; rename one speaker folder or preprocess into another --out"
            )
        kept.append(e)
    return kept


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _collect(u, n, reason, frames, skipped):
    if n > 0:
        frames[(u.speaker, u.utt_id)] = n
    else:
        skipped.append((u, reason))
