"""Shared fixtures: a tiny generated corpus, its features, a tiny model config and trained runs.

The helpers they build on (the generated speakers, the tiny configs, the training
scaffolding) live in tests/helpers.py; test modules import those with ``from helpers import``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import SYSTEMS, ResumePair, Run, system_resume_pair, tiny_config, train_system, write_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def features(corpus, tmp_path_factory) -> Path:
    from clsvc.config import MelConfig
    from clsvc.data import SplitSpec, preprocess

    out = tmp_path_factory.mktemp("features")
    preprocess(corpus, out, MelConfig(), split=SplitSpec(holdout_regex=r"_006$"), jobs=1, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_cfg():
    """``tiny_cfg(*overrides)``: the tiny ``cpu`` config (helpers.TINY) plus overrides."""
    return tiny_config


@pytest.fixture(scope="session")
def trained_run(features, tiny_cfg, tmp_path_factory) -> Path:
    """A tiny model trained for 8 steps (shared by the inference and CLI tests)."""
    from clsvc.training import train

    run = tmp_path_factory.mktemp("run")
    train(tiny_cfg("train.max_steps=8"), features, run, progress=False)
    return run


@pytest.fixture(scope="session")
def system_run(features, tmp_path_factory):
    """``system_run(name)``: system ``name``'s 40-step run (helpers.train_system), trained on first
    use and shared by the contract (test_systems.py) and the system's own tests."""
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in runs:
            runs[name] = train_system(name, features, tmp_path_factory.mktemp(f"{name}-run"))
        return runs[name]

    return get


@pytest.fixture(scope="session")
def system_resume(features, tmp_path_factory):
    """``system_resume(name)``: system ``name``'s full and resumed 8-step runs
    (helpers.system_resume_pair), made on first use and shared like :func:`system_run`."""
    pairs: dict[str, ResumePair] = {}

    def get(name: str) -> ResumePair:
        assert name in SYSTEMS, name
        if name not in pairs:
            pairs[name] = system_resume_pair(name, features, tmp_path_factory.mktemp(f"{name}-resume"))
        return pairs[name]

    return get


@pytest.fixture
def cli():
    """Run the CLI in a subprocess: returns (exit code, stdout, stderr)."""
    import subprocess

    def run(*args: str, cwd: Path | None = None, timeout: int = 300):
        r = subprocess.run([sys.executable, "-m", "clsvc", *map(str, args)], capture_output=True,
                           text=True, cwd=cwd, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    return run
