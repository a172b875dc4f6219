"""The metric table of ``clsvc evaluate``: which scores a pair gets, how they are summarised
(mean with a Student-t interval, or a share with a Wilson interval) and how they are shown.

Shared by the suite (``scores.csv``, ``metrics.json``), the report and the experiment
comparison, so the three agree on keys, labels and digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .stats import Estimate, mean_ci, proportion_ci

#: One score row: a pair's columns, the audio ``kind`` and its metric values (see :mod:`.scoring`).
Row = dict[str, Any]

#: The conditions of the protocol, in report order: seen = many-to-many among training
#: speakers, any2many = unseen speakers into training speakers (only when asked for), unseen =
#: one-shot among unseen speakers.
CONDITIONS = ("seen", "any2many", "unseen")

#: How each condition is named in table headings.
CONDITION_LABEL = {"seen": "seen", "any2many": "any-to-many", "unseen": "one-shot"}

#: The audio scored for every pair: the conversion, and two bounds through the same
#: mel -> vocoder path as the conversion (the real target utterance, the unconverted source).
#: The keys are kept in ``scores.csv``, ``metrics.json`` and bounds caches; they say ``gl`` from
#: the days when Griffin-Lim was the only vocoder (``meta["vocoder"]`` names the one used).
KINDS = ("converted", "target_gl", "source_gl")

#: How each audio kind is named in tables and figures.
KIND_LABEL = {"converted": "converted", "target_gl": "real target → vocoder (bound)",
              "source_gl": "unconverted source → vocoder (bound)"}


@dataclass(frozen=True)
class Metric:
    """One score of a pair's audio.

    ``key`` names it in ``scores.csv`` / ``metrics.json``; ``label`` heads its table column
    (``thr`` stands for the acceptance threshold); ``proportion``: a share of 0/1 flags
    (Wilson interval, shown in percent), else a mean (Student-t interval) shown with ``digits``
    decimals; ``table``: the report table that shows it (1: speaker similarity, MCD and ASR;
    2: audio quality and F0 error).
    """

    key: str
    label: str
    proportion: bool
    digits: int
    table: int = 1

    def heading(self, threshold: float) -> str:
        """The column label with the acceptance threshold filled in."""
        return self.label.replace("thr", str(threshold))

    def estimate(self, values: Sequence[float | None]) -> Estimate:
        """Summary of one group's values (``None`` = not scored and NaN = scored without a result
        (e.g. PESQ found no utterance) are both skipped; ``n`` counts the values used)."""
        return proportion_ci(values) if self.proportion else mean_ci(values)

    def cell(self, d: dict[str, Any] | None) -> str:
        """Table cell of an :meth:`Estimate.to_dict` dict (``–`` when the metric is missing)."""
        if d is None:
            return "–"
        return Estimate.from_dict(d).fmt(self.digits, percent=self.proportion)


METRICS: tuple[Metric, ...] = (
    Metric("mcd_audio", "MCD audio (dB)", False, 2),
    Metric("mcd_feat", "MCD log-mel (dB)", False, 2),
    Metric("cos_tgt", "cos to target", False, 3),
    Metric("cos_src", "cos to source", False, 3),
    Metric("closer", "closer to target", True, 0),
    Metric("accept", "accepted ≥ thr", True, 0),
    Metric("id_target", "identified as target", True, 0),
    Metric("id_source", "identified as source", True, 0),
    # Pitch level (clsvc.evaluation.pitch.pitch_level: median voiced F0, WORLD Harvest): a voice
    # cue measured without Resemblyzer, so it also checks models that condition on its d-vectors.
    # NaN when a side has too little voicing; between voices of about the same level the share is
    # a coin toss, so read it with the cents.
    Metric("pitch_closer", "pitch level closer to target", True, 0),
    Metric("pitch_off_cents", "pitch level off target (cents)", False, 0),
    Metric("wer", "WER", False, 3),
    Metric("cer", "CER", False, 3),
    # Audio quality (clsvc.evaluation.quality): DNSMOS P.835 needs no reference, so every kind
    # gets it; PESQ and STOI are intrusive and only the real target's bound is time-aligned with a
    # recording (see scoring.score_kind).
    Metric("dnsmos_sig", "DNSMOS SIG", False, 2, table=2),
    Metric("dnsmos_bak", "DNSMOS BAK", False, 2, table=2),
    Metric("dnsmos_ovrl", "DNSMOS OVRL", False, 2, table=2),
    Metric("pesq", "PESQ (wb)", False, 2, table=2),
    Metric("stoi", "STOI", False, 3, table=2),
    # F0 error against the target speaker's recording of the same sentence after DTW
    # (clsvc.evaluation.pitch; parallel pairs). The V/UV error is a per-utterance share of frames,
    # averaged like a score (Student-t), not a share of 0/1 flags.
    Metric("f0_rmse_cents", "F0 RMSE (cents)", False, 1, table=2),
    Metric("f0_corr", "F0 corr", False, 3, table=2),
    Metric("vuv_error", "V/UV error", False, 3, table=2),
)

#: Metrics by key.
METRIC = {m.key: m for m in METRICS}


def summarize(rows: list[Row]) -> dict[str, dict[str, dict[str, dict[str, Any]]]]:
    """``{group: {kind: {metric key: Estimate dict}}}`` of the score rows (one per pair and
    audio kind), for the conditions (``seen``, ``any2many``, ``unseen``: those with rows) and
    ``seen/same-gender`` etc. where genders are known. Metrics no row of a group has (e.g. MCD
    without parallel pairs) are left out.

    A value is ``None`` when the metric was not scored on that row and NaN when it was scored but
    gave no result (PESQ found no utterance, STOI too little speech, F0 with no voiced frames).
    Both are left out of the estimate (its ``n`` counts only real values); the NaNs are counted
    in an extra ``"nan"`` entry of the metric's dict (present only when there are any), since a
    scorer that gives up is itself a finding about the audio."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r["condition"], []).append(r)
        if r.get("gender_group"):
            groups.setdefault(f"{r['condition']}/{r['gender_group']}", []).append(r)
    out: dict[str, dict[str, dict[str, dict[str, Any]]]] = {}
    for g in sorted(groups, key=lambda g: (CONDITIONS.index(g.split("/")[0]), g)):
        out[g] = {}
        for kind in KINDS:
            rs = [r for r in groups[g] if r["kind"] == kind]
            if not rs:
                continue
            out[g][kind] = {}
            for m in METRICS:
                vals = [r.get(m.key) for r in rs]
                if all(v is None for v in vals):
                    continue
                est = m.estimate(vals).to_dict()
                nans = sum(v is not None and math.isnan(v) for v in vals)
                if nans:
                    est["nan"] = nans
                out[g][kind][m.key] = est
    return out
