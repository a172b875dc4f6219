"""Shared test helpers (fixtures live in conftest.py and build on these).

* Tiny generated speech-like audio: the "speakers" are source-filter toys, a harmonic pulse
  train at a speaker-specific pitch sent through vowel formant resonators scaled by a
  speaker-specific vocal-tract factor; the "content" is a sequence of vowels. Nothing is
  downloaded and no shared data is needed.
* A tiny model config (:data:`TINY`) and, per system, the overrides that make it tiny
  (:data:`SYSTEMS`).
* Training scaffolding: train N steps and read the log (:func:`train_steps`,
  :func:`train_system`), and a full run next to one stopped half-way and resumed
  (:func:`full_and_resumed`).

Test modules import from here (``from helpers import ...``): pytest's default ``prepend`` import
mode puts this folder on ``sys.path`` when it imports ``tests/conftest.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy import signal

SR = 16000
VOWELS = [(730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (640, 1190, 2390)]
SPEAKERS = {"spk_a": (110.0, 0.95), "spk_b": (210.0, 1.15), "spk_c": (150.0, 1.05)}
MORE_SPEAKERS = {"spk_d": (180.0, 1.10), "spk_e": (130.0, 0.90)}
GENDERS = {"spk_a": "M", "spk_b": "F", "spk_c": "M", "spk_d": "F", "spk_e": "M"}

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


def tiny_config(*extra: str):
    """The ``cpu`` config made tiny (:data:`TINY`) plus ``extra`` overrides."""
    from clsvc.config import load_config

    return load_config("cpu", TINY + list(extra))


# ----------------------------------------------------------------------------------------------
# The systems and their tiny configs


@dataclass(frozen=True)
class SystemSpec:
    """What the shared contract (tests/test_systems.py) needs to know of one system.

    ``tiny``: overrides that make it small on top of :data:`TINY`; ``voice``/``voice_dim``: the
    class name and size of its voice part with those overrides; ``train``: extra overrides of
    its 40-step run, whose last logged ``recon`` must be below ``recon_ratio`` times the first
    (and ``total`` must drop too where ``total_drops``); ``resume``: extra overrides of the
    exact-resume check, chosen so that the state a resume must restore is exercised; ``terms``:
    loss terms its log rows must hold (the resume check compares every logged value).
    """

    name: str
    tiny: tuple[str, ...]
    voice: str
    voice_dim: int
    train: tuple[str, ...] = ()
    recon_ratio: float = 0.75
    total_drops: bool = False
    resume: tuple[str, ...] = ()
    terms: tuple[str, ...] = ("total", "recon")  # logged terms that the resume check must find

    @property
    def one_shot(self) -> bool:
        return self.voice != "TableVoice"

    def config(self, *extra: str):
        return tiny_config(*self.tiny, *extra)


SYSTEMS: dict[str, SystemSpec] = {s.name: s for s in [
    # The conversion-code term draws a batch permutation from the RNG each step: resuming must
    # restore that stream too, so it is switched on for the resume check.
    SystemSpec("clsvc", (), "EncoderVoice", 16, total_drops=True, resume=("loss.convert_code=0.5",),
               terms=("total", "recon", "code", "cls", "adv", "conv_code")),
    SystemSpec("autovc", ("model.system=autovc", "autovc.bottleneck_dim=8", "autovc.downsample=8"),
               "DVectorVoice", 256, total_drops=True, terms=("total", "recon", "code")),
    # An EMA codebook: its running counts are buffers that must come back with the weights.
    SystemSpec("vqvc", ("model.system=vqvc", "vqvc.channels=32", "vqvc.code_dim=8", "vqvc.codebook_size=16"),
               "EncoderVoice", 3 * 8, resume=("vqvc.codebook_ema=0.9",),
               terms=("total", "recon", "vq", "vq_perplexity")),
    # The KL warm-up is still rising at step 8 and z is sampled every step: both the step counter
    # (a buffer in the weights) and the torch RNG must come back for the losses to match.
    SystemSpec("vae", ("model.system=vae", "vae.latent_dim=8", "vae.speaker_emb_dim=8", "vae.channels=32"),
               "TableVoice", 8, train=("vae.kl_anneal_steps=20",),
               resume=("vae.kl_anneal_steps=16", "vae.kl_weight=0.5"),
               terms=("total", "recon", "recon_pre", "kl", "kl_weight")),
    # id_steps=6 switches the identity loss off after the resume point: the step counter must
    # come back with the weights, and the targets drawn from the RNG must be the same.
    SystemSpec("stargan", ("model.system=stargan", "stargan.gen_channels=8", "stargan.res_channels=16",
                           "stargan.res_blocks=2", "stargan.disc_channels=8"),
               "TableVoice", 3, recon_ratio=0.8, resume=("stargan.id_steps=6",),
               terms=("total", "recon", "g_adv", "id", "d_loss", "d_real", "d_fake")),
]}


# ----------------------------------------------------------------------------------------------
# Training scaffolding


@dataclass
class Run:
    """A finished training run: its folder, last checkpoint and log rows."""

    path: Path
    ckpt: Path
    cfg: Any = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # "train" rows of log.jsonl
    val: list[dict[str, Any]] = field(default_factory=list)  # "val" rows

    def weights(self) -> dict[str, Any]:
        from clsvc.checkpoint import load_checkpoint

        return load_checkpoint(self.ckpt)["model"]


def read_run(run: Path, cfg: Any = None) -> Run:
    """The run in ``run`` as it is on disk now."""
    from clsvc.training import read_log

    return Run(run, run / "checkpoints" / "last.pt", cfg, read_log(run), read_log(run, "val"))


def train_steps(cfg: Any, features: Path, run: Path, **kw: Any) -> Run:
    """Train ``cfg`` (None with ``resume=True``: the run's own) on ``features`` into ``run`` and read
    back its log. ``kw`` go to :func:`clsvc.training.train` (``resume``, ``overrides``)."""
    from clsvc.training import train

    ckpt = train(cfg, features, run, progress=False, **kw)
    out = read_run(run, cfg)
    assert out.ckpt == ckpt
    return out


# The run every system's contract trains: 40 steps at a rate that moves a tiny model quickly,
# saved once at the end (saving does not change the run; it only costs time).
TRAIN_40 = ("train.max_steps=40", "train.log_every=10", "optim.lr=3e-3", "train.ckpt_every=100")


def train_system(name: str, features: Path, run: Path) -> Run:
    """System ``name``'s 40-step run (:data:`TRAIN_40` plus its ``SystemSpec.train``)."""
    spec = SYSTEMS[name]
    return train_steps(spec.config(*TRAIN_40, *spec.train), features, run)


@dataclass
class ResumePair:
    """The same training run done in one go (``full``) and stopped half-way then resumed
    (``part``), each logging every step."""

    full: Run
    part: Run


def full_and_resumed(features: Path, root: Path, *overrides: str, steps: int = 8) -> ResumePair:
    """Train ``tiny_config(*overrides)`` for ``steps`` steps into ``root/full``; into ``root/part``
    for ``steps // 2`` steps and then resume it (the run's own config, a larger step budget) up to
    ``steps``. Both log every step and save only at the end of each command."""
    common = (*overrides, "train.log_every=1", "train.ckpt_every=100")
    full = train_steps(tiny_config(f"train.max_steps={steps}", *common), features, root / "full")
    train_steps(tiny_config(f"train.max_steps={steps // 2}", *common), features, root / "part")
    part = train_steps(None, features, root / "part", resume=True, overrides=[f"train.max_steps={steps}"])
    return ResumePair(full, part)


def system_resume_pair(name: str, features: Path, root: Path) -> ResumePair:
    """:func:`full_and_resumed` of system ``name`` with its ``SystemSpec.resume`` overrides."""
    spec = SYSTEMS[name]
    return full_and_resumed(features, root, *spec.tiny, *spec.resume)


def cli_error(capsys: Any, argv: list[Any]) -> str:
    """Run ``clsvc ARGV`` in-process and return its error: exit 2, exactly one ``clsvc: error:``
    line on stderr, no traceback."""
    from clsvc.cli import main

    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("clsvc: error: ") and "Traceback" not in err, err
    return err


def features_with_wav(corpus: Path, out: Path) -> Path:
    """``clsvc preprocess --keep-wav`` of a generated corpus into ``out`` (utterance ``_006`` of
    every speaker held out), in-process and on one worker."""
    from clsvc.config import MelConfig
    from clsvc.data import SplitSpec, preprocess

    preprocess(corpus, out, MelConfig(), split=SplitSpec(holdout_regex=r"_006$"), jobs=1, progress=False,
               keep_wav=True)
    return out


# A vocoder of a few thousand weights whose warm-up ends after 4 generator steps, as overrides on
# top of TINY (the `cpu` config made tiny): tests/test_vocoder.py, test_reconstruct.py.
TINY_VOCODER = ["model.system=vocoder", "vocoder.dim=16", "vocoder.intermediate=32", "vocoder.layers=2",
                "vocoder.mpd_periods=[2, 3]", "vocoder.mpd_channels=[4, 8, 8]", "vocoder.mrd_channels=4",
                "vocoder.mrd_resolutions=[[512, 128, 512], [256, 64, 256]]", "vocoder.warmup_steps=4",
                "vocoder.disc_every=2", "train.batch_size=2", "train.crop_frames=16", "train.log_every=2",
                "train.val_every=4", "train.ckpt_every=4", "train.val_batches=1", "train.threads=1",
                "train.sampling=utterance"]
