"""Scoring of ``clsvc evaluate``: every metric of one audio of a pair, and the model probes.

Each pair's audio (the conversion and the two bounds through the same vocoder) becomes one
*score row*: a dict with the pair's columns (:data:`ROW_FIELDS`) and the metrics of
:data:`~clsvc.evaluation.metrics.METRICS` it could be scored on — Resemblyzer cosine to the
target and source centroids, acceptance at the threshold and nearest-centroid identification
among the condition's speakers (any-to-many: among the training speakers converted into, so no
identified-as-source share); MCD against the target speaker's recording of the same sentence
(parallel pairs); WER / CER of pocketsphinx against the source transcript; DNSMOS P.835 (no
reference); PESQ and STOI of the real target's bound against its recording; F0 error against the
target speaker's recording of the same sentence (parallel pairs); the pitch level (median voiced
F0) against the target's and the source's, from their centroid utterances (every pair: a voice
cue that does not come from Resemblyzer).

What the scores are measured against (centroids, identification pools, real audio, reference
transcripts) is a :class:`ScoringContext`, built once per evaluation from the protocol.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import EvalConfig, MelConfig
from ..data.manifest import Entry, features_n_mels, load_feature, read_features_info
from ..errors import ClsvcError
from .metrics import CONDITIONS, METRICS, Row
from .protocol import Pair, Protocol

if TYPE_CHECKING:
    from ..models import VCSystem
    from .refcache import ReferenceCache

#: The columns every score row starts with.
ROW_FIELDS = ("pair", "condition", "gender_group", "kind", "source", "target", "parallel")

#: ``clsvc preprocess``'s default ``--trim-db``, for feature folders that did not record theirs.
DEFAULT_TRIM_DB = 40.0

#: The columns of ``scores.csv``.
SCORE_COLUMNS = [*ROW_FIELDS, "identified", *(m.key for m in METRICS)]


class AudioCache:
    """Real audio, features and Resemblyzer d-vectors of manifest utterances, each read or
    computed once.

    ``feats_dir`` is the preprocessed corpus (its features); waveforms are read from the
    original files the manifest points at, at ``mel_cfg.sample_rate`` Hz.
    """

    def __init__(self, feats_dir: Path, mel_cfg: MelConfig):
        self.dir = feats_dir
        self.mel_cfg = mel_cfg
        self.n_mels = features_n_mels(feats_dir)
        self._wav: dict[str, np.ndarray] = {}
        self._emb: dict[str, np.ndarray] = {}
        settings = (read_features_info(feats_dir) or {}).get("preprocess")
        trim_db = settings.get("trim_db") if isinstance(settings, dict) else None
        #: The silence trimming the features were made with (``clsvc preprocess --trim-db``;
        #: its default for folders that did not record it).
        self.trim_db = float(trim_db) if isinstance(trim_db, (int, float)) else DEFAULT_TRIM_DB

    def mel(self, e: Entry) -> np.ndarray:
        """The utterance's stored log-mel (frames, n_mels) in [0, 1], validated (not cached: read
        each time)."""
        return load_feature(self.dir, e, self.n_mels)

    def wav(self, e: Entry) -> np.ndarray:
        """The utterance's float32 waveform (samples,) at ``mel_cfg.sample_rate`` Hz."""
        from ..audio import load_wav

        if e.source not in self._wav:
            if not Path(e.source).is_file():
                raise ClsvcError(f"{e.source}: audio of {e.speaker}/{e.utt_id} not found (the manifest "
                                 "points at the original corpus); restore the corpus or re-run preprocess")
            self._wav[e.source] = load_wav(e.source, self.mel_cfg)
        return self._wav[e.source]

    def aligned_wav(self, e: Entry) -> np.ndarray:
        """The waveform the utterance's stored features were made from: :meth:`wav` with its
        leading and trailing silence trimmed as ``clsvc preprocess`` trimmed it (same function,
        same threshold), so that audio vocoded from :meth:`mel` has the same timing, sample for
        sample (not cached: cut from the cached waveform each time)."""
        from ..audio import trim_silence

        return trim_silence(self.wav(e), self.trim_db, self.mel_cfg)

    def embedding(self, e: Entry) -> np.ndarray:
        """The utterance's unit Resemblyzer d-vector (256,)."""
        from ..dvector import embed_wav

        if e.source not in self._emb:
            self._emb[e.source] = embed_wav(self.wav(e), self.mel_cfg.sample_rate)
        return self._emb[e.source]


@dataclass
class ScoringContext:
    """What every score of an evaluation is measured against.

    ``centroids``: speaker -> unit Resemblyzer centroid (256,) of its enrolment utterances;
    ``pools``: condition -> the speakers a conversion may be identified as; ``audio``: the real
    audio of the corpus; ``reference_text``: the text a pair's audio should say (for WER/CER).
    """

    cfg: EvalConfig
    mel_cfg: MelConfig
    centroids: dict[str, np.ndarray]
    pools: dict[str, list[str]]
    audio: AudioCache
    reference_text: Callable[[Pair], str]
    #: speaker -> pitch level (median voiced F0, Hz) of its centroid utterances (``cfg.pitch``).
    pitch_levels: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, protocol: Protocol, cfg: EvalConfig, mel_cfg: MelConfig, audio: AudioCache,
              progress: bool = True, cache: ReferenceCache | None = None) -> ScoringContext:
        """Centroids of every speaker the pairs and their pools need, the identification pools
        (the protocol's, else the pairs' speakers) and the reference texts (the transcript, else
        the ASR of the real source, computed once). Checks the ASR tools when ``cfg.asr``.
        ``cache``: centroids and pitch levels kept from earlier evaluations (read, then saved
        with what this one added)."""
        from tqdm import tqdm

        from .refcache import ReferenceCache
        from .similarity import centroid

        cache = cache or ReferenceCache(None)
        sr = mel_cfg.sample_rate

        check_scorers(cfg)
        pairs = protocol.pairs
        speakers = sorted({p.source.speaker for p in pairs} | {p.target.speaker for p in pairs}
                          | {s for c in {p.condition for p in pairs} for s in protocol.pools.get(c, [])})
        centroids, levels = {}, {}
        for s in tqdm(speakers, desc="centroids", unit="spk", disable=not progress):
            utts = protocol.centroid.get(s) or protocol.test.get(s, [])
            key = cache.key("centroid", utts, sr)
            kept = cache.get(key)
            if kept is None:
                kept = centroid([audio.embedding(e) for e in utts])
                cache.put(key, kept)
            centroids[s] = kept
            if cfg.pitch:
                from .pitch import pitch_level

                key = cache.key("pitch-level-harvest", utts, sr)
                stored = cache.get(key)
                if stored is None:
                    stored = np.asarray(pitch_level([audio.wav(e) for e in utts], sr), dtype=np.float64)
                    cache.put(key, stored)
                levels[s] = float(stored)
        cache.save()
        # Pools of the protocol's conditions (seen and unseen always, any2many when asked for)
        # and of any other condition a pair list brings.
        conds = [c for c in CONDITIONS if c in protocol.pools or any(p.condition == c for p in pairs)]
        pools = {c: [s for s in protocol.pools.get(c, []) if s in centroids] or _pair_speakers(pairs, c)
                 for c in conds}

        asr_cache: dict[str, str] = {}

        def reference_text(pair: Pair) -> str:
            if pair.source.transcript.strip():
                return pair.source.transcript
            if pair.source.source not in asr_cache:  # no transcript: the ASR of the real source
                from .asr import transcribe

                asr_cache[pair.source.source] = transcribe(audio.wav(pair.source), mel_cfg.sample_rate)
            return asr_cache[pair.source.source]

        return cls(cfg, mel_cfg, centroids, pools, audio, reference_text, levels)


def _pair_speakers(pairs: list[Pair], condition: str) -> list[str]:
    """The identification pool of a condition the protocol has none for: its pairs' speakers
    (any-to-many: their targets, the voices converted into)."""
    targets = {p.target.speaker for p in pairs if p.condition == condition}
    if condition == "any2many":
        return sorted(targets)
    return sorted({p.source.speaker for p in pairs if p.condition == condition} | targets)


def check_scorers(cfg: EvalConfig) -> None:
    """One ClsvcError naming the fix when a scorer ``cfg`` turns on lacks its optional packages
    (called before any work, so a long evaluation does not stop at its first score)."""
    if cfg.asr:
        from . import asr

        if not asr.available():
            raise ClsvcError("ASR scoring needs pocketsphinx and jiwer: pip install 'clsvc[eval]' "
                             "(or pass --no-asr)")
    if cfg.quality:
        from . import quality

        if not quality.available():
            raise ClsvcError("quality scoring (DNSMOS, PESQ, STOI) needs speechmos, onnxruntime, pesq and "
                             "pystoi: pip install 'clsvc[eval]' (or pass --no-quality)")
    if cfg.pitch:
        import warnings

        from . import pitch

        with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources; not ours to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            have = pitch.available()
        if not have:
            raise ClsvcError("F0 scoring needs pyworld and pysptk: pip install 'clsvc[eval]' "
                             "(or pass --no-pitch)")


def new_row(pair: Pair, kind: str) -> Row:
    """The score row of ``pair``'s audio ``kind`` (one of :data:`~.metrics.KINDS`), unscored."""
    return {"pair": pair.name, "condition": pair.condition, "gender_group": pair.gender_group,
            "kind": kind, "source": pair.source.speaker, "target": pair.target.speaker,
            "parallel": pair.parallel}


def score_kind(row: Row, wav: np.ndarray, mel: np.ndarray, pair: Pair, ctx: ScoringContext) -> None:
    """Fill ``row`` with every metric of one audio (converted or a bound) of ``pair``:
    ``wav`` its float32 waveform at ``ctx.mel_cfg.sample_rate`` Hz, ``mel`` its log-mel
    (frames, n_mels). MCD and F0 error need a parallel pair, PESQ and STOI the real target's
    bound; a metric that cannot be computed is ``None``, one whose scorer found nothing to score
    (e.g. PESQ no utterance) is NaN (see :func:`~.metrics.summarize`)."""
    from ..dvector import embed_wav
    from .similarity import cosine

    cfg = ctx.cfg
    sr = ctx.mel_cfg.sample_rate
    cents = ctx.centroids
    e = embed_wav(wav, sr)
    src, tgt = pair.source.speaker, pair.target.speaker
    row["cos_tgt"] = cosine(e, cents[tgt])
    row["cos_src"] = cosine(e, cents[src])
    row["closer"] = float(row["cos_tgt"] > row["cos_src"])
    row["accept"] = float(row["cos_tgt"] >= cfg.threshold)
    pool = ctx.pools[pair.condition]
    best = max(pool, key=lambda s: cosine(e, cents[s]))
    row["identified"] = "target" if best == tgt else "source" if best == src else "other"
    row["id_target"] = float(best == tgt)
    # Not scored when the source is no candidate (any-to-many: only the target voices are).
    row["id_source"] = float(best == src) if src in pool else None
    if cfg.mcd and pair.parallel:
        from .mcd import audio_mcd, feature_mcd

        real_tgt = ctx.audio.wav(pair.target)
        row["mcd_audio"] = _safe(lambda: audio_mcd(real_tgt, wav, sr))
        row["mcd_feat"] = (None if row["kind"] == "target_gl"  # 0 by definition
                           else _safe(lambda: feature_mcd(ctx.audio.mel(pair.target), mel, ctx.mel_cfg)))
    if cfg.asr:
        from .asr import error_rates, transcribe

        ref = ctx.reference_text(pair)
        if ref:
            rates = error_rates(ref, transcribe(wav, sr))
            row["wer"], row["cer"] = rates["wer"], rates["cer"]
    if cfg.quality:
        from .quality import dnsmos, pesq_wb, stoi

        mos = _safe_scores(lambda: dnsmos(wav, sr))
        if mos is not None:
            row["dnsmos_sig"], row["dnsmos_bak"], row["dnsmos_ovrl"] = mos["sig"], mos["bak"], mos["ovrl"]
        # PESQ and STOI are intrusive: they compare the audio with a reference of the *same
        # timing*, frame by frame (STOI compensates no delay at all, PESQ only constant and
        # piecewise delays). Only the real target's bound has one: it is the vocoded mel of that
        # very recording, which the features were cut from (aligned_wav), so they measure the
        # vocoder's copy-synthesis quality. Converted audio keeps the source's timing, and the
        # target speaker's recording of the same sentence has its own, so it (and the source's
        # bound) gets no PESQ/STOI; MCD and F0 error align with DTW instead.
        if row["kind"] == "target_gl":
            ref_wav = ctx.audio.aligned_wav(pair.target)
            # pesq's own errors (e.g. BufferTooShortError) are RuntimeErrors: not scored
            row["pesq"] = _safe(lambda: pesq_wb(ref_wav, wav, sr), (ValueError, RuntimeError))
            row["stoi"] = _safe(lambda: stoi(ref_wav, wav, sr))
    # One Harvest track of the output serves both the pitch level and (parallel pairs) the F0
    # error: it is the costliest step of scoring (~0.15 s of CPU per second of audio).
    track = None
    if cfg.pitch and (ctx.pitch_levels or pair.parallel):
        from .pitch import f0_track

        track = _safe_track(lambda: f0_track(wav, sr))
    if cfg.pitch and ctx.pitch_levels and track is not None:
        from .pitch import level_cents, pitch_level_of

        level = pitch_level_of([track])
        to_tgt = abs(level_cents(level, ctx.pitch_levels[tgt]))
        to_src = abs(level_cents(level, ctx.pitch_levels[src]))
        row["pitch_off_cents"] = to_tgt
        row["pitch_closer"] = math.nan if math.isnan(to_tgt + to_src) else float(to_tgt < to_src)
    if cfg.pitch and pair.parallel and track is not None:
        from .pitch import f0_error

        real = ctx.audio.wav(pair.target)
        f0 = _safe_scores(lambda: f0_error(real, wav, sr, deg_f0=track))
        if f0 is not None:
            row["f0_rmse_cents"], row["f0_corr"] = f0["log_f0_rmse_cents"], f0["f0_corr"]
            row["vuv_error"] = f0["vuv_error"]


def _safe(fn: Callable[[], float], errors: tuple[type[Exception], ...] = (ValueError,)) -> float | None:
    try:
        return float(fn())
    except errors:  # e.g. nothing but silence after dropping silent frames
        return None


def _safe_track(fn: Callable[[], np.ndarray]) -> np.ndarray | None:
    try:
        return fn()
    except ValueError:  # empty or non-finite audio: no F0 numbers for this row
        return None


def _safe_scores(fn: Callable[[], dict[str, float]]) -> dict[str, float] | None:
    try:
        return fn()
    except ValueError:  # an empty or non-finite waveform
        return None


def write_scores(path: Path, rows: list[Row]) -> None:
    """``scores.csv``: one line per score row, columns :data:`SCORE_COLUMNS`."""
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=SCORE_COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------- model probes


def probe_speakers(model: VCSystem, data: Path, entries: list[Entry], protocol: Protocol,
                   cfg: EvalConfig) -> dict[str, Any]:
    """Fresh speaker probes on the codes of the seen speakers: trained on their training
    utterances and tested on their held-out ones (see :func:`~.probes.probe_codes`), or
    ``{"skipped": why}``."""
    from .probes import probe_codes

    seen = set(protocol.pools.get("seen", [])) or {e.speaker for e in entries if e.split != "unseen"}
    train = [e for e in entries if e.speaker in seen and e.split == "train"]
    test = [e for e in entries if e.speaker in seen and e.split == "val"]
    have = {e.speaker for e in test}
    train = [e for e in train if e.speaker in have]
    if len(have) < 2:
        return {"skipped": "needs held-out (val) utterances of at least two training speakers"}
    return probe_codes(model, data, train, test, seed=cfg.seed)


def speaker_code_tsne(model: VCSystem, data: Path, entries: list[Entry], cfg: EvalConfig,
                      png: Path) -> dict[str, Any] | None:
    """t-SNE of S_x of unseen speakers (the paper's Fig. 5, drawn to ``png``), or of held-out
    utterances of training speakers when the corpus has no unseen speakers. ``None`` for a
    system without a speaker encoder of its own; ``{"skipped": why}`` with too little audio."""
    from .probes import extract_codes
    from .tsne import plot_tsne, separation, tsne_2d

    which = "unseen" if any(e.split == "unseen" for e in entries) else "val"
    by_spk: dict[str, list[Entry]] = {}
    for e in sorted(entries, key=lambda e: (e.speaker, e.utt_id)):
        if e.split == which:
            by_spk.setdefault(e.speaker, []).append(e)
    names = sorted(by_spk)[: cfg.tsne_speakers]
    chosen = [e for s in names for e in by_spk[s][: cfg.tsne_utterances]]
    if len(names) < 2 or len(chosen) < 6:
        return {"skipped": "needs at least two speakers with utterances for t-SNE"}
    codes = extract_codes(model, data, chosen, seed=cfg.seed)
    if codes["speaker"] is None:
        return None
    labels = [codes["names"][i] for i in codes["labels"]]
    genders = [e.gender for e in chosen]
    points = tsne_2d(codes["speaker"], seed=cfg.seed)
    sil = separation(codes["speaker"], labels)
    plot_tsne(points, labels, png, f"S_x of {which} speakers ({len(names)}), silhouette {sil:.2f}", genders)
    return {"speakers": which, "n_speakers": len(names), "n_utterances": len(chosen),
            "silhouette_cosine": sil, "plot": "plots/fig5_tsne.png"}
