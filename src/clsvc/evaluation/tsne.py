"""t-SNE of speaker codes (the paper's Fig. 5) with a separation score.

The picture alone cannot be compared across models, so every panel carries the silhouette score
of the codes themselves (cosine distance, in [-1, 1]; higher = speakers better separated),
computed on the full-dimensional codes, not on the 2-D projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(N, D) codes -> (N, 2) t-SNE coordinates (perplexity adapted to small N)."""
    from sklearn.manifold import TSNE

    n = len(x)
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {n}")
    perplexity = float(min(30.0, max(2.0, (n - 1) / 3)))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                metric="cosine").fit_transform(np.asarray(x, dtype=np.float64))


def separation(x: np.ndarray, labels: Sequence[Any] | np.ndarray) -> float:
    """Silhouette score of ``labels`` on (N, D) codes under cosine distance (NaN if undefined)."""
    from sklearn.metrics import silhouette_score

    lab = np.asarray(labels)
    k = len(set(lab.tolist()))
    if k < 2 or k >= len(lab):
        return float("nan")
    return float(silhouette_score(np.asarray(x, dtype=np.float64), lab, metric="cosine"))


def plot_tsne(points: np.ndarray, labels: Sequence[str], path: str | Path, title: str,
              genders: Sequence[str] | None = None) -> None:
    """Scatter (N, 2) points coloured by label (marker by gender when given) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    fig, ax = plt.subplots(figsize=(6, 5), dpi=120)
    lab = np.asarray(labels)
    marks = {"F": "o", "M": "^"}
    for i, name in enumerate(names):
        sel = lab == name
        g = genders[int(np.flatnonzero(sel)[0])] if genders is not None else ""
        ax.scatter(points[sel, 0], points[sel, 1], s=18, color=cmap(i % cmap.N), marker=marks.get(g, "o"),
                   label=f"{name} ({g})" if g else name, alpha=0.85)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(names) <= 20:
        ax.legend(fontsize=6, ncol=2, loc="best", frameon=False)
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
