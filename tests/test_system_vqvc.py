"""VQVC+ (clsvc.models.vqvc), what is its own: shapes, the speaker-vector round trip, the EMA
codebook (moves only in training, comes back on resume), codebook use in training and the shipped
configs. Training, exact resume, loading, one-shot conversion and export are the shared contract
(tests/test_systems.py)."""

import pytest
import torch

from clsvc.errors import ClsvcError
from clsvc.models import build_system

from helpers import SYSTEMS

TINY_VQVC = SYSTEMS["vqvc"].tiny  # the tiny overrides the contract uses too


def build(tiny_cfg, *extra):
    cfg = tiny_cfg(*TINY_VQVC, *extra)
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    return build_system(cfg)


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_shapes_and_terms(tiny_cfg, ema):
    model = build(tiny_cfg, f"vqvc.codebook_ema={ema}")
    assert model.speaker_dim == 3 * 8 and model.voice.one_shot
    mel = torch.rand(3, 37, 80)  # 37: not a multiple of 2**levels = 8
    lengths = torch.tensor([37, 25, 12])
    loss, terms = model(mel, lengths, torch.tensor([0, 1, 2]))
    assert set(terms) == {"total", "recon", "vq", "vq_perplexity"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert 1.0 <= terms["vq_perplexity"] <= 16.0
    loss.backward()
    model.eval()
    emb = model.embed(mel)
    assert emb.shape == (3, 24)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    # Each level's block is a unit vector / sqrt(levels).
    assert torch.allclose(emb.view(3, 3, 8).norm(dim=-1), torch.full((3, 3), 3 ** -0.5), atol=1e-5)
    assert model.content(mel).shape == (3, 19, 8)
    out = model.convert(mel, emb[1])
    assert out.shape == mel.shape and out.min() >= 0 and out.max() <= 1
    assert model.convert(mel, emb).shape == mel.shape
    with pytest.raises(ClsvcError, match="levels x code_dim"):
        model.convert(mel, torch.ones(10))


def test_ema_codebook_moves_only_in_training(tiny_cfg):
    model = build(tiny_cfg, "vqvc.codebook_ema=0.9")
    assert not any("embed" in n for n, _ in model.named_parameters())  # EMA: not optimised
    mel, lengths = torch.rand(2, 32, 80), torch.tensor([32, 20])
    before = model.quantizers[0].embed.clone()
    model.eval()
    with torch.no_grad():
        model(mel, lengths, torch.tensor([0, 1]))
    assert torch.equal(before, model.quantizers[0].embed)
    model.train()
    model(mel, lengths, torch.tensor([0, 1]))
    assert not torch.equal(before, model.quantizers[0].embed)


def test_convert_with_own_embedding_is_the_training_reconstruction(tiny_cfg):
    model = build(tiny_cfg).eval()
    mel = torch.rand(2, 40, 80)
    lengths = torch.tensor([40, 40])
    with torch.no_grad():
        enc = model.encode(mel, lengths)
        rec = model.decode(enc["q_st"], model.decoder_speakers(enc["speaker"]))[:, :40]
        _, terms = model(mel, lengths, torch.tensor([0, 1]))
    emb = model.embed(mel)
    out = model.convert(mel, emb)
    assert torch.allclose(out, rec.clamp(0, 1), atol=1e-5)
    assert float((rec - mel).abs().mean()) == pytest.approx(float(terms["recon"]), rel=1e-5)
    # A re-normalised or rescaled vector (e.g. the mean of several unit vectors) decodes the same.
    assert torch.allclose(model.convert(mel, 3.0 * emb), out, atol=1e-5)


def test_training_uses_more_than_one_code(system_run):
    rows = system_run("vqvc").rows
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert all(r["vq_perplexity"] > 1.5 for r in rows)  # more than one code in use


def test_resume_restores_the_ema_codebook(system_resume):
    # The contract's resume check runs with vqvc.codebook_ema=0.9 (helpers.SYSTEMS): the EMA
    # statistics are buffers saved with the weights and equal after the resume.
    pair = system_resume("vqvc")
    wa, wb = pair.full.weights(), pair.part.weights()
    ema = [k for k in wa if "ema_count" in k]
    assert ema
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in ema)


@pytest.mark.parametrize("name, channels", [("vqvc", 512), ("vqvc-cpu", 256)])
def test_shipped_configs_build(name, channels):
    from clsvc.config import load_config

    cfg = load_config(name)
    cfg.model.n_speakers = 3
    model = build_system(cfg)
    assert cfg.model.system == "vqvc" and cfg.vqvc.channels == channels
    assert model.speaker_dim == cfg.vqvc.levels * cfg.vqvc.code_dim == 96
