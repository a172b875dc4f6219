"""``clsvc evaluate``: a fixed protocol of source -> target pairs, converted and scored.

The pairs come from :mod:`.protocol` (seen = many-to-many among training speakers, unseen =
one-shot, any2many = unseen speakers into training speakers when ``any2many_pairs`` > 0; built
from the corpus manifest and a seed, so every system sees the same pairs), or from a pair list
whose ``converted`` column points at another system's files. A clsvc model converts each pair
through :class:`clsvc.inference.Converter`: the target voice is made from the pair's reference
utterances, or is the stored vector of a training speaker. Systems that convert only into their
training speakers skip the one-shot pairs and keep the seen and any-to-many ones.

Every pair is scored (:mod:`.scoring`) three times: the converted audio, and two bounds through
the same mel -> vocoder path (``--vocoder``: Griffin-Lim or a trained neural vocoder) — the
real target utterance (the best a mel system can score with this vocoder) and the unconverted
source (what no conversion looks like).

Outputs (``OUT/``): ``report.md``, ``metrics.json`` (every figure as mean, 95% CI, n),
``pairs.csv`` (the protocol), ``scores.csv`` (one row per pair and audio kind), ``plots/*.png``
and ``samples/*.wav``. The folder is written under a temporary name and moved into place at the
end, so an interrupted run leaves no half-written report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import EvalConfig, MelConfig, from_dict
from ..data.manifest import Entry, read_features_mel, read_manifest
from ..errors import ClsvcError
from ..files import atomic_dir
from ..models import Reference
from ..pretrained import DEFAULT_VOCODER, vocoder_file, vocoder_for
from . import report
from .metrics import CONDITIONS, METRICS, Row, summarize
from .probes import NO_CONTENT
from .protocol import Pair, Protocol, build_protocol, read_pairs, write_pairs
from .refcache import FILE_NAME as REFERENCE_CACHE
from .refcache import ReferenceCache
from .scoring import AudioCache, ScoringContext, check_scorers, new_row, probe_speakers, speaker_code_tsne, write_scores
from .scoring import score_kind as _score_kind  # looked up here per call: tests count the scored kinds

if TYPE_CHECKING:
    from ..inference import Converter

__all__ = ["EvalConfig", "build_protocol", "eval_config", "evaluate", "read_pairs", "write_pairs"]


def evaluate(out: str | Path, data: str | Path, checkpoint: str | Path | None = None,
             pairs_csv: str | Path | None = None, cfg: EvalConfig | None = None, device: str = "cpu",
             force: bool = False, progress: bool = True, title: str | None = None,
             bounds_cache: str | Path | None = None, vocoder: str = DEFAULT_VOCODER,
             reference_cache: bool = True, convert: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Build (or read) the protocol, convert, score, and write the report folder ``out``.

    Give ``checkpoint`` to convert with a clsvc model, or ``pairs_csv`` (a pair list whose
    ``converted`` column points at another system's wav files) to score those. ``data`` is the
    preprocessed corpus. Returns the metrics dict also written to ``out/metrics.json``.

    ``bounds_cache``: a JSON file keeping the scores of the two bounds, which depend only on
    the protocol and not on the system: evaluations of several systems on the same pairs
    (``clsvc experiment``) then score the bounds once. ``reference_cache``: keep the speakers'
    centroids and pitch levels, which depend only on the real recordings, in ``data``'s
    :data:`~.refcache.FILE_NAME` (:mod:`.refcache`), so the next evaluation of the corpus skips them.
    ``convert``: the converter's finishing settings by :class:`~clsvc.config.ConvertConfig` field
    (``gv_max``, ``contrast``, ``contour``; those not given: the model's own).
    """
    cfg = cfg or EvalConfig()
    if cfg.seen_target not in ("table", "refs"):
        raise ClsvcError(f"eval seen_target must be 'table' or 'refs', not {cfg.seen_target!r}")
    out, data = Path(out), Path(data)
    if (checkpoint is None) == (pairs_csv is None):
        raise ClsvcError("give either --checkpoint (convert with a clsvc model) or --pairs "
                         "(score another system's converted files)")
    if checkpoint is not None and max(cfg.seen_pairs, cfg.any2many_pairs, cfg.unseen_pairs) <= 0:
        raise ClsvcError("nothing to evaluate: --seen-pairs, --any2many-pairs and --unseen-pairs are all 0; "
                         "ask for at least one pair")
    if out.exists() and not force:
        raise ClsvcError(f"{out}: already exists; pass --force to replace it or choose another --out")
    vocoder = str(vocoder_for(vocoder, checkpoint))  # "auto": the model's own (the bounds use the same)
    if str(out.parent) and not out.parent.is_dir():
        raise ClsvcError(f"{out}: folder {out.parent} does not exist; create it first")
    check_scorers(cfg)  # missing optional packages: one error before any work
    entries = read_manifest(data)
    feats_mel = read_features_mel(data) or MelConfig()

    vc: Converter | None = None
    if checkpoint is not None:
        from ..inference import load

        vc = load(checkpoint, device=device, vocoder=vocoder, **(convert or {}))
        diff = vc.mel_cfg.differences(feats_mel)  # Griffin-Lim's iteration count shapes no feature
        if diff:
            raise ClsvcError(f"{data}: features were made with another mel config than {checkpoint} "
                             f"(differs in {', '.join(diff)}); preprocess the corpus with the checkpoint's config")
        if not vc.one_shot:
            cfg = replace(cfg, seen_target="table")
        protocol = build_protocol(entries, cfg, vc.speakers if cfg.seen_target == "table" else None)
        # Any-to-many pairs stay: their targets are training speakers (table rows).
        if not vc.one_shot and any(p.condition == "unseen" for p in protocol.pairs):
            protocol.pairs = [p for p in protocol.pairs if p.condition != "unseen"]
            protocol.notes.append(f"{vc.system} converts only into training speakers: one-shot pairs skipped")
    else:
        assert pairs_csv is not None
        protocol = build_protocol(entries, cfg)
        protocol.pairs = read_pairs(pairs_csv, entries)
        if "any2many" not in protocol.pools and any(p.condition == "any2many" for p in protocol.pairs):
            # identify these conversions among the same voices as when the list was exported
            pools = build_protocol(entries, replace(cfg, any2many_pairs=1)).pools
            protocol.pools["any2many"] = pools.get("any2many", [])
    if not protocol.pairs:
        raise ClsvcError(f"{data}: no pairs could be made ({'; '.join(protocol.notes) or 'empty manifest'}); "
                         "the corpus needs held-out (val) utterances of training speakers and/or "
                         "unseen speakers — see `clsvc preprocess --holdout-per-speaker/--num-unseen`")

    mel_cfg = vc.mel_cfg if vc is not None else feats_mel
    with atomic_dir(out) as tmp:
        (tmp / "plots").mkdir()
        (tmp / "samples").mkdir()
        metrics = _run(protocol, vc, cfg, data, mel_cfg, entries, tmp, progress, bounds_cache,
                       reference_cache=reference_cache, meta={"checkpoint": str(checkpoint) if checkpoint else None,
                             "pairs_csv": str(pairs_csv) if pairs_csv else None,
                             "data": str(data), "title": title, "vocoder": str(vocoder),
                             "gv_max": vc.gv_max if vc is not None else None,
                             "contrast": vc.contrast if vc is not None else None,
                             "contour": vc.contour if vc is not None else None},
                       vocoder=vocoder, device=device)
    return metrics


def eval_config(overrides: dict[str, Any] | None = None, where: str = "eval settings") -> EvalConfig:
    """An :class:`EvalConfig` from a dict (e.g. the ``eval:`` section of an experiment file);
    ``where`` names the source in error messages."""
    return from_dict(EvalConfig, overrides or {}, where)


def _vocoder_id(vocoder: str) -> str:
    """What the bound scores depend on of the vocoder: its name, or its file's (a shipped
    vocoder's too) path and time."""
    path = vocoder_file(vocoder)
    return f"{path.resolve()}@{path.stat().st_mtime_ns}" if path is not None else str(vocoder)


class _BoundsCache:
    """Score rows of the two bounds by pair name, kept in a JSON file under a key of what they
    depend on (a cache made under other settings, or unreadable, is ignored and rewritten)."""

    def __init__(self, path: str | Path | None, cfg: EvalConfig, data: Path, mel_cfg: MelConfig,
                 pools: dict[str, list[str]], vocoder: str = DEFAULT_VOCODER):
        keep = {k: v for k, v in asdict(cfg).items()
                if k not in ("samples", "probes", "tsne", "tsne_utterances", "tsne_speakers", "bounds")}
        if not keep.get("any2many_pairs"):  # caches made before the setting existed stay valid
            keep.pop("any2many_pairs", None)
        self.path = Path(path) if path is not None else None
        self.key = json.dumps({"eval": keep, "data": str(Path(data).resolve()), "mel": asdict(mel_cfg),
                               "pools": pools, "vocoder": _vocoder_id(vocoder),
                               # a cache scored before a metric existed lacks its column: rescore
                               "metrics": [m.key for m in METRICS]}, sort_keys=True)
        self.rows: dict[str, list[Row]] = {}
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
                if saved.get("key") == self.key:
                    self.rows = saved["rows"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                self.rows = {}

    def save(self) -> None:
        from ..files import atomic_write_text

        if self.path is not None:
            atomic_write_text(self.path, json.dumps({"key": self.key, "rows": self.rows}) + "\n")


def _convert(vc: Converter, pair: Pair, src_mel: np.ndarray, audio: AudioCache) -> np.ndarray:
    """Converted mel (frames, n_mels) of ``pair``: into the voice of its references, or of the
    target speaker's stored vector. The source carries its waveform for systems that need it:
    the samples its stored mel was made from (trimmed as preprocessing trimmed them), so that a
    frame-level condition tracked on it (ClsVC's pitch) lines up with the mel frame by frame."""
    if pair.refs:
        voice = vc.voice([vc.reference(audio.wav(r)) for r in pair.refs])
    else:
        voice = vc.speaker_embedding(pair.target.speaker)
    src = pair.source
    return vc.convert_mel(Reference(src_mel, load_wav=lambda: audio.aligned_wav(src)), voice)


def _run(protocol: Protocol, vc: Converter | None, cfg: EvalConfig, data: Path, mel_cfg: MelConfig,
         entries: list[Entry], out: Path, progress: bool, bounds_cache: str | Path | None,
         meta: dict[str, Any], vocoder: str = DEFAULT_VOCODER, device: str = "cpu",
         reference_cache: bool = True) -> dict[str, Any]:
    """Convert and score every pair, then write the report files into the folder ``out``."""
    from tqdm import tqdm

    from ..audio import load_wav, save_wav, wav_to_mel
    from ..vocoder import get_vocoder

    t0 = time.time()
    audio = AudioCache(data, mel_cfg)
    vocode = vc.vocode if vc is not None else get_vocoder(vocoder, mel_cfg, device)
    sr = mel_cfg.sample_rate
    pairs = protocol.pairs
    refs = ReferenceCache(data / REFERENCE_CACHE if reference_cache else None)
    ctx = ScoringContext.build(protocol, cfg, mel_cfg, audio, progress, cache=refs)
    bounds = _BoundsCache(bounds_cache, cfg, data, mel_cfg, ctx.pools, vocoder)
    rows: list[Row] = []
    kept: dict[str, int] = {}
    for pair in tqdm(pairs, desc="evaluate", unit="pair", disable=not progress):
        src_mel = audio.mel(pair.source)
        if pair.converted is not None:
            conv_wav = load_wav(pair.converted, mel_cfg)
            conv_mel = wav_to_mel(conv_wav, mel_cfg)
        else:
            assert vc is not None
            conv_mel = _convert(vc, pair, src_mel, audio)
            conv_wav = vocode(conv_mel)
        audios = {"converted": (conv_wav, conv_mel)}
        reuse = cfg.bounds and pair.name in bounds.rows
        if cfg.bounds and not reuse:
            tgt_mel = audio.mel(pair.target)
            audios["target_gl"] = (vocode(tgt_mel), tgt_mel)
            audios["source_gl"] = (vocode(src_mel), src_mel)
        for kind, (wav, mel) in audios.items():
            row = new_row(pair, kind)
            _score_kind(row, wav, mel, pair, ctx)
            rows.append(row)
            if kind != "converted":
                bounds.rows.setdefault(pair.name, []).append(row)
        if reuse:
            rows.extend(dict(r) for r in bounds.rows[pair.name])
        if kept.get(pair.condition, 0) < cfg.samples:
            kept[pair.condition] = kept.get(pair.condition, 0) + 1
            save_wav(out / "samples" / f"{pair.name}_converted.wav", conv_wav, sr)
            save_wav(out / "samples" / f"{pair.name}_source.wav", audio.wav(pair.source), sr)
            save_wav(out / "samples" / f"{pair.name}_target.wav", audio.wav(pair.target), sr)
    if cfg.bounds:
        bounds.save()

    extra: dict[str, Any] = {}
    if vc is not None and cfg.probes:
        probes = probe_speakers(vc.model, data, entries, protocol, cfg)
        if probes.get("skipped") != NO_CONTENT:  # a system without a content code has no probes
            extra["probes"] = probes
    if vc is not None and cfg.tsne:
        tsne = speaker_code_tsne(vc.model, data, entries, cfg, out / "plots" / "fig5_tsne.png")
        if tsne is not None:  # None: no speaker encoder of the system's own
            extra["tsne"] = tsne
    report.plot_similarity(rows, cfg.threshold, out / "plots" / "fig3_similarity.png")
    report.plot_identification(rows, out / "plots" / "fig4a_identification.png")
    write_pairs(out / "pairs.csv", pairs)
    write_scores(out / "scores.csv", rows)
    metrics: dict[str, Any] = {
        "meta": {**meta, "date": time.strftime("%Y-%m-%d %H:%M"), "minutes": (time.time() - t0) / 60,
                 "eval_config": asdict(cfg), "notes": protocol.notes,
                 "pairs": {c: n for c, n in ((c, sum(p.condition == c for p in pairs)) for c in CONDITIONS)
                           if n or c != "any2many"},
                 "parallel_pairs": sum(p.parallel for p in pairs)},
        "summary": summarize(rows), **extra,
    }
    if vc is not None:
        metrics["meta"]["step"] = int(getattr(vc, "step", 0) or 0)
        metrics["meta"]["system"] = vc.system
        metrics["meta"]["config"] = vc.cfg.to_dict()
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=float) + "\n")
    (out / "report.md").write_text(report.render(metrics))
    return metrics
