"""Shared fixtures: tiny generated speech-like audio and a tiny model config.

The "speakers" are source-filter toys: a harmonic pulse train at a speaker-specific pitch sent
through vowel formant resonators scaled by a speaker-specific vocal-tract factor. The "content"
is a sequence of vowels. Nothing is downloaded and no shared data is needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy import signal

SR = 16000
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390)]
SPEAKERS = {"spk_a": (110.0, 0.95), "spk_b": (210.0, 1.15), "spk_c": (150.0, 1.05)}

TINY = [
    "model.speaker_dim=16", "model.content_dim=8", "model.enc_channels=32", "model.enc_lstm_hidden=16",
    "model.dec_pre_lstm=32", "model.dec_channels=32", "model.dec_lstm_hidden=32",
    "model.postnet_channels=32", "model.postnet_layers=2", "model.adversary_hidden=32",
    "train.batch_size=4", "train.crop_frames=32", "train.log_every=2", "train.val_every=4",
    "train.ckpt_every=4", "train.val_batches=1", "train.table_utterances=2", "train.max_minutes=0",
    "train.threads=1",
]


def synth_utterance(f0: float, tract: float, seed: int, seconds: float = 1.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0_track = f0 * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(1, 3) * t))
    phase = 2 * np.pi * np.cumsum(f0_track) / SR
    source = sum(np.sin(k * phase) / k for k in range(1, 30)) + 0.02 * rng.standard_normal(n)
    out = np.zeros(n)
    seg = int(0.15 * SR)
    for start in range(0, n, seg):
        formants = VOWELS[rng.integers(len(VOWELS))]
        piece = source[start:start + seg]
        y = np.zeros_like(piece)
        for f in formants:
            fr = min(f * tract, SR / 2 - 500)
            r = np.exp(-np.pi * 100 / SR)
            b, a = [1 - r], [1, -2 * r * np.cos(2 * np.pi * fr / SR), r * r]
            y += signal.lfilter(b, a, piece)
        out[start:start + seg] = y
    env = np.minimum(1, np.minimum(t, t[-1] - t) / 0.05)
    out = out * env
    return (0.5 * out / np.max(np.abs(out))).astype(np.float32)


GENDERS = {"spk_a": "M", "spk_b": "F", "spk_c": "M", "spk_d": "F", "spk_e": "M"}
MORE_SPEAKERS = {"spk_d": (180.0, 1.10), "spk_e": (130.0, 0.90)}


def write_corpus(root: Path, n_utts: int = 6, seconds: float = 1.2, speakers: dict | None = None) -> Path:
    speakers = SPEAKERS if speakers is None else speakers
    root.mkdir(parents=True, exist_ok=True)
    for s, (spk, (f0, tract)) in enumerate(speakers.items()):
        (root / spk).mkdir(exist_ok=True)
        for i in range(n_utts):
            wav = synth_utterance(f0, tract, seed=100 * s + i, seconds=seconds)
            sf.write(root / spk / f"{spk}_{i + 1:03d}.wav", wav, SR)
    (root / "speakers.tsv").write_text("speaker\tgender\n" + "".join(f"{k}\t{GENDERS[k]}\n" for k in speakers))
    return root


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
    from clsvc.config import load_config

    def make(*extra: str):
        return load_config("cpu", TINY + list(extra))

    return make


@pytest.fixture(scope="session")
def trained_run(features, tiny_cfg, tmp_path_factory) -> Path:
    """A tiny model trained for 8 steps (shared by the inference and CLI tests)."""
    from clsvc.training import train

    run = tmp_path_factory.mktemp("run")
    train(tiny_cfg("train.max_steps=8"), features, run, progress=False)
    return run


@pytest.fixture
def cli():
    """Run the CLI in a subprocess: returns (exit code, stdout, stderr)."""
    import subprocess

    def run(*args: str, cwd: Path | None = None, timeout: int = 300):
        r = subprocess.run([sys.executable, "-m", "clsvc", *map(str, args)], capture_output=True,
                           text=True, cwd=cwd, timeout=timeout)
        return r.returncode, r.stdout, r.stderr

    return run
