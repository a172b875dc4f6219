"""`clsvc experiment`: trains the listed systems with one budget, evaluates them, writes the
comparison; re-runs skip finished work and resume interrupted trainings."""

from __future__ import annotations

import json

import pytest
import yaml

from clsvc.checkpoint import load_checkpoint
from clsvc.errors import ClsvcError
from clsvc.experiment import load_experiment, run_experiment

from helpers import TINY

EVAL = {"seen_pairs": 2, "unseen_pairs": 0, "asr": False, "mcd": False, "bounds": False, "tsne": False,
        "samples": 0}


def write_exp(path, features, **extra):
    exp = {
        "name": "tiny",
        "data": {"features": str(features)},
        "budget": {"max_steps": 6, "max_minutes": 0},
        "eval": EVAL,
        "systems": {"ClsVC": {"config": "cpu", "overrides": TINY},
                    "ClsVCs": {"config": "cpu", "overrides": TINY + ["loss.alpha=0"]}},
        "ablation": {"full": "ClsVC", "without_code": "ClsVCs"},
        **extra,
    }
    path.write_text(yaml.safe_dump(exp))
    return path


@pytest.mark.slow
def test_runner_trains_evaluates_compares_then_skips_and_resumes(features, tmp_path, capsys):
    from clsvc.config import load_config
    from clsvc.training import train

    exp = write_exp(tmp_path / "exp.yaml", features)
    work = tmp_path / "work"
    # An interrupted run: ClsVCs stopped at step 3 of the 6-step budget.
    train(load_config("cpu", TINY + ["loss.alpha=0", "train.max_steps=3"]), features, work / "runs" / "clsvcs",
          progress=False)
    summary = run_experiment(exp, work=work, progress=False)
    assert load_checkpoint(work / "runs" / "clsvc" / "checkpoints" / "last.pt")["step"] == 6
    assert load_checkpoint(work / "runs" / "clsvcs" / "checkpoints" / "last.pt")["step"] == 6  # resumed
    log = [json.loads(line) for line in (work / "runs" / "clsvcs" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r["kind"] == "train"][-1] == 6
    assert set(summary["systems"]) == {"ClsVC", "ClsVCs"}
    md = (work / "comparison.md").read_text()
    assert "## Table 1" in md and "| ClsVC | 6 |" in md and "Ablation" in md
    assert (work / "plots" / "fig4a_ablation.png").is_file()
    assert (work / "eval" / "clsvc" / "report.md").is_file()

    # Second call: nothing is retrained or re-evaluated.
    stamps = {p: p.stat().st_mtime_ns for p in [work / "runs" / "clsvc" / "checkpoints" / "last.pt",
                                                 work / "eval" / "clsvcs" / "metrics.json"]}
    run_experiment(exp, work=work, progress=False)
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_experiment_file_errors(features, tmp_path):
    bad = write_exp(tmp_path / "a.yaml", features, colour="red")
    with pytest.raises(ClsvcError, match="unknown key"):
        load_experiment(bad)
    bad = write_exp(tmp_path / "b.yaml", features, split_sizes=["Nope"])
    with pytest.raises(ClsvcError, match="split_sizes"):
        load_experiment(bad)
    exp = yaml.safe_load(write_exp(tmp_path / "c.yaml", features).read_text())
    exp["systems"]["X"] = {"config": "no-such-config"}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(exp))
    with pytest.raises(ClsvcError, match="no-such-config"):
        load_experiment(tmp_path / "c.yaml")
    with pytest.raises(ClsvcError, match="not found"):
        load_experiment(tmp_path / "missing.yaml")


def test_builtin_experiments_parse(monkeypatch, tmp_path):
    monkeypatch.setenv("CLSVC_CORPUS", str(tmp_path))
    for name in ("bench-cpu", "table1"):
        exp = load_experiment(name)
        assert exp.systems and exp.ablation and exp.split_sizes
    # Every built-in experiment parses without its corpus (checked only when it runs).
    from clsvc.config import BUILTIN_CONFIG_DIR

    names = sorted(p.stem for p in (BUILTIN_CONFIG_DIR / "experiments").glob("*.yaml"))
    assert {"bench-cpu", "table1", "bench-real"} <= set(names)
    for name in names:
        assert load_experiment(name).systems, name


def test_bench_real_experiment(monkeypatch, tmp_path):
    """The real-speech bench: ARCTIC + train-clean-100-sample for training, arctic_b held out,
    the 10 test-other speakers unseen; seen, any-to-many and one-shot pairs."""
    from clsvc.evaluation.suite import eval_config

    monkeypatch.setenv("CLSVC_CORPUS", str(tmp_path / "corpus"))
    exp = load_experiment("bench-real")
    assert exp.name == "bench-real"
    root = str(tmp_path / "corpus")
    assert exp.data["corpus"] == [f"{root}/arctic", f"{root}/librispeech/train-clean-100-sample",
                                  f"{root}/librispeech/test-other-sample"]
    assert exp.data["holdout_regex"] == "arctic_b"
    assert exp.data["unseen"] == ["1688", "1998", "2033", "2414", "2609", "3005", "3080", "3331", "367", "533"]
    cfg = eval_config(exp.eval)
    assert (cfg.seen_pairs, cfg.any2many_pairs, cfg.unseen_pairs, cfg.refs) == (30, 30, 30, 3)
    assert [s.name for s in exp.systems][:3] == ["real", "cpu", "cpu-paper"]
    assert {s.config for s in exp.systems} <= {"real", "cpu", "cpu-paper", "paper"}
    assert exp.budget["max_minutes"] > 0


def test_experiment_unseen_speakers(corpus, features, tmp_path):
    """data.unseen must be a list; numeric speaker names (LibriSpeech's) are read as text."""
    import shutil

    from clsvc.data import read_manifest
    from clsvc.experiment import _features

    exp = yaml.safe_load(write_exp(tmp_path / "a.yaml", features).read_text())
    exp["data"] = {"corpus": str(tmp_path / "corpus"), "unseen": "1688"}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(exp))
    with pytest.raises(ClsvcError, match="data.unseen must be a list"):
        load_experiment(tmp_path / "a.yaml")
    shutil.copytree(corpus, tmp_path / "corpus")
    (tmp_path / "corpus" / "spk_c").rename(tmp_path / "corpus" / "1688")
    exp["data"]["unseen"] = [1688]  # a YAML number
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(exp))
    feats = _features(load_experiment(tmp_path / "a.yaml"), tmp_path / "work", progress=False)
    assert {e.speaker for e in read_manifest(feats) if e.split == "unseen"} == {"1688"}
