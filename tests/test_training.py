import json

import pytest
import torch

from clsvc.config import load_config
from clsvc.errors import ClsvcError
from clsvc.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from clsvc.training import read_log, train


def test_a_few_steps_lower_the_loss(features, tiny_cfg, tmp_path):
    cfg = tiny_cfg("train.max_steps=40", "train.log_every=10", "optim.lr=3e-3")
    train(cfg, features, tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["recon"] < 0.75 * rows[0]["recon"]
    assert rows[-1]["total"] < rows[0]["total"]
    assert rows[-1]["cls_acc"] > 1 / 3  # better than chance on 3 speakers
    assert read_log(tmp_path / "run", "val")  # validation ran on held-out utterances
    assert (tmp_path / "run" / "tb").is_dir() and any((tmp_path / "run" / "tb").iterdir())


def test_checkpoint_is_self_describing(trained_run):
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 8 and ckpt["speakers"] == ["spk_a", "spk_b", "spk_c"]
    assert set(ckpt) >= {"config", "model", "optimizer", "rng", "speaker_table", "elapsed"}
    assert ckpt["config"]["mel"]["n_mels"] == 80
    assert ckpt["speaker_table"].shape == (3, ckpt["config"]["model"]["speaker_dim"])
    model, cfg = model_from_checkpoint(ckpt, "x")
    assert not model.training and cfg.model.n_speakers == 3
    assert not list((trained_run / "checkpoints").glob("*.tmp"))


def test_resume_continues_exactly(features, tiny_cfg, tmp_path):
    # The conversion-code term draws a batch permutation from the RNG each step: resuming must
    # restore that stream too, so it is switched on here.
    common = ("train.log_every=1", "train.ckpt_every=100", "loss.convert_code=0.5")
    train(tiny_cfg("train.max_steps=8", *common), features, tmp_path / "full", progress=False)
    train(tiny_cfg("train.max_steps=4", *common), features, tmp_path / "part", progress=False)
    # Resume with the run's own config plus a larger step budget.
    train(None, features, tmp_path / "part", resume=True, progress=False, overrides=["train.max_steps=8"])
    full = read_log(tmp_path / "full")
    part = read_log(tmp_path / "part")
    assert [r["step"] for r in part] == list(range(1, 9))
    for a, b in zip(full[4:], part[4:]):
        for k in ("total", "recon", "code", "cls", "adv", "conv_code"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)


def test_refuses_to_overwrite_and_resume_mismatch(features, tiny_cfg, trained_run):
    with pytest.raises(ClsvcError, match="--resume"):
        train(tiny_cfg("train.max_steps=8"), features, trained_run, progress=False)
    with pytest.raises(ClsvcError, match="different model config"):
        train(tiny_cfg("model.content_dim=4"), features, trained_run, resume=True, progress=False)


def test_nothing_to_resume(features, tiny_cfg, tmp_path):
    with pytest.raises(ClsvcError, match="nothing to resume"):
        train(tiny_cfg(), features, tmp_path / "empty", resume=True, progress=False)


def test_non_checkpoint_files(tmp_path):
    (tmp_path / "a.pt").write_bytes(b"garbage")
    with pytest.raises(ClsvcError, match="not a clsvc checkpoint"):
        load_checkpoint(tmp_path / "a.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "b.pt")
    with pytest.raises(ClsvcError, match="not a clsvc checkpoint"):
        load_checkpoint(tmp_path / "b.pt")
    with pytest.raises(ClsvcError, match="not found"):
        load_checkpoint(tmp_path / "c.pt")


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, {"step": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, {"step": 2})
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_features_from_other_mel_config_are_refused(features, tmp_path):
    cfg = load_config("cpu", ["mel.fmax=8000"])
    with pytest.raises(ClsvcError, match="different mel config"):
        train(cfg, features, tmp_path / "run", progress=False)
