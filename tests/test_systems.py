"""The contract every system keeps (clsvc, autovc, vqvc, vae, stargan), on tiny configs:

(a) it builds from its config with a voice part of the right kind and size, parameter groups
    that cover every trainable parameter once, and real ``training_only`` prefixes;
(b) a few training steps through ``train()`` lower the loss;
(c) a run stopped half-way and resumed ends with the same weights and log as one done in one go;
(d) ``clsvc.load(last.pt)`` converts: one-shot from reference audio for one-shot systems, by a
    training speaker's name otherwise;
(e) ``export_model`` writes an inference-only file (no optimizer, no ``training_only`` weights)
    that converts to exactly the same waveform as the checkpoint.

The training runs are made once per system (conftest ``system_run`` / ``system_resume``) and
shared with the system-specific tests in test_system_*.py and test_training.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import clsvc
import clsvc.models
from clsvc.checkpoint import export_model, is_inference_only, load_checkpoint
from clsvc.errors import ClsvcError
from clsvc.models import Codes, Reference, build_system

from helpers import SPEAKERS, SR, SYSTEMS, synth_utterance


@pytest.fixture(scope="module", params=list(SYSTEMS))
def name(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def audio(tmp_path_factory):
    """A source utterance of spk_a and a reference utterance of spk_b (neither in the corpus)."""
    root = tmp_path_factory.mktemp("audio")
    src, ref = root / "src.wav", root / "ref.wav"
    sf.write(src, synth_utterance(*SPEAKERS["spk_a"], seed=901), SR)
    sf.write(ref, synth_utterance(*SPEAKERS["spk_b"], seed=902), SR)
    return src, ref


def target_of(name: str, ref) -> dict:
    """The conversion target: spk_b's reference audio (one-shot systems) or spk_b by name."""
    return {"targets": [ref]} if SYSTEMS[name].one_shot else {"target_speaker": "spk_b"}


@pytest.fixture(scope="module")
def converted(name, system_run, audio) -> np.ndarray:
    """The source converted into spk_b by the system's 40-step checkpoint."""
    src, ref = audio
    return clsvc.load(system_run(name).ckpt).convert(src, **target_of(name, ref))


# ---------------------------------------------------------------------------------------- (a)


def test_builds_from_config_with_its_voice_part(name):
    spec = SYSTEMS[name]
    cfg = spec.config()
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    model = build_system(cfg)
    assert cfg.model.system == name
    assert isinstance(model.voice, getattr(clsvc.models, spec.voice))
    assert model.voice.dim == model.speaker_dim == spec.voice_dim
    assert model.voice.one_shot == spec.one_shot

    # One optimizer per phase; together they optimise every trainable parameter exactly once.
    ids = []
    for phase in model.phases:
        groups = model.param_groups(phase)
        assert groups and all(g.get("lr_scale", 1.0) > 0 for g in groups)
        ids += [id(p) for g in groups for p in g["params"]]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}

    # Each training-only prefix names a real part (optional parts, like ClsVC's phone classifier
    # without loss.phone, are None); the inference state is the rest, and loads.
    state = model.state_dict()
    for prefix in model.training_only:
        part = getattr(model, prefix.rstrip("."))
        assert part is None or any(k.startswith(prefix) for k in state), prefix
    inference = model.inference_state_dict()
    assert set(inference) == {k for k in state if not k.startswith(model.training_only)}  # () matches none
    torch.manual_seed(1)
    fresh = build_system(cfg)
    fresh.load_inference_state(inference)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in inference.items())

    # Codes for the probes: frame-level content and the voice part's own speaker vectors.
    model.eval()
    mel = torch.rand(2, 40, 80, generator=torch.Generator().manual_seed(0))
    codes = model.codes(mel, torch.tensor([40, 30]))
    assert isinstance(codes, Codes)
    if codes.content is not None:
        assert codes.content.dim() == 3 and codes.content.shape[0] == 2 and torch.isfinite(codes.content).all()
    if codes.speaker is not None:
        assert codes.speaker.shape == (2, spec.voice_dim)
        assert torch.allclose(codes.speaker.norm(dim=-1), torch.ones(2), atol=1e-5)
        own = model.voice.vectors([Reference(mel[0].numpy())])[0]
        assert torch.allclose(codes.speaker[0], own, atol=1e-5)
    if not spec.one_shot:  # seen speakers only: one unit row per training speaker
        table = model.voice.table()
        assert table.shape == (3, spec.voice_dim) and torch.allclose(table.norm(dim=-1), torch.ones(3), atol=1e-5)


# ---------------------------------------------------------------------------------------- (b)


def test_a_few_steps_lower_the_loss(name, system_run):
    spec = SYSTEMS[name]
    run = system_run(name)
    assert [r["step"] for r in run.rows] == [10, 20, 30, 40]
    recon = [r["recon"] for r in run.rows]
    assert recon[-1] < spec.recon_ratio * recon[0], recon
    if spec.total_drops:
        assert run.rows[-1]["total"] < run.rows[0]["total"]
    assert run.val  # validation ran on held-out utterances
    ckpt = load_checkpoint(run.ckpt)
    assert ckpt["step"] == 40 and ckpt["speakers"] == sorted(SPEAKERS)
    assert ckpt["speaker_table"].shape == (3, spec.voice_dim)


# ---------------------------------------------------------------------------------------- (c)


def test_resume_continues_exactly(name, system_resume):
    spec = SYSTEMS[name]
    pair = system_resume(name)
    full, part = pair.full.rows, pair.part.rows
    assert [r["step"] for r in full] == [r["step"] for r in part] == list(range(1, 9))
    for a, b in zip(full, part, strict=True):
        keys = set(a) - {"kind", "step", "minutes"}
        assert keys == set(b) - {"kind", "step", "minutes"}
        assert set(spec.terms) <= keys, (spec.terms, keys)
        for k in sorted(keys):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    wa, wb = pair.full.weights(), pair.part.weights()
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5), k


# ---------------------------------------------------------------------------------------- (d)


def test_load_and_convert(name, system_run, audio, converted):
    spec = SYSTEMS[name]
    src, ref = audio
    vc = clsvc.load(system_run(name).ckpt)
    assert vc.system == name and not vc.model.training and vc.one_shot == spec.one_shot
    assert vc.speakers == sorted(SPEAKERS) and vc.step == 40
    wav = converted
    assert wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all() and np.abs(wav).max() > 0
    assert abs(len(wav) - 1.2 * SR) < 0.1 * SR
    if spec.one_shot:
        emb = vc.embed(ref)
        assert emb.shape == (spec.voice_dim,) and np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)
        assert np.linalg.norm(vc.embed([ref, src])) == pytest.approx(1.0, abs=1e-5)
        seen = vc.convert(src, target_speaker="spk_c")  # a training speaker's stored vector
        assert seen.shape == wav.shape and np.isfinite(seen).all()
    else:
        with pytest.raises(ClsvcError, match="--target-speaker"):
            vc.convert(src, [ref])
    with pytest.raises(ClsvcError, match="unknown speaker"):
        vc.convert(src, target_speaker="nobody")


# ---------------------------------------------------------------------------------------- (e)


def test_export_converts_like_the_checkpoint(name, system_run, audio, converted, tmp_path):
    src, ref = audio
    run = system_run(name)
    out = tmp_path / "model.pt"
    assert export_model(run.ckpt, out) == out
    saved, exported = load_checkpoint(run.ckpt), load_checkpoint(out)
    assert is_inference_only(exported) and not is_inference_only(saved)
    assert "optimizer" not in exported and "rng" not in exported and "scaler" not in exported
    training_only = clsvc.models.system_class(name).training_only
    weights = exported["model"]
    assert set(weights) == {k for k in saved["model"] if not k.startswith(training_only)}
    assert all(torch.equal(v, saved["model"][k]) for k, v in weights.items())
    if training_only:
        assert len(weights) < len(saved["model"])
    assert exported["config"] == saved["config"] and exported["speakers"] == saved["speakers"]
    assert torch.equal(exported["speaker_table"], saved["speaker_table"]) and exported["step"] == saved["step"]
    assert out.stat().st_size < run.ckpt.stat().st_size

    vc = clsvc.load(out)
    assert vc.system == name and vc.speakers == sorted(SPEAKERS)
    assert np.array_equal(vc.convert(src, **target_of(name, ref)), converted)
