"""StarGAN-VC2 baseline: shapes, masking, training through the shared trainer, conversion by
speaker name, and exact resume (two phases, step counter, RNG-drawn targets)."""

import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.errors import ClsvcError
from clsvc.models import TableVoice, build_system
from clsvc.training import read_log, train
from clsvc.checkpoint import load_checkpoint

from conftest import SPEAKERS, SR, synth_utterance

SMALL = ("model.system=stargan", "stargan.gen_channels=8", "stargan.res_channels=16",
         "stargan.res_blocks=2", "stargan.disc_channels=8")


def _model(tiny_cfg, *extra):
    cfg = tiny_cfg(*SMALL, *extra)
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    return build_system(cfg)


def test_shapes_terms_and_groups(tiny_cfg):
    model = _model(tiny_cfg)
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(4, 32, 80, generator=g)
    lengths = torch.tensor([32, 32, 20, 9])
    spk = torch.tensor([0, 1, 2, 0])
    loss, terms = model(mel, lengths, spk, "disc")
    assert loss.dim() == 0 and {"d_loss", "d_real", "d_fake", "d_total"} <= set(terms)
    assert "total" not in terms  # the trainer merges both phases' terms; "total" is G's
    loss, terms = model(mel, lengths, spk, "gen")
    assert {"g_adv", "cyc", "id", "recon", "total"} <= set(terms)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert int(model.steps) == 1
    # One optimizer per phase over disjoint parameters that cover the whole model.
    d, gen = model.param_groups("disc"), model.param_groups("gen")
    assert d[0]["lr_scale"] == model.cfg.disc_lr_scale
    ids_d = {id(p) for grp in d for p in grp["params"]}
    ids_g = {id(p) for grp in gen for p in grp["params"]}
    assert not ids_d & ids_g and ids_d | ids_g == {id(p) for p in model.parameters()}
    # Seen-speaker table and conversion of a length that is not a multiple of 4.
    model.eval()
    assert torch.equal(model.voice.table(), torch.eye(3)) and model.speaker_dim == 3
    out = model.convert(mel[:2, :30], model.voice.table()[1])
    assert out.shape == (2, 30, 80) and out.min() >= 0 and out.max() <= 1
    assert model.convert(torch.rand(1, 37, 80), torch.eye(3)[2:]).shape == (1, 37, 80)
    with pytest.raises(ClsvcError, match="speaker table"):
        model.convert(mel, torch.ones(5))


def test_padding_does_not_leak_into_valid_frames(tiny_cfg):
    # A row of 20 valid frames padded to 32 gives the same output as the row alone.
    model = _model(tiny_cfg).eval()
    g = torch.Generator().manual_seed(1)
    mel = torch.rand(2, 32, 80, generator=g)
    mel[1, 20:] = 0.0
    code = torch.eye(3)[[1, 2]]
    with torch.no_grad():
        both = model.generator(mel, code, torch.tensor([32, 20]))
        alone = model.generator(mel[1:, :20], code[1:], torch.tensor([20]))
        d_both = model.discriminator(mel, torch.tensor([1, 5]), torch.tensor([32, 20]))
        d_alone = model.discriminator(mel[1:, :20], torch.tensor([5]), torch.tensor([20]))
    assert torch.allclose(both[1, :20], alone[0], atol=1e-5)
    assert torch.allclose(d_both[1], d_alone[0], rtol=1e-4, atol=1e-4)


def test_trains_and_converts_by_speaker_name(features, tiny_cfg, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_cfg(*SMALL, "train.max_steps=40", "train.log_every=10", "train.ckpt_every=100",
                   "optim.lr=3e-3")
    ckpt = train(cfg, features, run, progress=False)
    rows = read_log(run)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["recon"] < 0.8 * rows[0]["recon"], [r["recon"] for r in rows]
    assert all(k in rows[-1] for k in ("d_loss", "g_adv", "cyc", "id", "total"))

    vc = clsvc.load(ckpt)
    assert isinstance(vc.model.voice, TableVoice) and not vc.one_shot
    assert int(load_checkpoint(ckpt)["model"]["steps"]) == 40
    f0, tract = SPEAKERS["spk_a"]
    src = tmp_path / "src.wav"
    sf.write(src, synth_utterance(f0, tract, seed=7), SR)
    wav = vc.convert(src, target_speaker="spk_b")
    assert wav.ndim == 1 and len(wav) > SR // 2
    with pytest.raises(ClsvcError, match="target-speaker"):
        vc.convert(src, targets=src)


def test_resume_continues_exactly(features, tiny_cfg, tmp_path):
    # id_steps=6 switches the identity loss off after the resume point: the step counter must
    # come back with the weights, and the targets drawn from the RNG must be the same.
    common = (*SMALL, "train.log_every=1", "train.ckpt_every=100", "stargan.id_steps=6")
    train(tiny_cfg("train.max_steps=8", *common), features, tmp_path / "full", progress=False)
    train(tiny_cfg("train.max_steps=4", *common), features, tmp_path / "part", progress=False)
    train(None, features, tmp_path / "part", resume=True, progress=False, overrides=["train.max_steps=8"])
    full, part = read_log(tmp_path / "full"), read_log(tmp_path / "part")
    assert [r["step"] for r in part] == list(range(1, 9))
    assert all(r["id"] > 0 for r in full[:6]) and all(r["id"] == 0 for r in full[6:])
    for a, b in zip(full, part):
        for k in ("total", "recon", "g_adv", "id", "d_loss", "d_real", "d_fake"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert int(wa["steps"]) == int(wb["steps"]) == 8
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
