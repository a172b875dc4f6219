"""The pair protocol of ``clsvc evaluate`` and its CSV form.

The protocol is built from a preprocessed corpus (its ``manifest.tsv``) and a seed, so two
systems evaluated on the same folder with the same settings see exactly the same pairs:

* **seen** (many-to-many): source and target are training speakers; sources are their held-out
  (``val``) utterances; the target voice is the checkpoint's stored speaker vector
  (``seen_target: table``) or, like one-shot, made from reference utterances (``refs``).
* **unseen** (one-shot): source and target are speakers of the ``unseen`` split (never trained
  on); the target voice is made from ``refs`` reference utterances of the target.
* **any2many** (any-to-many, only with ``any2many_pairs`` > 0): sources are test utterances of
  unseen speakers, targets are training speakers with held-out utterances; the target voice is
  made as for seen pairs (stored vector or references), and its ground truth is a held-out
  utterance of the target (the same sentence when the corpus has one). A conversion is
  identified among these target speakers only. These pairs are drawn after the other two
  conditions', so turning them on changes no seen or one-shot pair.

Each speaker's utterances are split into *test* utterances (sources and ground-truth targets)
and *enrolment* utterances (the Resemblyzer centroid and the references, kept disjoint where
there are enough). When the corpus is parallel (the same sentence — same transcript, or same
utterance id after the speaker prefix — by several speakers) the source sentence is chosen so
the target speaker also said it: that recording is the ground truth for MCD.

The pair list CSV (:func:`write_pairs` / :func:`read_pairs`) hands the protocol to another
system and brings its converted files back to be scored.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import EvalConfig
from ..data.manifest import Entry, sentence_key
from ..errors import ClsvcError
from .metrics import CONDITIONS

__all__ = ["CONDITIONS", "PAIR_COLUMNS", "Pair", "Protocol", "build_protocol", "read_pairs", "sentence_key",
           "write_pairs"]


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
        """Stable file-name-safe id, e.g. ``seen_003_spk_a-to-spk_b_spk_a_005``."""
        return f"{self.condition}_{self.index:03d}_{self.source.speaker}-to-{self.target.speaker}_{self.source.utt_id}"

    @property
    def gender_group(self) -> str:
        """``same-gender`` / ``cross-gender`` when both genders are known, else ``""``."""
        a, b = self.source.gender, self.target.gender
        if a in ("F", "M") and b in ("F", "M"):
            return "same-gender" if a == b else "cross-gender"
        return ""


@dataclass
class Protocol:
    """The pairs of an evaluation and the utterances their scores are measured against."""

    pairs: list[Pair]
    centroid: dict[str, list[Entry]]     # speaker -> utterances of its Resemblyzer centroid
    pools: dict[str, list[str]]          # condition -> speakers (identification candidates)
    test: dict[str, list[Entry]]         # speaker -> test utterances
    notes: list[str]


# ----------------------------------------------------------------------------- protocol


def _split_unseen(by_spk: dict[str, list[Entry]], val_keys: set[str], refs: int, seed: int
                  ) -> tuple[dict[str, list[Entry]], dict[str, list[Entry]]]:
    """Test / enrolment utterances of unseen speakers. Parallel sentences (said by two or more
    of them) are preferred as test utterances so conversions have a ground truth."""
    counts: dict[str, int] = {}
    for es in by_spk.values():
        for k in {sentence_key(e) for e in es}:
            counts[k] = counts.get(k, 0) + 1
    shared = sorted(k for k, c in counts.items() if c >= 2)
    test: dict[str, list[Entry]] = {}
    enrol: dict[str, list[Entry]] = {}
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

    ``known_speakers``: the checkpoint's training speakers (seen and any-to-many pairs need
    their stored embeddings when ``seen_target`` is ``table``); ``None`` = every train/val speaker.
    """
    known = set(known_speakers) if known_speakers is not None else None
    by_split: dict[str, dict[str, list[Entry]]] = {}
    for e in sorted(entries, key=lambda e: (e.speaker, e.utt_id)):
        by_split.setdefault("unseen" if e.split == "unseen" else "seen", {}).setdefault(e.speaker, []).append(e)
    notes: list[str] = []
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
    centroid: dict[str, list[Entry]] = {}
    ref_pool: dict[str, list[Entry]] = {}
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
    unseen = sorted(by_split.get("unseen", {}))
    for cond, n_pairs, pool in (("seen", cfg.seen_pairs, sorted(seen)),
                                ("unseen", cfg.unseen_pairs, unseen),
                                ("any2many", cfg.any2many_pairs, sorted(seen))):
        one_shot = cond == "unseen" or cfg.seen_target == "refs"
        sources = [s for s in (unseen if cond == "any2many" else pool) if test.get(s)]
        targets = [s for s in pool if test.get(s) and (not one_shot or ref_pool.get(s))]
        if cond == "any2many":
            if n_pairs <= 0:  # without any2many pairs the protocol is exactly the two-condition one
                continue
            pool = targets  # "identified as the intended voice": among the voices converted into
        pools[cond] = pool
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
        few = sorted({p.target.speaker for p in pairs if p.condition == cond and one_shot and len(p.refs) < cfg.refs})
        if few:
            notes.append(f"{cond}: fewer than {cfg.refs} references for target(s) {', '.join(few[:5])}"
                         f"{' ...' if len(few) > 5 else ''} (too few enrolment utterances beside the "
                         "centroid's); their pairs use what there is")
    return Protocol(pairs, centroid, pools, test, notes)


# ----------------------------------------------------------------------------- pair lists


PAIR_COLUMNS = ["name", "condition", "source_speaker", "source_utt", "target_speaker", "target_utt",
                "parallel", "refs", "source_audio", "target_audio", "ref_audio", "transcript", "converted"]


def write_pairs(path: str | Path, pairs: list[Pair], converted_dir: str = "converted") -> None:
    """The protocol as CSV (columns :data:`PAIR_COLUMNS`); ``converted`` names where another
    system should write each file (the pair's own ``converted`` path when it has one)."""
    with Path(path).open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(PAIR_COLUMNS)
        for p in pairs:
            conv = str(p.converted) if p.converted else f"{converted_dir}/{p.name}.wav"
            w.writerow([p.name, p.condition, p.source.speaker, p.source.utt_id, p.target.speaker,
                        p.target.utt_id, int(p.parallel), ";".join(r.utt_id for r in p.refs),
                        p.source.source, p.target.source, ";".join(r.source for r in p.refs),
                        p.source.transcript, conv])


def read_pairs(path: str | Path, entries: list[Entry]) -> list[Pair]:
    """Pairs of a CSV written by :func:`write_pairs` (``converted`` paths relative to the CSV),
    resolved against the manifest's utterances. Errors name the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ClsvcError(f"{path}: pair list not found; write one with `clsvc evaluate --export-pairs`")
    index = {(e.speaker, e.utt_id): e for e in entries}
    pairs: list[Pair] = []
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
                raise ClsvcError(f"{where}: condition must be one of {', '.join(CONDITIONS)}, "
                                 f"not {row['condition']!r}")
            parallel = sentence_key(src) == sentence_key(tgt)
            pairs.append(Pair(len(pairs), row["condition"], src, tgt, parallel, refs, conv))
    if not pairs:
        raise ClsvcError(f"{path}: no pairs in the file")
    return pairs
