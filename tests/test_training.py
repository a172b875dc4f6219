"""The trainer around the systems: ClsVC's own training signals, self-describing checkpoints,
refusals, atomic saves. Lowering the loss and exact resume are the shared contract of every
system (tests/test_systems.py)."""

import pytest
import torch

from clsvc.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from clsvc.cli import main
from clsvc.config import load_config
from clsvc.errors import ClsvcError
from clsvc.training import train

from helpers import TINY


def test_training_teaches_the_speaker_classifier_and_writes_tensorboard(system_run):
    run = system_run("clsvc")  # the contract's 40-step run
    assert run.rows[-1]["cls_acc"] > 1 / 3  # better than chance on 3 speakers
    assert (run.path / "tb").is_dir() and any((run.path / "tb").iterdir())


def test_checkpoint_is_self_describing(trained_run):
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 8 and ckpt["speakers"] == ["spk_a", "spk_b", "spk_c"]
    assert set(ckpt) >= {"config", "model", "optimizer", "rng", "speaker_table", "elapsed"}
    assert ckpt["config"]["mel"]["n_mels"] == 80
    assert ckpt["speaker_table"].shape == (3, ckpt["config"]["model"]["speaker_dim"])
    model, cfg = model_from_checkpoint(ckpt, "x")
    assert not model.training and cfg.model.n_speakers == 3
    assert not list((trained_run / "checkpoints").glob("*.tmp"))


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


def _payload(step: int) -> dict:
    """The smallest valid (inference-only) checkpoint payload."""
    from clsvc.config import Config

    return {"kind": "inference", "config": Config().to_dict(), "model": {"w": torch.zeros(2)}, "step": step,
            "speakers": [], "speaker_table": None}


def test_atomic_save_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    save_checkpoint(path, _payload(1))

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(path, _payload(2))
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ck.pt"]


def test_features_from_other_mel_config_are_refused(features, tmp_path):
    cfg = load_config("cpu", ["mel.fmax=8000"])
    with pytest.raises(ClsvcError, match="different mel config"):
        train(cfg, features, tmp_path / "run", progress=False)


def test_a_wider_decoder_starts_from_a_trained_encoder_kept_frozen(features, trained_run, tmp_path, capsys):
    """`--init CKPT --init-partial` copies every weight of the same name and shape (the encoder,
    the decoder's pre-LSTM and convs, the postnet), starts the widened parts fresh and names them
    atop config.yaml; `train.freeze=[encoder.]` keeps the encoder exactly as it was while the rest
    trains."""
    from clsvc.checkpoint import load_checkpoint

    source = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    run = tmp_path / "wide"
    wide = ["model.dec_lstm_hidden=48", "model.dec_lstm_layers=2", "train.max_steps=4", "train.freeze=[encoder.]"]
    assert main(["train", "--config", "cpu", "--data", str(features), "--out", str(run), "--quiet",
                 "--init", str(trained_run / "checkpoints" / "last.pt"), "--init-partial", *TINY, *wide]) == 0
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    old, new = source["model"], ckpt["model"]
    encoder = [k for k in new if k.startswith("encoder.") and new[k].is_floating_point()
               and not k.endswith(("running_mean", "running_var"))]  # batch-norm statistics keep adapting
    assert encoder and all(torch.equal(new[k], old[k]) for k in encoder)
    assert not torch.equal(new["decoder.pre.weight_ih_l0"], old["decoder.pre.weight_ih_l0"])  # copied, then trained
    assert ckpt["init"]["fresh"] == ["decoder.lstm", "decoder.out"]
    assert "# --init-partial: started fresh (not in it with this shape): decoder.lstm, decoder.out" in (
        run / "config.yaml").read_text()
    assert ckpt["config"]["train"]["freeze"] == ["encoder."]
    capsys.readouterr()
    assert main(["info", str(run / "checkpoints" / "last.pt")]) == 0  # says where its steps started
    assert (f"started from last.pt (its step {source['step']}, weights_sha256 {source['weights_sha256'][:12]}...); "
            "started fresh: decoder.lstm, decoder.out") in capsys.readouterr().out

    # Without --init-partial the same widening is refused in one line; a prefix naming no
    # parameter and --init-partial without --init likewise, before any run folder is made.
    for args, message in (
            (["--init", str(trained_run / "checkpoints" / "last.pt"), *TINY, *wide], "do not fit the model"),
            ([*TINY, "train.freeze=[encodr.]"], "train.freeze: 'encodr.' names no parameter"),
            (["--init-partial", *TINY], "--init-partial needs --init")):
        out = tmp_path / "refused"
        assert main(["train", "--config", "cpu", "--data", str(features), "--out", str(out), "--quiet", *args]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and not out.exists(), err


def test_cosine_schedule_decays_every_groups_rate_by_the_step_and_resumes_on_it(features, tiny_cfg, tmp_path,
                                                                                 monkeypatch):
    import clsvc.training.loop as loop
    from clsvc.training.state import lr_at

    seen: list[list[float]] = []
    real_step = loop.train_step

    def recording_step(state, batch, device):
        seen.append([g["lr"] for opt in state.optimizers.values() for g in opt.param_groups])
        return real_step(state, batch, device)

    monkeypatch.setattr(loop, "train_step", recording_step)
    over = ["optim.schedule=cosine", "optim.lr=0.001", "optim.lr_final=0.0001", "optim.adversary_lr_mult=2"]
    cfg = tiny_cfg("train.max_steps=4", *over)
    train(cfg, features, tmp_path / "run", progress=False)
    # Half a cosine from lr to lr_final over max_steps; C2's group keeps its multiple of the rate.
    assert lr_at(cfg, 0) == pytest.approx(1e-3) and lr_at(cfg, 4) == pytest.approx(1e-4)
    assert lr_at(cfg, 2) == pytest.approx(5.5e-4)
    assert seen == [pytest.approx([lr_at(cfg, s), 2 * lr_at(cfg, s)]) for s in range(4)]
    # Resumed with a longer run, the rate is where the longer schedule has it at the step reached.
    longer = tiny_cfg("train.max_steps=6", *over)
    seen.clear()
    train(longer, features, tmp_path / "run", resume=True, progress=False)
    assert seen == [pytest.approx([lr_at(longer, s), 2 * lr_at(longer, s)]) for s in (4, 5)]
    assert lr_at(tiny_cfg(), 3) == tiny_cfg().optim.lr  # constant: the paper's


def test_cosine_schedule_needs_a_step_budget(tiny_cfg):
    with pytest.raises(ClsvcError, match="optim.schedule must be constant with a time budget"):
        tiny_cfg("optim.schedule=cosine", "train.max_minutes=5")
    with pytest.raises(ClsvcError, match="optim.lr_final must not exceed optim.lr"):
        tiny_cfg("optim.schedule=cosine", "optim.lr=0.001", "optim.lr_final=0.01")


def test_amp_dtype_is_bf16_on_cuda_fp16_without_bf16_and_none_on_cpu(monkeypatch):
    """One rule for the step's autocast, the trainer's GradScaler and benchmarks/speed.py."""
    from clsvc.training.loop import amp_dtype

    cfg, cuda = load_config("cpu"), torch.device("cuda:0")
    assert amp_dtype(cfg, torch.device("cpu")) is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert amp_dtype(cfg, cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert amp_dtype(cfg, cuda) == torch.float16
    assert amp_dtype(load_config("cpu", ["train.amp=false"]), cuda) is None
