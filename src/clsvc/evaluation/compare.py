"""The comparison of an experiment: the paper's Table 1 layout over systems (a column set per
condition: seen, any-to-many when evaluated, one-shot), the ablation
(Fig. 4a: whom ClsVC's and ClsVCs' conversions are attributed to, same- vs cross-gender) and the
split-size panel (Fig. 5: t-SNE of S_x for each split-size variant)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..config import ACCEPT_THRESHOLD
from .metrics import CONDITION_LABEL, KIND_LABEL, METRIC, METRICS, Metric
from .report import finish_share_plot, pyplot

# The Table 1 columns: a subset of the suite's metrics (same labels, digits and CI kind).
# DNSMOS OVRL stands in for the paper's MOS column; F0 RMSE: how far the pitch is from the target's.
COLUMNS = [m for m in METRICS if m.key in ("mcd_audio", "mcd_feat", "cos_tgt", "closer", "accept", "wer",
                                           "dnsmos_ovrl", "f0_rmse_cents")]
# Any-to-many conversions also get "identified as the intended voice" (among the target voices).
ANY2MANY_COLUMNS = [*COLUMNS, METRIC["id_target"]]


def _cell(metrics: dict[str, Any], group: str, kind: str, m: Metric) -> str:
    return m.cell(metrics.get("summary", {}).get(group, {}).get(kind, {}).get(m.key))


def _has(results: dict[str, dict[str, Any]], conds: tuple[str, ...], col: Metric) -> bool:
    return any(col.key in m["summary"].get(g, {}).get("converted", {}) for m in results.values() for g in conds)


def table1(results: dict[str, dict[str, Any]], threshold: float = ACCEPT_THRESHOLD) -> str:
    """Markdown table: one row per system (+ the two bounds), seen and one-shot columns, and
    any-to-many columns between them when a system was evaluated on any-to-many pairs."""
    # Columns no system has (e.g. WER with eval.asr off) are left out: the seen and one-shot
    # sets are the same, the any-to-many set is its own.
    cols = [c for c in COLUMNS if _has(results, ("seen", "unseen"), c)]
    blocks = [("seen", cols)]
    if any("any2many" in m["summary"] for m in results.values()):
        blocks.append(("any2many", [c for c in ANY2MANY_COLUMNS if _has(results, ("any2many",), c)]))
    blocks.append(("unseen", cols))
    head = ["system", "steps"] + [f"{CONDITION_LABEL[c]}: {col.heading(threshold)}" for c, cs in blocks for col in cs]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, m in results.items():
        steps = m.get("train", {}).get("step", m["meta"].get("step", ""))
        cells = [_cell(m, c, "converted", col) for c, cs in blocks for col in cs]
        lines.append(f"| {name} | {steps} | " + " | ".join(cells) + " |")
    # Bounds depend only on the protocol, which every system shares: take them from the first
    # result that has them.
    for kind in ("target_gl", "source_gl"):
        for m in results.values():
            if any(kind in m["summary"].get(c, {}) for c, _ in blocks):
                cells = [("0" if kind == "target_gl" and col.key == "mcd_feat" else _cell(m, c, kind, col))
                         for c, cs in blocks for col in cs]
                lines.append(f"| *{KIND_LABEL[kind]}* | | " + " | ".join(cells) + " |")
                break
    return "\n".join(lines)


def _id_shares(m: dict[str, Any], group: str) -> tuple[float, float, int]:
    """Shares identified as target and as source of a group's conversions, and their n."""
    d = m["summary"].get(group, {}).get("converted", {})
    t, s = d.get("id_target"), d.get("id_source")
    if not t:
        return float("nan"), float("nan"), 0
    return t["mean"], s["mean"], t["n"]


def ablation_table(results: dict[str, dict[str, Any]], full: str, without: str) -> str:
    """Markdown: identification shares of the full model and its ablation, per group."""
    lines = ["| system | group | identified as target | identified as source | closer to target | n |",
             "|---|---|---|---|---|---|"]
    for name in (full, without):
        m = results[name]
        for g in [g for g in m["summary"] if g.startswith(("seen", "any2many", "unseen"))]:
            t, s, n = _id_shares(m, g)
            if not n:
                continue
            closer = m["summary"][g]["converted"].get("closer", {}).get("mean", float("nan"))
            lines.append(f"| {name} | {g} | {100 * t:.0f}% | {100 * s:.0f}% | {100 * closer:.0f}% | {n} |")
    return "\n".join(lines)


def plot_ablation(results: dict[str, dict[str, Any]], full: str, without: str, path: Path) -> None:
    """Fig. 4a: grouped bars, identification as target/source for the full model and the
    ablation, same- and cross-gender (seen pairs, else all pairs)."""
    plt = pyplot()
    groups = [g for g in ("seen/same-gender", "seen/cross-gender", "any2many/same-gender", "any2many/cross-gender",
                          "unseen/same-gender", "unseen/cross-gender")
              if any(_id_shares(results[n], g)[2] for n in (full, without))] or ["seen", "unseen"]
    fig, ax = plt.subplots(figsize=(1.8 * len(groups) + 2, 3.4), dpi=120)
    width = 0.2
    for j, (name, who) in enumerate([(full, "target"), (full, "source"), (without, "target"), (without, "source")]):
        vals = [_id_shares(results[name], g)[0 if who == "target" else 1] for g in groups]
        ax.bar([i + (j - 1.5) * width for i in range(len(groups))], vals, width,
               label=f"{name}: {who}", color=("tab:green", "tab:red", "lightgreen", "salmon")[j])
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g.replace("/", "\n") for g in groups], fontsize=8)
    finish_share_plot(fig, ax, "Ablation: speaker identification of conversions", path)


def plot_split_sizes(work: Path, names: list[str], slugs: dict[str, str], results: dict[str, dict[str, Any]],
                     path: Path) -> None:
    """Fig. 5: the t-SNE panels of the split-size variants side by side."""
    plt = pyplot()
    panels = [(n, work / "eval" / slugs[n] / "plots" / "fig5_tsne.png") for n in names]
    panels = [(n, p) for n, p in panels if p.is_file()]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), dpi=120, squeeze=False)
    for ax, (name, png) in zip(axes[0], panels, strict=True):
        ax.imshow(plt.imread(png))
        sil = results[name].get("tsne", {}).get("silhouette_cosine", float("nan"))
        ax.set_title(f"{name} (silhouette {sil:.2f})", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def write(work: Path, exp: Any, results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Write ``comparison.md`` / ``comparison.json`` / ``plots/`` under ``work``.

    ``exp`` is the :class:`clsvc.experiment.Experiment` (typed loosely: evaluation does not
    import the experiment runner, which imports it); ``results`` maps system name -> its
    ``metrics.json`` dict (plus ``train``). Returns the summary written to ``comparison.json``."""
    from ..files import atomic_write_text

    plots = work / "plots"
    plots.mkdir(exist_ok=True)
    threshold = exp.eval.get("threshold", ACCEPT_THRESHOLD)
    slugs = {s.name: s.slug for s in exp.systems}
    lines = [f"# Experiment {exp.name}", "",
             f"`{exp.source}`; budget per system: "
             + (", ".join(f"{k} {v}" for k, v in exp.budget.items()) or "the configs' own") + ". "
             "Every system is trained on the same features and evaluated on the same pairs with "
             "`clsvc evaluate` (per-system reports under `eval/`). Means ± 95% CI; shares with "
             "Wilson intervals.", "",
             "## Table 1", "", table1(results, threshold), ""]
    for name, m in results.items():
        notes = m["meta"].get("notes") or []
        if notes:
            lines.append(f"* {name}: " + "; ".join(notes))
    lines.append("")
    abl = exp.ablation
    if abl and abl.get("full") in results and abl.get("without_code") in results:
        plot_ablation(results, abl["full"], abl["without_code"], plots / "fig4a_ablation.png")
        lines += ["## Ablation (Fig. 4a): without the code-reconstruction loss", "",
                  ablation_table(results, abl["full"], abl["without_code"]), "",
                  "![Fig. 4a](plots/fig4a_ablation.png)", ""]
    split = [n for n in exp.split_sizes if n in results]
    if split:
        plot_split_sizes(work, split, slugs, results, plots / "fig5_split_sizes.png")
        lines += ["## Split sizes (Fig. 5): t-SNE of S_x of unseen speakers", "",
                  "| system | content / speaker dims | silhouette (cosine) | one-shot closer | probe C_x frame |",
                  "|---|---|---|---|---|"]
        for n in split:
            m = results[n]
            mc = m["meta"].get("config", {}).get("model", {})
            sil = m.get("tsne", {}).get("silhouette_cosine", float("nan"))
            closer = m["summary"].get("unseen", {}).get("converted", {}).get("closer", {}).get("mean", float("nan"))
            probe = m.get("probes", {}).get("content_frame", float("nan"))
            lines.append(f"| {n} | {mc.get('content_dim')} / {mc.get('speaker_dim')} | {sil:.3f} | "
                         f"{100 * closer:.0f}% | {probe:.3f} |")
        lines += ["", "![Fig. 5](plots/fig5_split_sizes.png)", ""]
    lines += ["## Disentanglement probes (speaker accuracy of fresh classifiers)", "",
              "| system | chance | C_x frames | C_x pooled | speaker code |", "|---|---|---|---|---|"]
    for n, m in results.items():
        p = m.get("probes")
        if p and "skipped" not in p:
            lines.append(f"| {n} | {p['chance']:.3f} | {p['content_frame']:.3f} | {p['content_pooled']:.3f} | "
                         f"{'–' if p['speaker'] != p['speaker'] else format(p['speaker'], '.3f')} |")
    lines.append("")
    summary = {"experiment": exp.name, "source": str(exp.source), "budget": exp.budget,
               "systems": {n: {"summary": m["summary"], "probes": m.get("probes"), "tsne": m.get("tsne"),
                               "train": m.get("train")} for n, m in results.items()}}
    atomic_write_text(work / "comparison.json", json.dumps(summary, indent=2, default=float) + "\n")
    atomic_write_text(work / "comparison.md", "\n".join(lines))
    print("\n".join(lines[:12 + len(results) + 3]))
    print(f"\nwrote {work / 'comparison.md'}")
    return summary
