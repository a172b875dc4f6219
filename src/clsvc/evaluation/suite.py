"""``clsvc evaluate``: a fixed protocol of source -> target pairs, converted and scored.

The protocol is built from a preprocessed corpus (its ``manifest.tsv``) and a seed, so two
systems evaluated on the same folder with the same settings see exactly the same pairs:

* **seen** (many-to-many): source and target are training speakers; sources are their held-out
  (``val``) utterances; the target embedding is the checkpoint's stored speaker embedding
  (``seen_target: table``) or, like one-shot, the mean of reference utterances (``refs``).
* **unseen** (one-shot): source and target are speakers of the ``unseen`` split (never trained
  on); the target embedding is the mean of ``refs`` reference utterances of the target.

Each speaker's utterances are split into *test* utterances (sources and ground-truth targets)
and *enrolment* utterances (the Resemblyzer centroid and the references, kept disjoint where
there are enough). When the corpus is parallel (the same sentence — same transcript, or same
utterance id after the speaker prefix — by several speakers) the source sentence is chosen so
the target speaker also said it: that recording is the ground truth for MCD.

Every pair is scored three times: the converted audio, and two bounds through the same
mel -> Griffin-Lim path — the real target utterance (the best a mel system can score with this
vocoder) and the unconverted source (what no conversion looks like).

Outputs (``OUT/``): ``report.md``, ``metrics.json`` (every figure as mean, 95% CI, n),
``pairs.csv`` (the protocol), ``scores.csv`` (one row per pair and audio kind), ``plots/*.png``
and ``samples/*.wav``. The folder is written under a temporary name and moved into place at the
end, so an interrupted run leaves no half-written report.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..config import EvalConfig, MelConfig, from_dict
from ..data.manifest import Entry, read_features_mel, read_manifest
from ..errors import ClsvcError
from ..models import Reference
from .probes import NO_CONTENT
from .stats import Estimate, mean_ci, proportion_ci

KINDS = ("converted", "target_gl", "source_gl")
KIND_LABEL = {"converted": "converted", "target_gl": "bound: real target → GL",
              "source_gl": "bound: unconverted source → GL"}
CONDITIONS = ("seen", "unseen")


@dataclass
class Pair:
    """One conversion of the protocol. ``target`` is the target speaker's recording of the
    same sentence when ``parallel``, else another test utterance of the target speaker."""

    index: int
    condition: str
    source: Entry
    target: Entry
    parallel: bool
    refs: list[Entry] = field(default_factory=list)
    converted: Path | None = None  # audio made by another system (``--pairs``)

    @property
    def name(self) -> str:
        return f"{self.condition}_{self.index:03d}_{self.source.speaker}-to-{self.target.speaker}_{self.source.utt_id}"

    @property
    def gender_group(self) -> str:
        a, b = self.source.gender, self.target.gender
        if a in ("F", "M") and b in ("F", "M"):
            return "same-gender" if a == b else "cross-gender"
        return ""


@dataclass
class Protocol:
    pairs: list[Pair]
    centroid: dict[str, list[Entry]]     # speaker -> utterances of its Resemblyzer centroid
    pools: dict[str, list[str]]          # condition -> speakers (identification candidates)
    test: dict[str, list[Entry]]         # speaker -> test utterances
    notes: list[str]


# ----------------------------------------------------------------------------- protocol


def _norm_text(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def sentence_key(e: Entry) -> str:
    """What makes two utterances "the same sentence": the normalised transcript when known,
    else the utterance id without its speaker prefix (``p225_003`` -> ``003``)."""
    text = _norm_text(e.transcript)
    if text:
        return "t:" + text
    return "u:" + re.sub(rf"^{re.escape(e.speaker)}[_-]?", "", e.utt_id)


def _split_unseen(by_spk: dict[str, list[Entry]], val_keys: set[str], refs: int, seed: int
                  ) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]]]:
    """Test / enrolment utterances of unseen speakers. Parallel sentences (said by two or more
    of them) are preferred as test utterances so conversions have a ground truth."""
    counts: dict[str, int] = {}
    for es in by_spk.values():
        for k in {sentence_key(e) for e in es}:
            counts[k] = counts.get(k, 0) + 1
    shared = sorted(k for k, c in counts.items() if c >= 2)
    test, enrol = {}, {}
    if shared:
        test_keys = set(shared) & val_keys
        if not test_keys:  # every other shared sentence, in a seeded order
            order = sorted(shared, key=lambda k: random.Random(f"{seed}:{k}").random())
            test_keys = set(order[::2])
        for s, es in by_spk.items():
            test[s] = [e for e in es if sentence_key(e) in test_keys]
            enrol[s] = [e for e in es if sentence_key(e) not in test_keys]
    else:
        for s, es in by_spk.items():
            es = sorted(es, key=lambda e: e.utt_id)
            random.Random(f"{seed}:{s}").shuffle(es)
            n_enrol = min(max(refs + 1, len(es) // 2), len(es) - 1)
            enrol[s], test[s] = es[:n_enrol], es[n_enrol:]
    return test, enrol


def build_protocol(entries: list[Entry], cfg: EvalConfig, known_speakers: Iterable[str] | None = None
                   ) -> Protocol:
    """Deterministic pairs, centroid utterances and identification pools from a manifest.

    ``known_speakers``: the checkpoint's training speakers (seen pairs need their stored
    embeddings when ``seen_target`` is ``table``); ``None`` = every train/val speaker.
    """
    known = set(known_speakers) if known_speakers is not None else None
    by_split: dict[str, dict[str, list[Entry]]] = {}
    for e in sorted(entries, key=lambda e: (e.speaker, e.utt_id)):
        by_split.setdefault("unseen" if e.split == "unseen" else "seen", {}).setdefault(e.speaker, []).append(e)
    notes = []
    seen = {s: es for s, es in by_split.get("seen", {}).items() if known is None or s in known}
    if known is not None and len(seen) < len(by_split.get("seen", {})):
        notes.append(f"{len(by_split['seen']) - len(seen)} train/val speakers of the corpus are unknown to "
                     "the checkpoint and are left out of the seen condition")
    test: dict[str, list[Entry]] = {}
    enrol: dict[str, list[Entry]] = {}
    for s, es in seen.items():
        test[s] = [e for e in es if e.split == "val"]
        enrol[s] = [e for e in es if e.split == "train"]
    val_keys = {sentence_key(e) for es in test.values() for e in es}
    u_test, u_enrol = _split_unseen(by_split.get("unseen", {}), val_keys, cfg.refs, cfg.seed)
    test.update(u_test)
    enrol.update(u_enrol)

    # Centroid utterances first (a seeded choice of at most half the enrolment set when it is
    # small), references are drawn from the rest so the two stay disjoint where possible.
    centroid, ref_pool = {}, {}
    for s, es in enrol.items():
        es = list(es)
        random.Random(f"{cfg.seed}:centroid:{s}").shuffle(es)
        n = min(cfg.centroid_utterances, max(1, (len(es) + 1) // 2)) if len(es) > 1 else len(es)
        centroid[s], ref_pool[s] = es[:n], (es[n:] or es)
    for s in test:  # a speaker without enrolment audio can still be scored against its test audio
        if not centroid.get(s):
            centroid[s] = test[s][: cfg.centroid_utterances]

    rng = random.Random(cfg.seed)
    pairs: list[Pair] = []
    pools: dict[str, list[str]] = {}
    for cond, n_pairs, pool in (("seen", cfg.seen_pairs, sorted(seen)),
                                ("unseen", cfg.unseen_pairs, sorted(by_split.get("unseen", {})))):
        pools[cond] = pool
        one_shot = cond == "unseen" or cfg.seen_target == "refs"
        sources = [s for s in pool if test.get(s)]
        targets = [s for s in pool if test.get(s) and (not one_shot or ref_pool.get(s))]
        if n_pairs <= 0:
            continue
        if len(sources) < 1 or len(set(sources) | set(targets)) < 2 or not targets:
            notes.append(f"{cond}: not enough speakers with test utterances for pairs "
                         f"({len(sources)} sources, {len(targets)} targets); condition skipped")
            continue
        for _ in range(n_pairs):
            src = rng.choice(sources)
            tgt_choices = [t for t in targets if t != src]
            if not tgt_choices:
                break
            tgt = rng.choice(tgt_choices)
            tgt_by_key = {sentence_key(e): e for e in test[tgt]}
            parallel = [e for e in test[src] if sentence_key(e) in tgt_by_key]
            if parallel:
                source = rng.choice(parallel)
                target, is_par = tgt_by_key[sentence_key(source)], True
            else:
                source, target, is_par = rng.choice(test[src]), rng.choice(test[tgt]), False
            refs = rng.sample(ref_pool[tgt], min(cfg.refs, len(ref_pool[tgt]))) if one_shot else []
            pairs.append(Pair(len(pairs), cond, source, target, is_par, refs))
    return Protocol(pairs, centroid, pools, test, notes)


# ----------------------------------------------------------------------------- pair lists


PAIR_COLUMNS = ["name", "condition", "source_speaker", "source_utt", "target_speaker", "target_utt",
                "parallel", "refs", "source_audio", "target_audio", "ref_audio", "transcript", "converted"]


def write_pairs(path: Path, pairs: list[Pair], converted_dir: str = "converted") -> None:
    """The protocol as CSV; ``converted`` names where another system should write each file."""
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PAIR_COLUMNS)
        for p in pairs:
            conv = str(p.converted) if p.converted else f"{converted_dir}/{p.name}.wav"
            w.writerow([p.name, p.condition, p.source.speaker, p.source.utt_id, p.target.speaker,
                        p.target.utt_id, int(p.parallel), ";".join(r.utt_id for r in p.refs),
                        p.source.source, p.target.source, ";".join(r.source for r in p.refs),
                        p.source.transcript, conv])


def read_pairs(path: Path, entries: list[Entry]) -> list[Pair]:
    """Pairs of a CSV written by :func:`write_pairs` (``converted`` paths relative to the CSV),
    resolved against the manifest's utterances."""
    if not path.is_file():
        raise ClsvcError(f"{path}: pair list not found; write one with `clsvc evaluate --export-pairs`")
    index = {(e.speaker, e.utt_id): e for e in entries}
    pairs = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"condition", "source_speaker", "source_utt", "target_speaker", "target_utt",
                   "converted"} - set(reader.fieldnames or [])
        if missing:
            raise ClsvcError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                             "start from the file `clsvc evaluate --export-pairs` writes")
        for line, row in enumerate(reader, start=2):
            where = f"{path} line {line}"
            try:
                src = index[(row["source_speaker"], row["source_utt"])]
                tgt = index[(row["target_speaker"], row["target_utt"])]
                refs = [index[(row["target_speaker"], r)] for r in (row.get("refs") or "").split(";") if r]
            except KeyError as e:
                raise ClsvcError(f"{where}: utterance {e.args[0]} is not in the corpus manifest; "
                                 "use the --data folder the pair list was exported from") from None
            conv = Path(row["converted"])
            conv = conv if conv.is_absolute() else path.parent / conv
            if not conv.is_file():
                raise ClsvcError(f"{where}: converted file {conv} not found; convert every pair first")
            if row["condition"] not in CONDITIONS:
                raise ClsvcError(f"{where}: condition must be seen or unseen, not {row['condition']!r}")
            parallel = sentence_key(src) == sentence_key(tgt)
            pairs.append(Pair(len(pairs), row["condition"], src, tgt, parallel, refs, conv))
    if not pairs:
        raise ClsvcError(f"{path}: no pairs in the file")
    return pairs


# ----------------------------------------------------------------------------- scoring


class _Audio:
    """Cached real audio, features and Resemblyzer embeddings of manifest utterances."""

    def __init__(self, feats_dir: Path, mel_cfg: MelConfig):
        self.dir = feats_dir
        self.mel_cfg = mel_cfg
        self._wav: dict[str, np.ndarray] = {}
        self._emb: dict[str, np.ndarray] = {}

    def mel(self, e: Entry) -> np.ndarray:
        path = self.dir / e.feature
        try:
            return np.load(path)
        except (OSError, ValueError):
            raise ClsvcError(f"{path}: feature file missing or unreadable; re-run `clsvc preprocess`") from None

    def wav(self, e: Entry) -> np.ndarray:
        from ..audio import load_wav

        if e.source not in self._wav:
            if not Path(e.source).is_file():
                raise ClsvcError(f"{e.source}: audio of {e.speaker}/{e.utt_id} not found (the manifest "
                                 "points at the original corpus); restore the corpus or re-run preprocess")
            self._wav[e.source] = load_wav(e.source, self.mel_cfg)
        return self._wav[e.source]

    def embedding(self, e: Entry) -> np.ndarray:
        from ..dvector import embed_wav

        if e.source not in self._emb:
            self._emb[e.source] = embed_wav(self.wav(e), self.mel_cfg.sample_rate)
        return self._emb[e.source]


def _score_kind(row: dict, wav: np.ndarray, mel: np.ndarray, pair: Pair, ctx: dict) -> None:
    """Fill ``row`` with every metric of one audio (converted or a bound) of ``pair``."""
    from ..dvector import embed_wav
    from .similarity import cosine

    cfg: EvalConfig = ctx["cfg"]
    sr = ctx["mel_cfg"].sample_rate
    cents = ctx["centroids"]
    e = embed_wav(wav, sr)
    src, tgt = pair.source.speaker, pair.target.speaker
    row["cos_tgt"] = cosine(e, cents[tgt])
    row["cos_src"] = cosine(e, cents[src])
    row["closer"] = float(row["cos_tgt"] > row["cos_src"])
    row["accept"] = float(row["cos_tgt"] >= cfg.threshold)
    pool = ctx["pools"][pair.condition]
    best = max(pool, key=lambda s: cosine(e, cents[s]))
    row["identified"] = "target" if best == tgt else "source" if best == src else "other"
    row["id_target"] = float(best == tgt)
    row["id_source"] = float(best == src)
    if cfg.mcd and pair.parallel:
        from .mcd import audio_mcd, feature_mcd

        real_tgt = ctx["audio"].wav(pair.target)
        row["mcd_audio"] = _safe(lambda: audio_mcd(real_tgt, wav, sr))
        row["mcd_feat"] = (None if row["kind"] == "target_gl"  # 0 by definition
                           else _safe(lambda: feature_mcd(ctx["audio"].mel(pair.target), mel, ctx["mel_cfg"])))
    if cfg.asr:
        from .asr import error_rates, transcribe

        ref = ctx["reference_text"](pair)
        if ref:
            rates = error_rates(ref, transcribe(wav, sr))
            row["wer"], row["cer"] = rates["wer"], rates["cer"]


def _safe(fn: Callable[[], float]) -> float | None:
    try:
        return float(fn())
    except ValueError:  # e.g. nothing but silence after dropping silent frames
        return None


METRICS = [  # key, label, proportion?, digits
    ("mcd_audio", "MCD audio (dB)", False, 2),
    ("mcd_feat", "MCD log-mel (dB)", False, 2),
    ("cos_tgt", "cos to target", False, 3),
    ("cos_src", "cos to source", False, 3),
    ("closer", "closer to target", True, 0),
    ("accept", "accepted ≥ thr", True, 0),
    ("id_target", "identified as target", True, 0),
    ("id_source", "identified as source", True, 0),
    ("wer", "WER", False, 3),
    ("cer", "CER", False, 3),
]


def summarize(rows: list[dict]) -> dict:
    """``{group: {kind: {metric: Estimate dict}}}`` for groups ``seen``, ``unseen`` and
    ``seen/same-gender`` etc. where genders are known."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["condition"], []).append(r)
        if r.get("gender_group"):
            groups.setdefault(f"{r['condition']}/{r['gender_group']}", []).append(r)
    out: dict = {}
    for g in sorted(groups, key=lambda g: (CONDITIONS.index(g.split("/")[0]), g)):
        out[g] = {}
        for kind in KINDS:
            rs = [r for r in groups[g] if r["kind"] == kind]
            if not rs:
                continue
            out[g][kind] = {}
            for key, _, prop, _ in METRICS:
                vals = [r.get(key) for r in rs]
                if all(v is None for v in vals):
                    continue
                est = proportion_ci(vals) if prop else mean_ci(vals)
                out[g][kind][key] = est.to_dict()
    return out


def _est(d: dict | None) -> Estimate | None:
    return None if d is None else Estimate(d["mean"], d["low"], d["high"], d["n"])


# ----------------------------------------------------------------------------- main entry


def evaluate(out: str | Path, data: str | Path, checkpoint: str | Path | None = None,
             pairs_csv: str | Path | None = None, cfg: EvalConfig | None = None, device: str = "cpu",
             force: bool = False, progress: bool = True, title: str | None = None,
             bounds_cache: str | Path | None = None) -> dict:
    """Build (or read) the protocol, convert, score, and write the report folder ``out``.

    Give ``checkpoint`` to convert with a clsvc model, or ``pairs_csv`` (a pair list whose
    ``converted`` column points at another system's wav files) to score those. Returns the
    metrics dict also written to ``out/metrics.json``.

    ``bounds_cache``: a JSON file keeping the scores of the two bounds, which depend only on
    the protocol and not on the system: evaluations of several systems on the same pairs
    (``clsvc experiment``) then score the bounds once.
    """
    cfg = cfg or EvalConfig()
    if cfg.seen_target not in ("table", "refs"):
        raise ClsvcError(f"eval seen_target must be 'table' or 'refs', not {cfg.seen_target!r}")
    out, data = Path(out), Path(data)
    if (checkpoint is None) == (pairs_csv is None):
        raise ClsvcError("give either --checkpoint (convert with a clsvc model) or --pairs "
                         "(score another system's converted files)")
    if out.exists() and not force:
        raise ClsvcError(f"{out}: already exists; pass --force to replace it or choose another --out")
    if str(out.parent) and not out.parent.is_dir():
        raise ClsvcError(f"{out}: folder {out.parent} does not exist; create it first")
    entries = read_manifest(data)
    feats_mel = read_features_mel(data) or MelConfig()

    vc = None
    if checkpoint is not None:
        from ..inference import load

        vc = load(checkpoint, device=device)
        if vc.mel_cfg != feats_mel:
            raise ClsvcError(f"{data}: features were made with another mel config than {checkpoint}; "
                             "preprocess the corpus with the checkpoint's config")
        if not vc.one_shot:
            cfg = replace(cfg, seen_target="table")
        protocol = build_protocol(entries, cfg, vc.speakers if cfg.seen_target == "table" else None)
        if not vc.one_shot and any(p.condition == "unseen" for p in protocol.pairs):
            protocol.pairs = [p for p in protocol.pairs if p.condition != "unseen"]
            protocol.notes.append(f"{vc.system} converts only into training speakers: one-shot pairs skipped")
    else:
        protocol = build_protocol(entries, cfg)
        protocol.pairs = read_pairs(Path(pairs_csv), entries)
    if not protocol.pairs:
        raise ClsvcError(f"{data}: no pairs could be made ({'; '.join(protocol.notes) or 'empty manifest'}); "
                         "the corpus needs held-out (val) utterances of training speakers and/or "
                         "unseen speakers — see `clsvc preprocess --holdout-per-speaker/--num-unseen`")

    mel_cfg = vc.mel_cfg if vc is not None else feats_mel
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "plots").mkdir(parents=True)
    (tmp / "samples").mkdir()
    try:
        metrics = _run(protocol, vc, cfg, data, mel_cfg, entries, tmp, progress, bounds_cache,
                       meta={"checkpoint": str(checkpoint) if checkpoint else None,
                             "pairs_csv": str(pairs_csv) if pairs_csv else None,
                             "data": str(data), "title": title})
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return metrics


def _bounds_key(cfg: EvalConfig, data: Path, mel_cfg: MelConfig, pools: dict) -> str:
    """What the bound scores depend on (a cache made under other settings is ignored)."""
    keep = {k: v for k, v in asdict(cfg).items() if k not in ("samples", "probes", "tsne", "tsne_utterances",
                                                               "tsne_speakers", "bounds")}
    return json.dumps({"eval": keep, "data": str(Path(data).resolve()), "mel": asdict(mel_cfg),
                       "pools": pools}, sort_keys=True)


def _run(protocol: Protocol, vc, cfg: EvalConfig, data: Path, mel_cfg: MelConfig, entries: list[Entry],
         out: Path, progress: bool, bounds_cache: str | Path | None, meta: dict) -> dict:
    from tqdm import tqdm

    from ..audio import save_wav, wav_to_mel
    from ..vocoder import get_vocoder
    from .similarity import centroid

    t0 = time.time()
    audio = _Audio(data, mel_cfg)
    vocode = vc.vocode if vc is not None else get_vocoder("griffin-lim", mel_cfg)
    sr = mel_cfg.sample_rate
    pairs = protocol.pairs
    speakers = sorted({p.source.speaker for p in pairs} | {p.target.speaker for p in pairs}
                      | {s for c in {p.condition for p in pairs} for s in protocol.pools.get(c, [])})
    centroids = {}
    for s in tqdm(speakers, desc="centroids", unit="spk", disable=not progress):
        utts = protocol.centroid.get(s) or protocol.test.get(s, [])
        centroids[s] = centroid([audio.embedding(e) for e in utts])
    pools = {c: [s for s in protocol.pools.get(c, []) if s in centroids] or
             sorted({p.source.speaker for p in pairs if p.condition == c} |
                    {p.target.speaker for p in pairs if p.condition == c}) for c in CONDITIONS}

    asr_cache: dict[str, str] = {}

    def reference_text(pair: Pair) -> str:
        if pair.source.transcript.strip():
            return pair.source.transcript
        if pair.source.source not in asr_cache:  # no transcript: the ASR of the real source
            from .asr import transcribe

            asr_cache[pair.source.source] = transcribe(audio.wav(pair.source), sr)
        return asr_cache[pair.source.source]

    if cfg.asr:
        from .asr import available

        if not available():
            raise ClsvcError("ASR scoring needs pocketsphinx and jiwer: pip install 'clsvc[eval]' "
                             "(or pass --no-asr)")
    ctx = {"cfg": cfg, "mel_cfg": mel_cfg, "centroids": centroids, "pools": pools, "audio": audio,
           "reference_text": reference_text}
    rows: list[dict] = []
    kept: dict[str, int] = {}
    cache_key = _bounds_key(cfg, data, mel_cfg, pools)
    cached: dict[str, list[dict]] = {}
    if bounds_cache is not None and Path(bounds_cache).is_file():
        try:
            saved = json.loads(Path(bounds_cache).read_text())
            if saved.get("key") == cache_key:
                cached = saved["rows"]
        except (json.JSONDecodeError, KeyError, TypeError):
            cached = {}  # unreadable cache: recompute, it is rewritten below
    for pair in tqdm(pairs, desc="evaluate", unit="pair", disable=not progress):
        src_mel = audio.mel(pair.source)
        if pair.converted is not None:
            from ..audio import load_wav

            conv_wav = load_wav(pair.converted, mel_cfg)
            conv_mel = wav_to_mel(conv_wav, mel_cfg)
        else:
            if pair.refs:
                spk = vc.voice([vc.reference(audio.wav(r)) for r in pair.refs])
            else:
                spk = vc.speaker_embedding(pair.target.speaker)
            src = pair.source
            conv_mel = vc.convert_mel(Reference(src_mel, load_wav=lambda src=src: audio.wav(src)), spk)
            conv_wav = vocode(conv_mel)
        audios = {"converted": (conv_wav, conv_mel)}
        reuse = cfg.bounds and pair.name in cached
        if cfg.bounds and not reuse:
            tgt_mel = audio.mel(pair.target)
            audios["target_gl"] = (vocode(tgt_mel), tgt_mel)
            audios["source_gl"] = (vocode(src_mel), src_mel)
        for kind, (wav, mel) in audios.items():
            row = {"pair": pair.name, "condition": pair.condition, "gender_group": pair.gender_group,
                   "kind": kind, "source": pair.source.speaker, "target": pair.target.speaker,
                   "parallel": pair.parallel}
            _score_kind(row, wav, mel, pair, ctx)
            rows.append(row)
            if kind != "converted":
                cached.setdefault(pair.name, []).append(row)
        if reuse:
            rows.extend(dict(r) for r in cached[pair.name])
        if kept.get(pair.condition, 0) < cfg.samples:
            kept[pair.condition] = kept.get(pair.condition, 0) + 1
            save_wav(out / "samples" / f"{pair.name}_converted.wav", conv_wav, sr)
            save_wav(out / "samples" / f"{pair.name}_source.wav", audio.wav(pair.source), sr)
            save_wav(out / "samples" / f"{pair.name}_target.wav", audio.wav(pair.target), sr)

    if bounds_cache is not None and cfg.bounds:
        from ..files import atomic_write_text

        atomic_write_text(Path(bounds_cache), json.dumps({"key": cache_key, "rows": cached}) + "\n")
    summary = summarize(rows)
    extra: dict = {}
    if vc is not None and cfg.probes:
        probes = _probes(vc, data, entries, protocol, cfg)
        if probes.get("skipped") != NO_CONTENT:  # a system without a content code has no probes
            extra["probes"] = probes
    if vc is not None and cfg.tsne:
        tsne = _tsne(vc, data, entries, cfg, out / "plots" / "fig5_tsne.png")
        if tsne is not None:  # None: no speaker encoder of the system's own
            extra["tsne"] = tsne
    from . import report

    report.plot_similarity(rows, cfg.threshold, out / "plots" / "fig3_similarity.png")
    report.plot_identification(rows, out / "plots" / "fig4a_identification.png")

    write_pairs(out / "pairs.csv", pairs)
    with (out / "scores.csv").open("w", newline="") as f:
        keys = ["pair", "condition", "gender_group", "kind", "source", "target", "parallel", "identified"] + \
               [m[0] for m in METRICS]
        w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    metrics = {
        "meta": {**meta, "date": time.strftime("%Y-%m-%d %H:%M"), "minutes": (time.time() - t0) / 60,
                 "eval_config": asdict(cfg), "notes": protocol.notes,
                 "pairs": {c: sum(p.condition == c for p in pairs) for c in CONDITIONS},
                 "parallel_pairs": sum(p.parallel for p in pairs)},
        "summary": summary, **extra,
    }
    if vc is not None:
        metrics["meta"]["step"] = int(getattr(vc, "step", 0) or 0)
        metrics["meta"]["system"] = vc.system
        metrics["meta"]["config"] = vc.cfg.to_dict()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    (out / "report.md").write_text(report.render(metrics))
    return metrics


def _probes(vc, data: Path, entries: list[Entry], protocol: Protocol, cfg: EvalConfig) -> dict:
    """Fresh probes on the seen speakers: trained on their training utterances' codes and
    tested on their held-out ones."""
    from .probes import probe_codes

    seen = set(protocol.pools.get("seen", [])) or {e.speaker for e in entries if e.split != "unseen"}
    train = [e for e in entries if e.speaker in seen and e.split == "train"]
    test = [e for e in entries if e.speaker in seen and e.split == "val"]
    have = {e.speaker for e in test}
    train = [e for e in train if e.speaker in have]
    if len(have) < 2:
        return {"skipped": "needs held-out (val) utterances of at least two training speakers"}
    return probe_codes(vc.model, data, train, test, seed=cfg.seed)


def _tsne(vc, data: Path, entries: list[Entry], cfg: EvalConfig, png: Path) -> dict | None:
    """t-SNE of S_x of unseen speakers (the paper's Fig. 5), or of held-out utterances of
    training speakers when the corpus has no unseen speakers."""
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
    codes = extract_codes(vc.model, data, chosen, seed=cfg.seed)
    if codes["speaker"] is None:
        return None
    labels = [codes["names"][i] for i in codes["labels"]]
    genders = [e.gender for e in chosen]
    points = tsne_2d(codes["speaker"], seed=cfg.seed)
    sil = separation(codes["speaker"], labels)
    plot_tsne(points, labels, png, f"S_x of {which} speakers ({len(names)}), silhouette {sil:.2f}", genders)
    return {"speakers": which, "n_speakers": len(names), "n_utterances": len(chosen),
            "silhouette_cosine": sil, "plot": "plots/fig5_tsne.png"}


def eval_config(overrides: dict | None = None, where: str = "eval settings") -> EvalConfig:
    """An :class:`EvalConfig` from a dict (e.g. the ``eval:`` section of an experiment file)."""
    return from_dict(EvalConfig, overrides or {}, where)
