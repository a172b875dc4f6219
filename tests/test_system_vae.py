"""VAE-VC (clsvc.models.vae), what is its own: shapes and terms, the KL warm-up in training and
its step counter coming back on resume. Training, exact resume, loading, conversion into a
training speaker and export are the shared contract (tests/test_systems.py)."""

import pytest
import torch

from clsvc.checkpoint import load_checkpoint
from clsvc.models import TableVoice, build_system

from helpers import SYSTEMS

VAE_TINY = SYSTEMS["vae"].tiny  # the tiny overrides the contract uses too


def _tiny_model(tiny_cfg, *extra):
    cfg = tiny_cfg(*VAE_TINY, *extra)
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    return build_system(cfg)


def test_forward_terms_and_shapes(tiny_cfg):
    model = _tiny_model(tiny_cfg, "vae.kl_anneal_steps=4", "vae.kl_weight=0.5")
    assert isinstance(model.voice, TableVoice) and not model.voice.one_shot and model.speaker_dim == 8
    mel = torch.rand(3, 24, 80)
    lengths = torch.tensor([24, 17, 9])
    speaker = torch.tensor([0, 1, 2])

    model.train()
    total, terms = model(mel, lengths, speaker)
    assert set(terms) == {"total", "recon", "recon_pre", "kl", "kl_weight"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert float(terms["kl_weight"]) == 0.0 and int(model.steps) == 1  # warm-up starts at 0
    total.backward()
    assert model.encoder.proj.weight.grad is not None and model.speakers.weight.grad is not None
    model(mel, lengths, speaker)
    _, terms = model(mel, lengths, speaker)
    assert float(terms["kl_weight"]) == pytest.approx(0.5 * 2 / 4) and int(model.steps) == 3

    # Eval mode: deterministic (z = mu) and the step counter does not move.
    model.eval()
    a = model(mel, lengths, speaker)[1]["total"]
    b = model(mel, lengths, speaker)[1]["total"]
    assert torch.equal(a, b) and int(model.steps) == 3
    assert "steps" in model.state_dict()  # saved with the weights

    table = model.voice.table()
    assert table.shape == (3, 8) and torch.allclose(table.norm(dim=-1), torch.ones(3))
    out = model.convert(mel, table[1])
    assert out.shape == mel.shape and out.min() >= 0 and out.max() <= 1
    # A raw (unnormalised) row decodes like the stored unit row; per-row targets work too.
    raw = model.speakers.weight[1].detach() * 3.0
    assert torch.allclose(model.convert(mel, raw), out, atol=1e-6)
    per_row = model.convert(mel, table[[2, 1, 0]])
    assert per_row.shape == mel.shape and torch.allclose(per_row[1], out[1], atol=1e-6)
    assert model.content(mel).shape == (3, 24, 8)


def test_training_warms_up_the_kl_weight(system_run):
    run = system_run("vae")  # vae.kl_anneal_steps=20 over 40 steps (helpers.SYSTEMS)
    weights = [r["kl_weight"] for r in run.rows]
    assert weights == sorted(weights) and weights[-1] == pytest.approx(run.cfg.vae.kl_weight)
    assert all(r["kl"] >= 0 for r in run.rows)
    assert int(load_checkpoint(run.ckpt)["model"]["steps"]) == 40


def test_resume_restores_the_warm_up_counter(system_resume):
    # The contract's resume check runs with kl_anneal_steps=16, kl_weight=0.5: the warm-up is
    # still rising at step 8, so the step counter (a buffer in the weights) must come back.
    pair = system_resume("vae")
    assert pair.part.rows[-1]["kl_weight"] == pytest.approx(0.5 * 7 / 16)
    assert int(pair.full.weights()["steps"]) == int(pair.part.weights()["steps"]) == 8
