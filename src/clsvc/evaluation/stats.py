"""Summary statistics with 95% confidence intervals.

Means of continuous scores (MCD, cosine, WER) get a Student-t interval; shares (closer to the
target, accepted at the threshold, identified as the target) get a Wilson score interval, which
stays inside [0, 1] and is sane for small n and for shares of 0 or 1.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """``mean`` with a 95% interval ``[low, high]`` from ``n`` values (``ci`` = half-width)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def ci(self) -> float:
        """Half-width of the interval."""
        return (self.high - self.low) / 2

    def to_dict(self) -> dict[str, Any]:
        """``{mean, ci95, low, high, n}``: the form kept in ``metrics.json``."""
        return {"mean": self.mean, "ci95": self.ci, "low": self.low, "high": self.high, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Estimate:
        """The estimate back from :meth:`to_dict`'s dict (``ci95`` is derived, not read)."""
        return cls(float(d["mean"]), float(d["low"]), float(d["high"]), int(d["n"]))

    def fmt(self, digits: int = 2, percent: bool = False) -> str:
        """``mean ± ci`` with ``digits`` decimals, or ``mean% [low, high]`` when ``percent``;
        ``–`` when there were no values."""
        if self.n == 0 or math.isnan(self.mean):
            return "–"
        if percent:
            return f"{100 * self.mean:.0f}% [{100 * self.low:.0f}, {100 * self.high:.0f}]"
        return f"{self.mean:.{digits}f} ± {self.ci:.{digits}f}"


def _finite(values: Iterable[float | None]) -> np.ndarray:
    a = np.array([v for v in values if v is not None], dtype=np.float64)
    return a[np.isfinite(a)]


def mean_ci(values: Iterable[float | None], level: float = 0.95) -> Estimate:
    """Mean and Student-t interval of the finite values (``None``/NaN are skipped)."""
    from scipy import stats

    a = _finite(values)
    n = len(a)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    m = float(a.mean())
    if n == 1:
        return Estimate(m, m, m, 1)
    half = float(stats.t.ppf(0.5 + level / 2, n - 1) * a.std(ddof=1) / math.sqrt(n))
    return Estimate(m, m - half, m + half, n)


def proportion_ci(flags: Iterable[bool | float | None], level: float = 0.95) -> Estimate:
    """Share of true values with a Wilson score interval."""
    from scipy import stats

    a = _finite(flags)
    n = len(a)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    p = float((a > 0.5).mean())
    z = float(stats.norm.ppf(0.5 + level / 2))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Estimate(p, max(0.0, centre - half), min(1.0, centre + half), n)
