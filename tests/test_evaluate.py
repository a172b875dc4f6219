"""The evaluation suite: statistics, probes, t-SNE score, the pair protocol and `clsvc evaluate`
end to end on a tiny generated corpus (3 training speakers, 2 unseen)."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import shutil

import numpy as np
import pytest

from clsvc.evaluation.probes import probe_accuracy
from clsvc.evaluation.similarity import centroid, cosine
from clsvc.evaluation.stats import mean_ci, proportion_ci

from helpers import MORE_SPEAKERS, SPEAKERS, TINY, write_corpus

# ----------------------------------------------------------------------------- scorers


def test_mean_ci_matches_student_t():
    est = mean_ci([1.0, 2.0, 3.0, 4.0, None, float("nan")])
    assert est.n == 4 and est.mean == pytest.approx(2.5)
    # t(0.975, 3) = 3.182; sd = 1.291 -> half-width 2.054
    assert est.ci == pytest.approx(3.1824 * 1.2910 / 2, rel=1e-3)
    assert mean_ci([]).n == 0 and np.isnan(mean_ci([]).mean)
    assert mean_ci([5.0]).ci == 0


def test_proportion_ci_is_wilson_and_stays_in_range():
    est = proportion_ci([1] * 8 + [0] * 2)
    assert est.mean == pytest.approx(0.8)
    assert est.low == pytest.approx(0.490, abs=2e-3) and est.high == pytest.approx(0.943, abs=2e-3)
    assert proportion_ci([0] * 5).low == 0 and proportion_ci([0] * 5).high > 0
    assert proportion_ci([1] * 5).high == 1 and proportion_ci([1] * 5).low < 1


def test_cosine_and_centroid_bounds():
    rng = np.random.default_rng(0)
    a = rng.standard_normal(256)
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert -1 <= cosine(a, rng.standard_normal(256)) <= 1
    c = centroid([v / np.linalg.norm(v) for v in rng.standard_normal((5, 256))])
    assert np.linalg.norm(c) == pytest.approx(1.0)


def test_resemblyzer_same_audio_scores_one_and_voices_differ():
    from clsvc.dvector import embed_wav

    from helpers import synth_utterance

    a = synth_utterance(110.0, 0.95, seed=1, seconds=1.5)
    e1, e2 = embed_wav(a), embed_wav(a.copy())
    assert cosine(e1, e2) == pytest.approx(1.0, abs=1e-5)
    other = embed_wav(synth_utterance(210.0, 1.15, seed=2, seconds=1.5))
    assert cosine(e1, other) < 0.99


def test_probe_is_at_chance_on_random_labels_and_near_one_on_separable_data():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((600, 8))
    y = rng.integers(0, 4, 600)
    acc = probe_accuracy(x[:400], y[:400], x[400:], y[400:], epochs=20)
    assert abs(acc - 0.25) < 0.12
    centres = rng.standard_normal((4, 8)) * 4
    xs = centres[y] + 0.3 * rng.standard_normal((600, 8))
    assert probe_accuracy(xs[:400], y[:400], xs[400:], y[400:], epochs=20) > 0.97


def test_silhouette_separates_clusters():
    pytest.importorskip("sklearn")
    from clsvc.evaluation.tsne import separation, tsne_2d

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    centres = rng.standard_normal((3, 16)) * 5
    clustered = centres[labels] + 0.2 * rng.standard_normal((30, 16))
    assert separation(clustered, labels) > 0.8
    assert separation(rng.standard_normal((30, 16)), labels) < 0.1
    assert tsne_2d(clustered).shape == (30, 2)


# ----------------------------------------------------------------------------- protocol


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    """Features of 5 voices (spk_d, spk_e unseen; utterance 005 held out) and a tiny model."""
    from clsvc.config import MelConfig, load_config
    from clsvc.data import SplitSpec, preprocess
    from clsvc.training import train

    root = tmp_path_factory.mktemp("evaldata")
    write_corpus(root / "corpus", n_utts=5, seconds=1.0, speakers={**SPEAKERS, **MORE_SPEAKERS})
    feats = root / "feats"
    preprocess(root / "corpus", feats, MelConfig(), split=SplitSpec(unseen=["spk_d", "spk_e"],
               holdout_regex=r"_005$"), jobs=1, progress=False)
    train(load_config("cpu", TINY + ["train.max_steps=6"]), feats, root / "run", progress=False)
    return feats, root / "run" / "checkpoints" / "last.pt"


def test_protocol_is_deterministic_and_keeps_test_and_enrolment_apart(eval_data):
    from clsvc.config import EvalConfig
    from clsvc.data import read_manifest
    from clsvc.evaluation.protocol import build_protocol, sentence_key

    feats, _ = eval_data
    entries = read_manifest(feats)
    cfg = EvalConfig(seen_pairs=6, unseen_pairs=6, refs=2)
    p1, p2 = build_protocol(entries, cfg), build_protocol(entries, cfg)
    assert [p.name for p in p1.pairs] == [p.name for p in p2.pairs]
    assert [p.name for p in build_protocol(entries, EvalConfig(seed=1, seen_pairs=6, unseen_pairs=6)).pairs] \
        != [p.name for p in p1.pairs]
    seen = [p for p in p1.pairs if p.condition == "seen"]
    unseen = [p for p in p1.pairs if p.condition == "unseen"]
    assert len(seen) == 6 and len(unseen) == 6
    for p in seen:
        assert p.source.split == "val" and p.target.split == "val" and not p.refs
        assert p.source.speaker != p.target.speaker and p.source.speaker in SPEAKERS
    for p in unseen:
        assert {p.source.speaker, p.target.speaker} == {"spk_d", "spk_e"}
        assert len(p.refs) == 2 and all(r.speaker == p.target.speaker for r in p.refs)
        cent = {e.utt_id for e in p1.centroid[p.target.speaker]}
        assert not cent & {r.utt_id for r in p.refs}  # references are not centroid utterances
        assert p.target.utt_id not in cent and p.source.utt_id not in {e.utt_id for e in p1.centroid[p.source.speaker]}
    for p in p1.pairs:  # utterance ids 00N are "the same sentence" in this corpus
        assert p.parallel and sentence_key(p.source) == sentence_key(p.target)
    assert p1.pools == {"seen": ["spk_a", "spk_b", "spk_c"], "unseen": ["spk_d", "spk_e"]}


# The pairs of EvalConfig(seen_pairs=6, unseen_pairs=6, refs=2) on eval_data as the protocol made
# them before the any2many condition existed: (name, target utterance, references).
TWO_CONDITION_PAIRS = [
    ("seen_000_spk_b-to-spk_c_spk_b_005", "spk_c_005", []), ("seen_001_spk_b-to-spk_c_spk_b_005", "spk_c_005", []),
    ("seen_002_spk_b-to-spk_c_spk_b_005", "spk_c_005", []), ("seen_003_spk_c-to-spk_a_spk_c_005", "spk_a_005", []),
    ("seen_004_spk_b-to-spk_a_spk_b_005", "spk_a_005", []), ("seen_005_spk_c-to-spk_b_spk_c_005", "spk_b_005", []),
    ("unseen_006_spk_e-to-spk_d_spk_e_005", "spk_d_005", ["spk_d_001", "spk_d_004"]),
    ("unseen_007_spk_d-to-spk_e_spk_d_005", "spk_e_005", ["spk_e_002", "spk_e_004"]),
    ("unseen_008_spk_e-to-spk_d_spk_e_005", "spk_d_005", ["spk_d_004", "spk_d_001"]),
    ("unseen_009_spk_d-to-spk_e_spk_d_005", "spk_e_005", ["spk_e_002", "spk_e_004"]),
    ("unseen_010_spk_d-to-spk_e_spk_d_005", "spk_e_005", ["spk_e_004", "spk_e_002"]),
    ("unseen_011_spk_d-to-spk_e_spk_d_005", "spk_e_005", ["spk_e_004", "spk_e_002"]),
]


def test_any2many_pairs_go_from_unseen_speakers_into_training_speakers(eval_data, tmp_path):
    from dataclasses import replace

    from clsvc.config import EvalConfig
    from clsvc.data import read_manifest
    from clsvc.evaluation.protocol import build_protocol, read_pairs, write_pairs

    feats, _ = eval_data
    entries = read_manifest(feats)

    def pairs(p):
        return [(x.name, x.target.utt_id, [r.utt_id for r in x.refs]) for x in p.pairs]

    base = EvalConfig(seen_pairs=6, unseen_pairs=6, refs=2)
    assert base.any2many_pairs == 0
    old = build_protocol(entries, base)  # 0 any2many pairs: the protocol as it always was
    assert pairs(old) == TWO_CONDITION_PAIRS
    assert {p.condition for p in old.pairs} == {"seen", "unseen"} and set(old.pools) == {"seen", "unseen"}

    cfg = replace(base, any2many_pairs=8)
    on, again = build_protocol(entries, cfg), build_protocol(entries, cfg)
    assert pairs(on) == pairs(again)  # deterministic
    assert pairs(build_protocol(entries, replace(cfg, seed=1))) != pairs(on)
    assert [p for p in pairs(on) if not p[0].startswith("any2many_")] == TWO_CONDITION_PAIRS  # drawn last
    a2m = [p for p in on.pairs if p.condition == "any2many"]
    assert len(a2m) == 8 and [p.index for p in a2m] == list(range(12, 20))
    assert on.pools["any2many"] == ["spk_a", "spk_b", "spk_c"]  # identified among the target voices
    for p in a2m:
        assert p.source.split == "unseen" and p.source.speaker in MORE_SPEAKERS
        assert p.source in on.test[p.source.speaker]  # a test utterance, not an enrolment one
        assert p.target.split == "val" and p.target.speaker in SPEAKERS  # a held-out utterance
        assert not p.refs  # the stored table vector
        assert p.name.startswith("any2many_") and f"{p.source.speaker}-to-{p.target.speaker}" in p.name
    assert {p.source.speaker for p in a2m} == set(MORE_SPEAKERS)

    # Only training speakers the checkpoint knows are targets; with seen_target refs they get
    # references from their training utterances.
    known = build_protocol(entries, cfg, known_speakers=["spk_a", "spk_b"])
    assert {p.target.speaker for p in known.pairs if p.condition == "any2many"} <= {"spk_a", "spk_b"}
    assert known.pools["any2many"] == ["spk_a", "spk_b"]
    refs = build_protocol(entries, replace(cfg, seen_target="refs"))
    for p in (p for p in refs.pairs if p.condition == "any2many"):
        assert len(p.refs) == 2 and all(r.speaker == p.target.speaker and r.split == "train" for r in p.refs)

    # No unseen speakers: a note, no pairs.
    seen_only = build_protocol([e for e in entries if e.split != "unseen"], cfg)
    assert not any(p.condition == "any2many" for p in seen_only.pairs)
    assert any(n.startswith("any2many: not enough") for n in seen_only.notes)

    # The pair list carries the condition there and back.
    for p in on.pairs:
        p.converted = tmp_path / f"{p.name}.wav"
        p.converted.write_bytes(b"")
    write_pairs(tmp_path / "pairs.csv", on.pairs)
    back = read_pairs(tmp_path / "pairs.csv", entries)
    assert [(p.name, p.condition, p.parallel) for p in back] == [(p.name, p.condition, p.parallel) for p in on.pairs]


def test_sentence_key_prefers_transcripts():
    from clsvc.data.manifest import Entry
    from clsvc.evaluation.protocol import sentence_key

    a = Entry("p225", "F", "p225_003", "val", 10, "", "", "Six spoons of fresh snow peas.")
    b = Entry("p226", "M", "p226_017", "val", 10, "", "", "six spoons of fresh snow peas")
    c = Entry("p226", "M", "p226_003", "val", 10, "", "", "")
    assert sentence_key(a) == sentence_key(b)
    assert sentence_key(c) == "u:003" != sentence_key(a)


# ----------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_evaluate_cli_writes_report_metrics_plots_and_samples(eval_data, cli, tmp_path):
    feats, ckpt = eval_data
    out = tmp_path / "ev"
    code, stdout, stderr = cli("evaluate", "--data", feats, "--checkpoint", ckpt, "--out", out,
                               "--seen-pairs", "3", "--unseen-pairs", "3", "--refs", "2", "--samples", "1",
                               "--no-quality", "--no-pitch", "--quiet")  # those two: test_quality_and_pitch_columns
    assert code == 0, stderr
    assert "seen: n=3" in stdout and "unseen: n=3" in stdout
    m = json.loads((out / "metrics.json").read_text())
    for cond in ("seen", "unseen"):
        conv = m["summary"][cond]["converted"]
        assert {"mcd_audio", "mcd_feat", "cos_tgt", "cos_src", "closer", "accept", "id_target", "wer",
                "cer"} <= set(conv)
        assert conv["cos_tgt"]["n"] == 3 and conv["mcd_audio"]["mean"] > 0
        assert m["summary"][cond]["target_gl"]["closer"]["mean"] >= 0  # bounds are scored too
        assert "mcd_feat" not in m["summary"][cond]["target_gl"]  # 0 by definition, not reported
    assert any("/" in g for g in m["summary"])  # same-/cross-gender groups (genders are known)
    assert 0 <= m["probes"]["content_frame"] <= 1 and m["probes"]["chance"] == pytest.approx(1 / 3)
    assert m["tsne"]["n_speakers"] == 2 and -1 <= m["tsne"]["silhouette_cosine"] <= 1
    report = (out / "report.md").read_text()
    assert "## Table 1" in report and "MCD audio" in report and "± " in report and "Protocol" in report
    assert m["meta"]["contrast"] == 0.0 and "contrast" not in report.split("\n")[2]  # off: not named
    from clsvc.evaluation.report import render
    header = render({**m, "meta": {**m["meta"], "contrast": 0.5, "gv_max": 2.0, "contour": 1.0}}).split("\n")[2]
    assert "gv-max 2; contrast 0.5; contour 1" in header  # finishing settings are part of what was scored
    for png in ("fig3_similarity", "fig4a_identification", "fig5_tsne"):
        assert (out / "plots" / f"{png}.png").stat().st_size > 1000
    assert len(list((out / "samples").glob("*_converted.wav"))) == 2
    with (out / "scores.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6 * 3  # pairs x (converted + two bounds)
    assert not list(tmp_path.glob(".ev.tmp-*"))

    # Nothing is overwritten without --force.
    code, _, stderr = cli("evaluate", "--data", feats, "--checkpoint", ckpt, "--out", out)
    assert code == 2 and "already exists" in stderr and "--force" in stderr


@pytest.mark.slow
def test_scoring_another_systems_files(eval_data, cli, tmp_path):
    """--export-pairs, then score a "system" that returns the source unchanged: it must land
    near the source voice and score no probes/t-SNE (there is no model)."""
    feats, _ = eval_data
    pairs = tmp_path / "pairs.csv"
    code, stdout, stderr = cli("evaluate", "--data", feats, "--export-pairs", pairs,
                               "--seen-pairs", "3", "--unseen-pairs", "2")
    assert code == 0, stderr
    rows = list(csv.DictReader(pairs.open()))
    assert len(rows) == 5
    (tmp_path / "converted").mkdir()
    for r in rows:
        shutil.copy(r["source_audio"], tmp_path / r["converted"])
    out = tmp_path / "ev"
    code, stdout, stderr = cli("evaluate", "--data", feats, "--pairs", pairs, "--out", out, "--no-asr",
                               "--no-bounds", "--no-quality", "--no-pitch", "--quiet")
    assert code == 0, stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["summary"]["seen"]["converted"]["closer"]["mean"] < 0.5
    assert m["summary"]["seen"]["converted"]["cos_src"]["mean"] > m["summary"]["seen"]["converted"]["cos_tgt"]["mean"]
    assert "probes" not in m and "tsne" not in m
    assert "external system" in (out / "report.md").read_text()

    # A missing converted file is one clear error naming the line and the fix.
    (tmp_path / rows[0]["converted"]).unlink()
    code, _, stderr = cli("evaluate", "--data", feats, "--pairs", pairs, "--out", tmp_path / "ev2")
    assert code == 2 and "line 2" in stderr and "not found" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "ev2").exists()


@pytest.mark.slow
def test_evaluate_any2many_condition_end_to_end(eval_data, cli, tmp_path):
    """--any2many-pairs: unseen speakers into training speakers, scored with the bounds, in
    metrics.json, the report and the comparison table; its pair list scores the same way."""
    from clsvc.evaluation.compare import table1

    feats, ckpt = eval_data
    out = tmp_path / "ev"
    fast = ["--no-quality", "--no-pitch", "--no-asr", "--no-probes", "--no-tsne", "--quiet"]
    code, stdout, stderr = cli("evaluate", "--data", feats, "--checkpoint", ckpt, "--out", out,
                               "--seen-pairs", "2", "--unseen-pairs", "2", "--any2many-pairs", "3", "--refs", "2",
                               "--samples", "1", *fast)
    assert code == 0, stderr
    assert "any2many: n=3" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["meta"]["pairs"] == {"seen": 2, "any2many": 3, "unseen": 2}
    assert [g for g in m["summary"] if "/" not in g] == ["seen", "any2many", "unseen"]  # report order
    a2m = m["summary"]["any2many"]
    for kind in ("converted", "target_gl", "source_gl"):  # the conversion and both bounds
        assert {"cos_tgt", "cos_src", "closer", "accept", "id_target"} <= set(a2m[kind]), kind
        assert a2m[kind]["closer"]["n"] == 3 and a2m[kind]["id_target"]["n"] == 3
        assert "id_source" not in a2m[kind]  # the source is no candidate among the target voices
    assert "id_source" in m["summary"]["seen"]["converted"]  # the other conditions keep it
    with (out / "scores.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["condition"] == "any2many"]
    assert len(rows) == 3 * 3 and all(r["target"] in SPEAKERS and r["source"] in MORE_SPEAKERS for r in rows)
    assert {r["identified"] for r in rows} <= {"target", "other"}
    assert len(list((out / "samples").glob("any2many_*_converted.wav"))) == 1
    report = (out / "report.md").read_text()
    assert "| any2many | converted |" in report and "| any2many | real target → vocoder (bound) |" in report
    assert "2 seen, 3 any-to-many and 2 one-shot pairs" in report and "* Any-to-many pairs:" in report
    md = table1({"A": m})
    assert "any-to-many: closer to target" in md and "any-to-many: identified as target" in md
    assert "seen: identified as target" not in md  # the seen / one-shot column sets are unchanged
    assert md.index("seen: cos to target") < md.index("any-to-many: cos to target") < md.index("one-shot: cos")
    assert "*real target → vocoder (bound)*" in md and "*unconverted source → vocoder (bound)*" in md

    # The exported pair list (no --any2many-pairs when scoring it) is identified among the same voices.
    pairs = tmp_path / "pairs.csv"
    code, _, stderr = cli("evaluate", "--data", feats, "--export-pairs", pairs, "--seen-pairs", "0",
                          "--unseen-pairs", "0", "--any2many-pairs", "3")
    assert code == 0, stderr
    rows = list(csv.DictReader(pairs.open()))
    assert [r["condition"] for r in rows] == ["any2many"] * 3
    (tmp_path / "converted").mkdir()
    for r in rows:  # a "system" that returns the real target: identified as the target
        shutil.copy(r["target_audio"], tmp_path / r["converted"])
    code, _, stderr = cli("evaluate", "--data", feats, "--pairs", pairs, "--out", tmp_path / "ext", "--no-bounds",
                          *fast)
    assert code == 0, stderr
    ext = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert set(ext["summary"]) >= {"any2many"} and ext["meta"]["pairs"]["any2many"] == 3
    assert ext["summary"]["any2many"]["converted"]["id_target"]["n"] == 3
    assert "id_source" not in ext["summary"]["any2many"]["converted"]


@pytest.mark.slow
def test_table_systems_evaluate_any2many_pairs(eval_data, tmp_path):
    """A system that converts only into its training speakers (VAE-VC) skips the one-shot pairs
    but converts the any-to-many ones (their targets are rows of its table)."""
    from clsvc.config import load_config
    from clsvc.evaluation.suite import EvalConfig, evaluate
    from clsvc.training import train

    feats, _ = eval_data
    ckpt = train(load_config("cpu", TINY + SYSTEMS["vae"] + ["train.max_steps=3"]), feats, tmp_path / "run",
                 progress=False)
    cfg = EvalConfig(seen_pairs=2, unseen_pairs=2, any2many_pairs=2, refs=2, asr=False, samples=0, quality=False,
                     pitch=False, probes=False, tsne=False, seen_target="refs")
    m = evaluate(tmp_path / "ev", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert m["meta"]["system"] == "vae" and m["meta"]["eval_config"]["seen_target"] == "table"
    assert "unseen" not in m["summary"] and any("one-shot pairs skipped" in n for n in m["meta"]["notes"])
    assert m["meta"]["pairs"] == {"seen": 2, "any2many": 2, "unseen": 0}
    assert m["summary"]["any2many"]["converted"]["closer"]["n"] == 2
    assert m["summary"]["any2many"]["target_gl"]["id_target"]["n"] == 2  # with the bounds


def test_evaluate_errors(eval_data, cli, tmp_path):
    feats, ckpt = eval_data
    code, _, stderr = cli("evaluate", "--data", feats, "--out", tmp_path / "x")
    assert code == 2 and "--checkpoint" in stderr and "--pairs" in stderr
    code, _, stderr = cli("evaluate", "--data", tmp_path, "--checkpoint", ckpt, "--out", tmp_path / "x")
    assert code == 2 and "manifest.tsv" in stderr and "clsvc preprocess" in stderr
    code, _, stderr = cli("evaluate", "--data", feats, "--pairs", tmp_path / "none.csv", "--out", tmp_path / "x")
    assert code == 2 and "not found" in stderr
    code, _, stderr = cli("evaluate", "--data", feats, "--checkpoint", ckpt, "--out", tmp_path / "x",
                          "--seen-pairs", "0", "--any2many-pairs", "0", "--unseen-pairs", "0")
    assert code == 2 and "all 0" in stderr and "Traceback" not in stderr
    assert not (tmp_path / "x").exists()


def test_evaluate_compares_the_mel_definition_not_griffin_lims_iterations(eval_data, cli, tmp_path):
    """Features differing from the model only in the Griffin-Lim iteration count (it shapes no
    feature) are evaluated; a different mel definition is one error naming the field."""
    from clsvc.data.manifest import FEATURES_INFO

    feats, ckpt = eval_data
    for field, value, refused in (("griffin_lim_iters", 7, False), ("fmin", 60.0, True)):
        copy = tmp_path / f"feats-{field}"
        shutil.copytree(feats, copy)
        info = json.loads((copy / FEATURES_INFO).read_text())
        info["mel"][field] = value
        (copy / FEATURES_INFO).write_text(json.dumps(info))
        out = tmp_path / f"ev-{field}"
        code, _, stderr = cli("evaluate", "--data", copy, "--checkpoint", ckpt, "--out", out, "--seen-pairs", "1",
                              "--unseen-pairs", "0", "--any2many-pairs", "0", "--refs", "1", "--no-quality",
                              "--no-pitch", "--no-asr", "--no-mcd", "--no-probes", "--no-tsne", "--no-bounds",
                              "--quiet")
        if refused:
            assert code == 2 and "mel.fmin" in stderr and "preprocess" in stderr, stderr
            assert not out.exists()
        else:
            assert code == 0, stderr


SYSTEMS = {
    "autovc": ["model.system=autovc", "autovc.bottleneck_dim=8", "autovc.downsample=8"],
    "vqvc": ["model.system=vqvc", "vqvc.channels=32", "vqvc.code_dim=8", "vqvc.codebook_size=16"],
    "vae": ["model.system=vae", "vae.latent_dim=8", "vae.speaker_emb_dim=8", "vae.channels=32"],
    "stargan": ["model.system=stargan", "stargan.gen_channels=8", "stargan.res_channels=16",
                "stargan.res_blocks=2", "stargan.disc_channels=8"],
}


@pytest.mark.slow
@pytest.mark.parametrize("system", sorted(SYSTEMS))
def test_every_baseline_is_evaluated_by_the_same_suite(system, eval_data, tmp_path):
    """Each system trains a few steps and goes through `evaluate`: one-shot pairs for systems
    that can embed reference audio, seen pairs only (with a note) for table systems."""
    from clsvc.config import load_config
    from clsvc.evaluation.suite import EvalConfig, evaluate
    from clsvc.training import train

    feats, _ = eval_data
    ckpt = train(load_config("cpu", TINY + SYSTEMS[system] + ["train.max_steps=3"]), feats, tmp_path / "run",
                 progress=False)
    cfg = EvalConfig(seen_pairs=2, unseen_pairs=2, refs=2, asr=False, bounds=False, samples=0, quality=False,
                     pitch=False)
    m = evaluate(tmp_path / "ev", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert m["meta"]["system"] == system
    assert m["summary"]["seen"]["converted"]["cos_tgt"]["n"] == 2
    one_shot = system in ("autovc", "vqvc")
    assert ("unseen" in m["summary"]) == one_shot
    if not one_shot:
        assert any("one-shot pairs skipped" in n for n in m["meta"]["notes"])
    assert ("probes" in m) == (system in ("vqvc", "vae"))  # systems with a content code
    assert ("tsne" in m) == (system == "vqvc")  # systems with their own speaker encoder
    assert (tmp_path / "ev" / "report.md").is_file()


def test_bounds_cache_reuses_the_bound_scores(eval_data, tmp_path, monkeypatch):
    from clsvc.evaluation import suite
    from clsvc.evaluation.suite import EvalConfig, evaluate

    feats, ckpt = eval_data
    cfg = EvalConfig(seen_pairs=2, unseen_pairs=2, refs=2, asr=False, mcd=False, probes=False, tsne=False,
                     samples=0, quality=False, pitch=False)
    cache = tmp_path / "bounds.json"
    first = evaluate(tmp_path / "a", feats, checkpoint=ckpt, cfg=cfg, progress=False, bounds_cache=cache)
    assert cache.is_file()
    calls = []
    real = suite._score_kind
    monkeypatch.setattr(suite, "_score_kind", lambda row, *a: (calls.append(row["kind"]), real(row, *a)))
    second = evaluate(tmp_path / "b", feats, checkpoint=ckpt, cfg=cfg, progress=False, bounds_cache=cache)
    assert set(calls) == {"converted"}  # the bounds came from the cache
    for cond in ("seen", "unseen"):
        assert second["summary"][cond]["target_gl"] == first["summary"][cond]["target_gl"]
        assert second["summary"][cond]["converted"] == first["summary"][cond]["converted"]
    # Other settings, other bounds: the cache is not used.
    calls.clear()
    evaluate(tmp_path / "c", feats, checkpoint=ckpt, cfg=EvalConfig(**{**cfg.__dict__, "seed": 1}),
             progress=False, bounds_cache=cache)
    assert "target_gl" in calls



def test_reference_cache_keeps_centroids_and_pitch_levels_until_a_recording_changes(eval_data, tmp_path,
                                                                                    monkeypatch):
    import os

    from clsvc.data import read_manifest
    from clsvc.evaluation import pitch, scoring
    from clsvc.evaluation.refcache import FILE_NAME
    from clsvc.evaluation.suite import EvalConfig, evaluate

    feats = tmp_path / "feats"
    shutil.copytree(eval_data[0], feats, ignore=shutil.ignore_patterns(FILE_NAME))
    ckpt = eval_data[1]
    cfg = EvalConfig(seen_pairs=2, unseen_pairs=2, refs=2, asr=False, mcd=False, probes=False, tsne=False,
                     samples=0, quality=False, pitch=True)
    embedded, tracked = [], []
    real_embedding, real_level = scoring.AudioCache.embedding, pitch.pitch_level
    monkeypatch.setattr(scoring.AudioCache, "embedding",
                        lambda self, e: (embedded.append(e.source), real_embedding(self, e))[1])
    monkeypatch.setattr(pitch, "pitch_level", lambda *a, **k: (tracked.append(1), real_level(*a, **k))[1])

    first = evaluate(tmp_path / "a", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert (feats / FILE_NAME).is_file() and embedded and tracked
    scored = sorted(set(embedded))
    embedded.clear()
    tracked.clear()
    second = evaluate(tmp_path / "b", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert not embedded and not tracked  # every centroid and pitch level came from the cache
    assert json.dumps(second["summary"], sort_keys=True) == json.dumps(first["summary"], sort_keys=True)  # NaN too

    # The rest checks when the cache is read and written, which pitch tracking does not change:
    # leave its seconds out.
    cfg = dataclasses.replace(cfg, pitch=False)

    # A recording that changes is scored again (only the speakers it belongs to).
    changed = scored[0]
    speaker = next(e.speaker for e in read_manifest(feats) if e.source == changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    evaluate(tmp_path / "c", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert changed in embedded
    assert {e.speaker for e in read_manifest(feats) if e.source in embedded} == {speaker}

    # --no-reference-cache: neither read nor written.
    embedded.clear()
    (feats / FILE_NAME).unlink()
    evaluate(tmp_path / "d", feats, checkpoint=ckpt, cfg=cfg, progress=False, reference_cache=False)
    assert embedded and not (feats / FILE_NAME).exists()

    # An unreadable cache is ignored and replaced.
    (feats / FILE_NAME).write_bytes(b"not a zip")
    embedded.clear()
    evaluate(tmp_path / "e", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert embedded
    embedded.clear()
    evaluate(tmp_path / "f", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    assert not embedded

# ----------------------------------------------------------------------------- quality and F0 columns

QUALITY_KEYS = {"dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl"}
F0_KEYS = {"f0_rmse_cents", "f0_corr", "vuv_error"}


@pytest.mark.slow
def test_quality_and_pitch_columns(eval_data, tmp_path):
    """DNSMOS and F0 error on every kind, PESQ/STOI only on the real target's bound (the one audio
    time-aligned with a recording), all in range, in scores.csv, metrics.json and the report.
    Two seen pairs only: DNSMOS costs seconds per clip on a busy CPU."""
    pytest.importorskip("speechmos")
    pytest.importorskip("pyworld")
    from clsvc.evaluation.suite import EvalConfig, evaluate

    feats, ckpt = eval_data
    cfg = EvalConfig(seen_pairs=2, unseen_pairs=0, asr=False, mcd=False, probes=False, tsne=False, samples=0)
    m = evaluate(tmp_path / "ev", feats, checkpoint=ckpt, cfg=cfg, progress=False)
    seen = m["summary"]["seen"]
    for kind in ("converted", "target_gl", "source_gl"):
        assert QUALITY_KEYS | F0_KEYS <= set(seen[kind]), kind
        assert ({"pesq", "stoi"} <= set(seen[kind])) == (kind == "target_gl"), kind
        for key in QUALITY_KEYS | F0_KEYS:
            assert seen[kind][key]["n"] + seen[kind][key].get("nan", 0) == 2, (kind, key)
    with (tmp_path / "ev" / "scores.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 3
    for r in rows:
        for key in QUALITY_KEYS:
            assert 1.0 <= float(r[key]) <= 5.0, r
        # NaN where nothing is voiced in both (the 6-step model's conversion); else in range
        cents, corr, vuv = float(r["f0_rmse_cents"]), float(r["f0_corr"]), float(r["vuv_error"])
        assert (cents >= 0 or np.isnan(cents)) and (-1 <= corr <= 1 or np.isnan(corr)) and 0 <= vuv <= 1, r
        if r["kind"] == "target_gl":
            pesq, stoi = float(r["pesq"]), float(r["stoi"])
            assert 1.0 <= pesq <= 4.65 or np.isnan(pesq), r  # NaN: PESQ found no utterance
            assert 0.5 < stoi <= 1.0, r  # the vocoded recording against itself: aligned, intelligible
            assert 0 <= cents < 200, r  # the same utterance: F0 found and close
        else:
            assert r["pesq"] == r["stoi"] == "", r
        # The pitch level (every pair): the real target's bound has the target's level, the
        # source's bound the source's (the tiny corpus's voices are at least 500 cents apart).
        if r["kind"] != "converted":
            assert float(r["pitch_closer"]) == float(r["kind"] == "target_gl"), r
        if r["kind"] == "target_gl":
            assert 0 <= float(r["pitch_off_cents"]) < 100, r
    assert {"pitch_closer", "pitch_off_cents"} <= set(seen["converted"])
    # NaN results are left out of the means and counted (n + nan = pairs, checked above).
    pesq = seen["target_gl"]["pesq"]
    assert pesq["n"] == 0 or 1.0 <= pesq["mean"] <= 4.65
    report = (tmp_path / "ev" / "report.md").read_text()
    for text in ("## Table 2", "DNSMOS SIG", "DNSMOS BAK", "DNSMOS OVRL", "PESQ (wb)", "STOI", "F0 RMSE (cents)",
                 "F0 corr", "V/UV error", "DNSMOS P.835", "P.862.2", "log-F0 RMSE", "vocoder `griffin-lim`",
                 "real target → vocoder (bound)", "unconverted source → vocoder (bound)"):
        assert text in report, text
    assert "→ GL" not in report


def test_aligned_wav_is_the_audio_the_features_were_made_from(tmp_path):
    """PESQ/STOI of the real target's bound need the recording with the timing of its features:
    trimmed of silence as preprocess did (its recorded --trim-db), not the file as it is."""
    import soundfile as sf

    from clsvc.audio import trim_silence, wav_to_mel
    from clsvc.config import MelConfig
    from clsvc.data.manifest import Entry, write_features_info
    from clsvc.evaluation.scoring import AudioCache

    from helpers import SR, synth_utterance

    cfg = MelConfig()
    speech = synth_utterance(150.0, 1.0, seed=0, seconds=1.0)
    rec = np.concatenate([np.zeros(int(0.4 * SR)), speech, np.zeros(int(0.3 * SR))]).astype(np.float32)
    sf.write(tmp_path / "a.wav", rec, SR)
    e = Entry("spk", "F", "a", "val", 0, "", str(tmp_path / "a.wav"))
    audio = AudioCache(tmp_path, cfg)  # no features.json: preprocess's default 40 dB
    assert audio.trim_db == 40.0
    aligned = audio.aligned_wav(e)
    assert np.array_equal(aligned, trim_silence(audio.wav(e), 40.0, cfg))
    assert abs(len(aligned) - len(speech)) < 2 * cfg.win_length and len(audio.wav(e)) == len(rec)
    assert len(wav_to_mel(aligned, cfg)) == 1 + len(aligned) // cfg.hop_length  # the features' frames
    if importlib.util.find_spec("pystoi"):
        from clsvc.evaluation.quality import stoi
        from clsvc.vocoder import get_vocoder

        vocoded = get_vocoder("griffin-lim", cfg, "cpu")(wav_to_mel(aligned, cfg))
        assert stoi(aligned, vocoded, SR) > stoi(audio.wav(e), vocoded, SR) + 0.2
    write_features_info(tmp_path, cfg, {"trim_db": 0})  # features made without trimming
    assert len(AudioCache(tmp_path, cfg).aligned_wav(e)) == len(rec)


@pytest.mark.parametrize("module, flag", [("quality", "--no-quality"), ("pitch", "--no-pitch")])
def test_missing_quality_or_pitch_packages_is_one_error_before_any_work(module, flag, monkeypatch, capsys,
                                                                        tmp_path):
    from clsvc.cli import main

    monkeypatch.setattr(importlib.import_module(f"clsvc.evaluation.{module}"), "available", lambda: False)
    # No corpus and no checkpoint there: the error must come before either is read.
    args = ["evaluate", "--data", str(tmp_path / "no-feats"), "--checkpoint", str(tmp_path / "no.pt"),
            "--out", str(tmp_path / "ev"), "--no-asr"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "pip install 'clsvc[eval]'" in err and flag in err and "Traceback" not in err
    assert not (tmp_path / "ev").exists()
    # With the flag, the check passes and the run gets as far as the (missing) corpus.
    assert main([*args, flag]) == 2
    err = capsys.readouterr().err
    assert "clsvc[eval]" not in err and "manifest" in err


def test_bounds_cache_is_keyed_on_the_quality_and_pitch_flags(tmp_path):
    """Bound scores made with other scorers, or by a version without these flags, are not reused."""
    import dataclasses
    import json

    from clsvc.config import EvalConfig, MelConfig
    from clsvc.evaluation.suite import _BoundsCache

    def key(**flags):
        return _BoundsCache(None, EvalConfig(**flags), tmp_path, MelConfig(), {}).key

    assert len({key(), key(quality=False), key(pitch=False), key(quality=False, pitch=False)}) == 4
    # A cache written before the flags existed: its key has no "quality"/"pitch".
    cache = tmp_path / "bounds.json"
    new = json.loads(key())
    old = {**new, "eval": {k: v for k, v in new["eval"].items() if k not in ("quality", "pitch")}}
    cache.write_text(json.dumps({"key": json.dumps(old, sort_keys=True), "rows": {"p": [{"kind": "target_gl"}]}}))
    assert _BoundsCache(cache, EvalConfig(), tmp_path, MelConfig(), {}).rows == {}
    cache.write_text(json.dumps({"key": key(), "rows": {"p": [{"kind": "target_gl"}]}}))
    assert _BoundsCache(cache, EvalConfig(), tmp_path, MelConfig(), {}).rows  # same settings: reused
    assert {f.name for f in dataclasses.fields(EvalConfig)} >= {"quality", "pitch"}
    # A cache scored before a metric existed (its key lists fewer metrics) is rescored.
    fewer = {**new, "metrics": [k for k in new["metrics"] if k != "pitch_closer"]}
    cache.write_text(json.dumps({"key": json.dumps(fewer, sort_keys=True), "rows": {"p": [{"kind": "target_gl"}]}}))
    assert _BoundsCache(cache, EvalConfig(), tmp_path, MelConfig(), {}).rows == {}


def test_nan_scores_are_left_out_of_means_but_counted_and_reported():
    from clsvc.evaluation.compare import table1
    from clsvc.evaluation.metrics import summarize
    from clsvc.evaluation.report import render

    def row(kind, **scores):
        return {"pair": "p", "condition": "seen", "gender_group": "", "kind": kind, "cos_tgt": 0.8, **scores}

    rows = [row("converted", dnsmos_ovrl=3.0, f0_rmse_cents=50.0),
            row("converted", dnsmos_ovrl=2.0, f0_rmse_cents=float("nan")),
            row("target_gl", dnsmos_ovrl=3.5, pesq=3.0, stoi=0.9),
            row("target_gl", dnsmos_ovrl=3.5, pesq=float("nan"), stoi=0.8)]
    s = summarize(rows)["seen"]
    assert s["converted"]["dnsmos_ovrl"]["mean"] == pytest.approx(2.5) and "nan" not in s["converted"]["dnsmos_ovrl"]
    assert s["converted"]["f0_rmse_cents"]["n"] == 1 and s["converted"]["f0_rmse_cents"]["nan"] == 1
    assert s["target_gl"]["pesq"] == {**s["target_gl"]["pesq"], "mean": 3.0, "n": 1, "nan": 1}
    assert "pesq" not in s["converted"]  # never scored (None): left out, not counted
    cfg = {"seed": 0, "threshold": 0.75, "refs": 3, "centroid_utterances": 10, "seen_target": "table"}
    metrics = {"meta": {"checkpoint": None, "pairs_csv": "pairs.csv", "data": "feats", "title": "t",
                        "vocoder": "runs/voc/last.pt", "date": "today", "minutes": 0.1, "eval_config": cfg,
                        "notes": [], "pairs": {"seen": 2}, "parallel_pairs": 2},
               "summary": summarize(rows)}
    report = render(metrics)
    assert "vocoder `runs/voc/last.pt`" in report and "(`runs/voc/last.pt`)" in report
    assert "PESQ (wb): 1 of 2 (seen, real target → vocoder (bound))" in report
    assert "F0 RMSE (cents): 1 of 2 (seen, converted)" in report
    assert "| seen | converted |" in report.split("## Table 2")[1]
    md = table1({"A": metrics})
    assert "seen: DNSMOS OVRL" in md and "seen: F0 RMSE (cents)" in md and "2.50 ± " in md
    assert "*real target → vocoder (bound)*" in md
