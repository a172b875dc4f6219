"""VAE-VC (clsvc.models.vae): shapes, a short training run, conversion into a training speaker,
and an exact resume (the KL warm-up counter is part of the saved weights)."""

import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.errors import ClsvcError
from clsvc.models import TableVoice, build_system
from clsvc.checkpoint import load_checkpoint
from clsvc.training import read_log, train

from conftest import SPEAKERS, SR, synth_utterance

VAE_TINY = ("model.system=vae", "vae.latent_dim=8", "vae.speaker_emb_dim=8", "vae.channels=32")


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


def test_training_lowers_recon_and_converts(features, tiny_cfg, tmp_path):
    cfg = tiny_cfg(*VAE_TINY, "vae.kl_anneal_steps=20", "train.max_steps=40",
                   "train.log_every=10", "optim.lr=3e-3")
    run = tmp_path / "run"
    ckpt = train(cfg, features, run, progress=False)
    rows = read_log(run)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["recon"] < 0.75 * rows[0]["recon"]
    weights = [r["kl_weight"] for r in rows]
    assert weights == sorted(weights) and weights[-1] == pytest.approx(cfg.vae.kl_weight)
    assert all(r["kl"] >= 0 for r in rows)
    assert read_log(run, "val")

    saved = load_checkpoint(ckpt)
    assert int(saved["model"]["steps"]) == 40
    assert saved["speaker_table"].shape == (3, 8)

    vc = clsvc.load(ckpt)
    wav_path = tmp_path / "src.wav"
    sf.write(wav_path, synth_utterance(*SPEAKERS["spk_a"], seed=999), SR)
    out = vc.convert(wav_path, target_speaker="spk_b")
    assert out.ndim == 1 and len(out) > 0 and abs(len(out) - 1.2 * SR) < 0.1 * SR
    with pytest.raises(ClsvcError, match="--target-speaker"):
        vc.convert(wav_path, [wav_path])
    with pytest.raises(ClsvcError, match="unknown speaker"):
        vc.convert(wav_path, target_speaker="nobody")


def test_resume_continues_exactly(features, tiny_cfg, tmp_path):
    # The warm-up is still rising at step 8 and z is sampled every step: both the step counter
    # (a buffer in the weights) and the torch RNG must come back for the losses to match.
    common = (*VAE_TINY, "vae.kl_anneal_steps=16", "vae.kl_weight=0.5", "train.log_every=1",
              "train.ckpt_every=100")
    train(tiny_cfg("train.max_steps=8", *common), features, tmp_path / "full", progress=False)
    train(tiny_cfg("train.max_steps=4", *common), features, tmp_path / "part", progress=False)
    train(None, features, tmp_path / "part", resume=True, progress=False,
          overrides=["train.max_steps=8"])
    full, part = read_log(tmp_path / "full"), read_log(tmp_path / "part")
    assert [r["step"] for r in part] == list(range(1, 9))
    for a, b in zip(full[4:], part[4:]):
        for k in ("total", "recon", "recon_pre", "kl", "kl_weight"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    assert part[-1]["kl_weight"] == pytest.approx(0.5 * 7 / 16)
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert int(wa["steps"]) == int(wb["steps"]) == 8
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
