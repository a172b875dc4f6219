"""The evaluation report: ``report.md`` from ``metrics.json`` and the paper-style figures.

Figures (PNG, matplotlib's Agg backend, no display needed):

* ``fig3_similarity.png`` — the paper's Fig. 3 ("fake speech detection"): Resemblyzer cosine
  of each utterance to the target voice against the acceptance threshold, per condition, for
  the converted audio and both bounds.
* ``fig4a_identification.png`` — Fig. 4(a): whom the converted speech is attributed to (target,
  source or another speaker), same-gender vs cross-gender.
* ``fig5_tsne.png`` — Fig. 5: t-SNE of S_x of unseen speakers (written by the suite).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .metrics import CONDITIONS, KIND_LABEL, METRICS, Metric, Row


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_similarity(rows: list[Row], threshold: float, path: str | Path) -> None:
    """Strip plot of cosine-to-target per condition and audio kind with the threshold line."""
    plt = pyplot()
    conds = [c for c in CONDITIONS if any(r["condition"] == c for r in rows)]
    kinds = [k for k in KIND_LABEL if any(r["kind"] == k for r in rows)]
    fig, axes = plt.subplots(1, max(1, len(conds)), figsize=(4.2 * max(1, len(conds)), 3.6), dpi=120,
                             squeeze=False)
    colours = {"converted": "tab:blue", "target_gl": "tab:green", "source_gl": "tab:red"}
    for ax, cond in zip(axes[0], conds, strict=False):  # one empty axis when there is no condition
        for i, kind in enumerate(kinds):
            ys = [r["cos_tgt"] for r in rows if r["condition"] == cond and r["kind"] == kind]
            if not ys:
                continue
            xs = [i + 0.25 * ((j * 0.618) % 1 - 0.5) for j in range(len(ys))]
            acc = sum(y >= threshold for y in ys) / len(ys)
            ax.scatter(xs, ys, s=10, alpha=0.7, color=colours[kind])
            ax.text(i, 1.0, f"{100 * acc:.0f}%", ha="center", va="bottom", fontsize=8)
        ax.axhline(threshold, color="k", lw=0.8, ls="--")
        ax.set_xticks(range(len(kinds)))
        ax.set_xticklabels([KIND_LABEL[k].replace(" (bound)", "\n(bound)") for k in kinds], fontsize=7)
        low = min([0.3] + [r["cos_tgt"] - 0.05 for r in rows if r["condition"] == cond])
        ax.set_ylim(low, 1.06)
        ax.set_title(f"{cond}: cosine to target voice (accepted ≥ {threshold})", fontsize=8)
    axes[0][0].set_ylabel("Resemblyzer cosine")
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def plot_identification(rows: list[Row], path: str | Path) -> None:
    """Stacked bars: share of converted utterances identified as target / source / other."""
    plt = pyplot()
    groups = []
    for cond in CONDITIONS:
        rs = [r for r in rows if r["condition"] == cond and r["kind"] == "converted"]
        if not rs:
            continue
        groups.append((cond, rs))
        for g in ("same-gender", "cross-gender"):
            sub = [r for r in rs if r.get("gender_group") == g]
            if sub:
                groups.append((f"{cond}\n{g}", sub))
    fig, ax = plt.subplots(figsize=(1.2 * max(3, len(groups)) + 1.5, 3.4), dpi=120)
    bottom = [0.0] * len(groups)
    for who, colour in (("target", "tab:green"), ("source", "tab:red"), ("other", "tab:gray")):
        vals = [sum(r["identified"] == who for r in rs) / len(rs) for _, rs in groups]
        ax.bar(range(len(groups)), vals, bottom=bottom, color=colour, label=who)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g for g, _ in groups], fontsize=7)
    finish_share_plot(fig, ax, "Speaker identification of converted speech", path)


def finish_share_plot(fig: Any, ax: Any, title: str, path: str | Path) -> None:
    """Shared styling of the bar charts of shares (y in [0, 1], legend beside) and the save."""
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of converted utterances")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, bbox_inches="tight")
    pyplot().close(fig)


def _acc(value: float) -> str:
    return "– (no speaker encoder)" if value != value else f"{value:.3f}"  # NaN: not applicable



def probe_lines(probes: dict[str, Any] | None) -> list[str]:
    """The report's lines on the disentanglement probes (``metrics["probes"]``; none without)."""
    lines: list[str] = []
    if probes and "skipped" not in probes:
        lines = ["## Disentanglement probes", "",
                 "Fresh MLP classifiers trained on the frozen codes of the training utterances of "
                  f"{probes['speakers']} training speakers and tested on their held-out utterances "
                  f"(speaker accuracy; chance {probes['chance']:.3f}). A speaker-free C_x scores near "
                  "chance; the adversary's own accuracy during training does not show this.", "",
                  "| code | speaker accuracy |", "|---|---|",
                  f"| C_x, single frames | {probes['content_frame']:.3f} |",
                  f"| C_x, time-averaged | {probes['content_pooled']:.3f} |",
                  f"| speaker code (S_x) | {_acc(probes['speaker'])} |", ""]
        if "phone_frame" in probes:
            lines += [f"A fresh probe of the same kind reads the **phone** of single C_x frames with accuracy "
                      f"**{probes['phone_frame']:.3f}** (the most frequent phone alone: "
                      f"{probes['phone_majority']:.3f}; {probes['phone_frames'][0]} training and "
                      f"{probes['phone_frames'][1]} held-out frames with a known phone, from forced alignment of "
                      "their transcripts): how much of what is said the content code keeps."
                      + (" The same probe on the input mel frame at the same time (80 bands, no context, the "
                         f"voice still in it): {probes['phone_mel_frame']:.3f}." if "phone_mel_frame" in probes
                         else ""), ""]
    elif probes:
        lines = [f"Probes skipped: {probes['skipped']}.", ""]
    return lines


def render(metrics: dict[str, Any]) -> str:
    """Markdown report of a ``metrics.json`` dict."""
    from .mcd import PROTOCOL as MCD_PROTOCOL
    from .pitch import PROTOCOL as F0_PROTOCOL

    meta, summary = metrics["meta"], metrics["summary"]
    cfg = meta["eval_config"]
    title = meta.get("title") or (Path(meta["checkpoint"]).parent.parent.name if meta.get("checkpoint")
                                  else "external system")
    lines = [f"# Evaluation: {title}", ""]
    what = (f"checkpoint `{meta['checkpoint']}`" + (f" (step {meta['step']})" if meta.get("step") else "")
            if meta.get("checkpoint") else f"converted files listed in `{meta['pairs_csv']}`")
    vocoder = meta.get("vocoder") or "griffin-lim"  # reports written before the choice: Griffin-Lim
    n_pairs = meta["pairs"]
    counts = (f"{n_pairs.get('seen', 0)} seen, {n_pairs['any2many']} any-to-many and " if n_pairs.get("any2many")
              else f"{n_pairs.get('seen', 0)} seen and ")
    finish = "".join(f"; {name} {meta[key]:g}" for key, name in (("gv_max", "gv-max"), ("contrast", "contrast"),
                                                        ("contour", "contour"))
                     if meta.get(key))  # the converter's finishing settings, when on
    lines += [f"{what}; vocoder `{vocoder}`{finish}; corpus `{meta['data']}`; {counts}"
              f"{n_pairs.get('unseen', 0)} one-shot pairs ({meta['parallel_pairs']} with a "
              f"ground-truth target recording); seed {cfg['seed']}; {meta['date']}, "
              f"{meta['minutes']:.1f} min.", ""]
    for n in meta.get("notes", []):
        lines.append(f"> note: {n}")
    if meta.get("notes"):
        lines.append("")

    shown = [m for m in METRICS if any(m.key in kinds.get(k, {}) for kinds in summary.values() for k in kinds)]
    for table, heading in TABLES.items():
        cols = [m for m in shown if m.table == table]
        if cols:
            lines += [heading, "", *_table(summary, cols, cfg["threshold"]), ""]
    missing = _nan_notes(summary, shown)
    if missing:
        lines += ["Scored without a result (left out of the means above): " + "; ".join(missing) + ".", ""]
    gender = [g for g in summary if "/" in g]
    if gender:
        keys: list[Metric] = [m for m in shown if m.key in ("mcd_audio", "mcd_feat", "cos_tgt", "cos_src",
                                                            "closer", "id_target", "id_source", "wer",
                                                            "dnsmos_ovrl", "f0_rmse_cents")]
        lines += ["## Same-gender vs cross-gender (converted audio)", "",
                  "| group | " + " | ".join(m.label for m in keys) + " |", "|" + "---|" * (1 + len(keys))]
        for g in gender:
            ms = summary[g].get("converted", {})
            lines.append(f"| {g} | " + " | ".join(m.cell(ms.get(m.key)) for m in keys) + " |")
        lines.append("")

    lines += ["## Figures", "", "![Fig. 3: similarity to the target voice](plots/fig3_similarity.png)", "",
              "![Fig. 4a: speaker identification](plots/fig4a_identification.png)", ""]
    tsne = metrics.get("tsne")
    if tsne and "skipped" not in tsne:
        lines += ["![Fig. 5: t-SNE of S_x](plots/fig5_tsne.png)", "",
                  f"t-SNE of S_x for {tsne['n_utterances']} utterances of {tsne['n_speakers']} "
                  f"{tsne['speakers']} speakers; silhouette (cosine, on the full codes) "
                  f"**{tsne['silhouette_cosine']:.3f}** (1 = perfectly separated, 0 = overlapping).", ""]
    elif tsne:
        lines += [f"t-SNE skipped: {tsne['skipped']}.", ""]
    lines += probe_lines(metrics.get("probes"))

    seen_target = "the stored training embedding" if cfg["seen_target"] == "table" else "mean of references"
    lines += ["## Protocol", "",
              "* Pairs: seen = training speakers, sources are their held-out utterances, target "
              f"embedding = {seen_target}; "
              f"one-shot = unseen speakers, target embedding = mean S_x of {cfg['refs']} reference "
              "utterances. Sources are chosen so that the target speaker said the same sentence "
              "whenever the corpus has one (the ground truth for MCD).",
              *([f"* Any-to-many pairs: unseen speakers' test utterances into training speakers with "
                 f"held-out utterances, target embedding = {seen_target}; the target's ground truth is "
                 "one of its held-out utterances (the same sentence when the corpus has one); "
                 "identified = the nearest centroid among those target speakers (so the unconverted "
                 "source is never a candidate and gets no identified-as-source share)."]
                if n_pairs.get("any2many") else []),
              f"* Speaker similarity: Resemblyzer (GE2E) cosine to each voice's centroid of up to "
              f"{cfg['centroid_utterances']} real enrolment utterances (disjoint from the test "
              f"sentences and, where possible, from the references); accepted = cosine ≥ "
              f"{cfg['threshold']}; identified = the nearest centroid among all speakers of the "
              "condition.",
              "* " + MCD_PROTOCOL,
              "* ASR: pocketsphinx (US English model shipped with it), WER/CER with jiwer on "
              "lower-cased text without punctuation, against the transcript (or the ASR of the real "
              "source when there is none).",
              "* Audio quality: DNSMOS P.835 (Microsoft's no-reference predictor of P.835 listening "
              "tests; ONNX models of the speechmos package) on a 1–5 MOS scale — SIG: quality of the "
              "speech signal, BAK: background noise (higher = less intrusive), OVRL: overall quality. "
              "A no-reference stand-in for a listening test's MOS, trained on real noisy and enhanced "
              "speech: compare systems on the same pairs rather than read it as an absolute MOS. "
              "Clips shorter than 9 s are looped up to the model's 9 s window.",
              "* PESQ (ITU-T P.862.2 wide-band, MOS-LQO 1.04–4.64) and STOI (intelligibility, 0–1) "
              "of the real target through the vocoder against its recording (trimmed of silence as "
              "the features were, so both have the same timing): the copy-synthesis quality of the "
              "vocoder. Both compare signals frame by frame and need the same timing, which converted "
              "audio (the source's timing) does not share with any recording, so it gets neither.",
              "* " + F0_PROTOCOL + " The reference is the target speaker's recording of the same "
              "sentence (parallel pairs), for the converted audio and both bounds.",
              f"* Bounds: the real target utterance and the unconverted source, both through the same "
              f"mel → vocoder (`{vocoder}`) path as the converted audio.", ""]
    return "\n".join(lines) + "\n"


#: The report's tables of :data:`~.metrics.METRICS`, by :attr:`~.metrics.Metric.table`.
TABLES = {1: "## Table 1: conversion quality (mean ± 95% CI; shares with Wilson 95% intervals)",
          2: "## Table 2: audio quality and F0 error (mean ± 95% CI)"}


def _table(summary: dict[str, Any], cols: list[Metric], threshold: float) -> list[str]:
    """Rows of one table: a line per condition and audio kind, a column per metric."""
    lines = ["| condition | audio | " + " | ".join(m.heading(threshold) for m in cols) + " |",
             "|" + "---|" * (2 + len(cols))]
    keys = [m.key for m in cols]
    for group in (g for g in summary if "/" not in g):
        for kind, ms in summary[group].items():
            cells = [m.cell(ms.get(m.key)) for m in cols]
            if kind == "target_gl" and "mcd_feat" in keys:
                cells[keys.index("mcd_feat")] = "0 (by definition)"
            lines.append(f"| {group} | {KIND_LABEL[kind]} | " + " | ".join(cells) + " |")
    return lines


def _nan_notes(summary: dict[str, Any], shown: list[Metric]) -> list[str]:
    """``"PESQ (wb): 1 of 6 (seen, real target → vocoder (bound))"`` for every metric of every
    condition and audio kind with values scored without a result (NaN; see
    :func:`~.metrics.summarize`)."""
    notes = []
    for group in (g for g in summary if "/" not in g):
        for kind, ms in summary[group].items():
            for m in shown:
                d = ms.get(m.key) or {}
                if d.get("nan"):
                    notes.append(f"{m.label}: {d['nan']} of {d['nan'] + d['n']} ({group}, {KIND_LABEL[kind]})")
    return notes
