"""VQVC+ (clsvc.models.vqvc): shapes, the speaker-vector round trip, training, checkpoint and
one-shot conversion, and exact resumption with an EMA codebook."""

import numpy as np
import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.errors import ClsvcError
from clsvc.models import build_system
from clsvc.checkpoint import load_checkpoint
from clsvc.training import read_log, train
from conftest import SPEAKERS, SR, synth_utterance

TINY_VQVC = ("model.system=vqvc", "vqvc.channels=32", "vqvc.code_dim=8", "vqvc.codebook_size=16")


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


def test_training_lowers_recon_and_converts_one_shot(features, tiny_cfg, tmp_path):
    cfg = tiny_cfg(*TINY_VQVC, "train.max_steps=40", "train.log_every=10", "optim.lr=3e-3")
    ckpt_path = train(cfg, features, tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["recon"] < 0.75 * rows[0]["recon"]
    assert all(r["vq_perplexity"] > 1.5 for r in rows)  # more than one code in use
    assert read_log(tmp_path / "run", "val")

    ckpt = load_checkpoint(ckpt_path)
    assert ckpt["speaker_table"].shape == (3, 24)
    vc = clsvc.load(ckpt_path)
    assert vc.system == "vqvc" and not vc.model.training
    src, ref = tmp_path / "src.wav", tmp_path / "ref.wav"
    sf.write(src, synth_utterance(*SPEAKERS["spk_a"], seed=901), SR)
    sf.write(ref, synth_utterance(*SPEAKERS["spk_b"], seed=902), SR)
    wav = vc.convert(src, [ref])
    assert wav.dtype == np.float32 and wav.ndim == 1 and np.isfinite(wav).all()
    assert abs(len(wav) - int(1.2 * SR)) < 2048
    assert vc.convert(src, target_speaker="spk_b").shape == wav.shape  # seen speaker via table
    assert np.linalg.norm(vc.embed([ref, src])) == pytest.approx(1.0, abs=1e-5)


def test_resume_with_ema_codebook_continues_exactly(features, tiny_cfg, tmp_path):
    common = (*TINY_VQVC, "vqvc.codebook_ema=0.9", "train.log_every=1", "train.ckpt_every=100")
    train(tiny_cfg("train.max_steps=8", *common), features, tmp_path / "full", progress=False)
    train(tiny_cfg("train.max_steps=4", *common), features, tmp_path / "part", progress=False)
    train(None, features, tmp_path / "part", resume=True, progress=False, overrides=["train.max_steps=8"])
    full, part = read_log(tmp_path / "full"), read_log(tmp_path / "part")
    assert [r["step"] for r in part] == list(range(1, 9))
    for a, b in zip(full[4:], part[4:]):
        for k in ("total", "recon", "vq", "vq_perplexity"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert any("ema_count" in k for k in wa)
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


@pytest.mark.parametrize("name, channels", [("vqvc", 512), ("vqvc-cpu", 256)])
def test_shipped_configs_build(name, channels):
    from clsvc.config import load_config

    cfg = load_config(name)
    cfg.model.n_speakers = 3
    model = build_system(cfg)
    assert cfg.model.system == "vqvc" and cfg.vqvc.channels == channels
    assert model.speaker_dim == cfg.vqvc.levels * cfg.vqvc.code_dim == 96
