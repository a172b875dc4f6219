"""Fine-tuning a vocoder on a VC model's own mels: ``clsvc reconstruct`` (a feature folder whose
mels are the model's reconstructions, same manifest, hard-linked waveforms, resumable, refusing
another mel definition or a model that is not a VC model) and ``clsvc train --init`` (a new run
from another checkpoint's weights, exactly; refusing another structure or system, and
``--resume`` with it), ending in a vocoder fine-tune through the CLI. Tiny models throughout."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
import torch
import yaml

from clsvc.cli import main
from clsvc.config import MelConfig
from clsvc.errors import ClsvcError

from helpers import TINY, TINY_VOCODER, features_with_wav, tiny_config

VOCODER_STEPS = 4  # the vocoder fixture's training: exactly its warm-up


@pytest.fixture(scope="module")
def wav_feats(corpus, tmp_path_factory):
    """Features with their aligned waveforms (``--keep-wav``) of the tiny generated corpus."""
    return features_with_wav(corpus, tmp_path_factory.mktemp("recon-src"))


@pytest.fixture(scope="module")
def vc_ckpt(trained_run):
    return trained_run / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def vocoder_ckpt(wav_feats, tmp_path_factory):
    """A tiny vocoder trained to the end of its warm-up (its ``steps`` buffer is 4)."""
    from clsvc.training import train

    run = tmp_path_factory.mktemp("recon-vocoder")
    return train(tiny_config(*TINY_VOCODER, f"train.max_steps={VOCODER_STEPS}"), wav_feats, run, progress=False)


@pytest.fixture(scope="module")
def recon(wav_feats, vc_ckpt, tmp_path_factory):
    """``clsvc reconstruct`` of the waveform features by the tiny VC model."""
    out = tmp_path_factory.mktemp("recon") / "feats"
    assert main(["reconstruct", "--data", str(wav_feats), "--checkpoint", str(vc_ckpt), "--out", str(out),
                 "--quiet"]) == 0
    return out


def _about(sha: str = "a" * 64) -> dict:
    return {"checkpoint": "/models/x.pt", "weights_sha256": sha}


# ----------------------------------------------------------------------------------------------
# clsvc reconstruct


def test_reconstruct_keeps_the_layout_and_links_the_waveforms(recon, wav_feats, vc_ckpt, capsys):
    import clsvc
    from clsvc.checkpoint import HASH_KEY, load_checkpoint
    from clsvc.data import FeatureSet, read_manifest
    from clsvc.data.manifest import load_aligned_wav
    from clsvc.data.preprocess import wav_path
    from clsvc.models import Reference

    entries = read_manifest(recon)
    assert entries == read_manifest(wav_feats)  # speakers, splits, frames, feature paths, sources
    assert {e.split for e in entries} == {"train", "val"}
    for e in entries:
        src, dst = np.load(wav_feats / e.feature), np.load(recon / e.feature)
        assert dst.shape == src.shape == (e.frames, 80) and dst.dtype == np.float32
        assert 0.0 <= dst.min() and dst.max() <= 1.0 and not np.array_equal(dst, src)
        a, b = wav_path(wav_feats / e.feature), wav_path(recon / e.feature)
        assert os.stat(a).st_ino == os.stat(b).st_ino  # one file, two names
    info = json.loads((recon / "features.json").read_text())
    assert info["mel"] == json.loads((wav_feats / "features.json").read_text())["mel"]
    assert info["preprocess"]["keep_wav"] is True
    rec = info["reconstruct"]
    assert rec["data"] == str(wav_feats.resolve()) and rec["checkpoint"] == str(vc_ckpt.resolve())
    assert rec["weights_sha256"] == load_checkpoint(vc_ckpt)[HASH_KEY] and rec["system"] == "clsvc"

    # Each mel is the converter's conversion of the utterance into its own voice: D(C_x, S_x/|S_x|).
    vc = clsvc.load(vc_ckpt)
    e = entries[0]
    ref = Reference(np.load(wav_feats / e.feature), wav=load_aligned_wav(wav_feats, e, 256) / 32767.0)
    np.testing.assert_allclose(np.load(recon / e.feature), vc.convert_mel(ref, vc.voice([ref])), atol=1e-6)
    # A vocoder's trainer reads the folder as it reads the source.
    assert len(FeatureSet(recon, ("train",), with_wav=True).wavs or []) == sum(x.split == "train" for x in entries)

    # Run again: everything is there, nothing is made again.
    capsys.readouterr()
    assert main(["reconstruct", "--data", str(wav_feats), "--checkpoint", str(vc_ckpt), "--out", str(recon),
                 "--quiet"]) == 0
    assert f"0 now, {len(entries)} kept from an earlier run" in capsys.readouterr().out


def test_a_stopped_reconstruction_resumes_and_another_job_needs_force(wav_feats, tmp_path, monkeypatch):
    import errno

    from clsvc.data import read_manifest
    from clsvc.data.preprocess import wav_path
    from clsvc.data.reconstruct import reconstruct_features

    out = tmp_path / "out"
    n = len(read_manifest(wav_feats))
    calls: list[str] = []
    kill_at = [5]

    def half(mel, wav, e):
        calls.append(e.utt_id)
        assert wav.dtype == np.float32 and len(wav) == len(mel) * 256 and np.abs(wav).max() <= 1.0
        if len(calls) == kill_at[0]:
            raise KeyboardInterrupt  # killed while making the fifth
        return mel * 0.5

    with pytest.raises(KeyboardInterrupt):
        reconstruct_features(wav_feats, out, half, MelConfig(), _about(), progress=False)
    assert not (out / "manifest.tsv").exists()  # unfinished
    assert len(list(out.glob("feats/*/*[!v].npy"))) == 4 and not list(out.rglob(".*"))
    calls.clear()
    kill_at[0] = 0
    done = reconstruct_features(wav_feats, out, half, MelConfig(), _about(), progress=False)
    assert (done.made, done.skipped, done.linked, done.copied) == (n - 4, 4, n - 4, 0) and len(calls) == n - 4
    assert read_manifest(out) == read_manifest(wav_feats)
    e = read_manifest(out)[0]
    assert np.array_equal(np.load(out / e.feature), np.load(wav_feats / e.feature) * 0.5)

    # Another model's weights: refused without --force; with it every file is made again (here on
    # a file system without hard links: the waveforms are copied).
    with pytest.raises(ClsvcError, match="already holds reconstructions by other weights.*--force"):
        reconstruct_features(wav_feats, out, half, MelConfig(), _about("b" * 64), progress=False)

    def no_links(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link", str(src))

    monkeypatch.setattr(os, "link", no_links)
    done = reconstruct_features(wav_feats, out, lambda mel, wav, e: mel * 0.25, MelConfig(), _about("b" * 64),
                                force=True, progress=False)
    monkeypatch.undo()
    assert (done.made, done.skipped, done.linked, done.copied) == (n, 0, 0, n)
    assert np.array_equal(np.load(out / e.feature), np.load(wav_feats / e.feature) * 0.25)
    a, b = wav_path(wav_feats / e.feature), wav_path(out / e.feature)
    assert os.stat(a).st_ino != os.stat(b).st_ino and a.read_bytes() == b.read_bytes()

    # A folder of other files, the source folder itself, a model that changes the frame count.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ClsvcError, match="already holds other files"):
        reconstruct_features(wav_feats, other, half, MelConfig(), _about(), progress=False)
    with pytest.raises(ClsvcError, match="is the source feature folder"):
        reconstruct_features(wav_feats, wav_feats, half, MelConfig(), _about(), force=True, progress=False)
    with pytest.raises(ClsvcError, match="keep the frame count"):
        reconstruct_features(wav_feats, tmp_path / "short", lambda mel, wav, e: mel[:-1], MelConfig(), _about(),
                             progress=False)


def test_reconstruct_refuses_another_mel_a_non_vc_model_and_features_without_waveforms(
        wav_feats, features, vc_ckpt, vocoder_ckpt, tmp_path, capsys):
    from clsvc.checkpoint import load_checkpoint, save_checkpoint

    ckpt = load_checkpoint(vc_ckpt)
    ckpt["config"]["mel"]["fmin"] = 100.0
    other_mel = save_checkpoint(tmp_path / "other-mel.pt", ckpt)
    out = tmp_path / "out"
    cases = [(wav_feats, other_mel, "trained on another mel definition than the features in .*mel.fmin"),
             (wav_feats, vocoder_ckpt, "a vocoder checkpoint, not a voice-conversion model"),
             (features, vc_ckpt, "no waveform beside the features.*--keep-wav")]
    for data, model, message in cases:
        capsys.readouterr()
        assert main(["reconstruct", "--data", str(data), "--checkpoint", str(model), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("clsvc: error: ") and "Traceback" not in err
        assert re.search(message, err), err
        assert not out.exists()


# ----------------------------------------------------------------------------------------------
# clsvc train --init


def test_init_starts_from_the_weights_exactly_with_a_fresh_optimizer(vocoder_ckpt, wav_feats, tmp_path,
                                                                     monkeypatch):
    from clsvc.checkpoint import HASH_KEY, export_model, load_checkpoint
    from clsvc.training import loop, train

    source = load_checkpoint(vocoder_ckpt)
    first: dict = {}
    real_step = loop.train_step

    def spy(state, batch, device):  # what the first step starts from
        if not first:
            first.update(weights={k: v.detach().cpu().clone() for k, v in state.model.state_dict().items()},
                         step=state.step,
                         opt=[bool(o.state) for o in state.optimizers.values()])
        return real_step(state, batch, device)

    monkeypatch.setattr(loop, "train_step", spy)
    run = tmp_path / "run"
    last = train(tiny_config(*TINY_VOCODER, "train.max_steps=2"), wav_feats, run, progress=False, init=vocoder_ckpt)
    assert first["weights"].keys() == source["model"].keys()
    assert all(torch.equal(first["weights"][k], source["model"][k]) for k in source["model"])
    assert first["step"] == 0 and not any(first["opt"])
    ckpt = load_checkpoint(last)
    assert ckpt["step"] == 2 and int(ckpt["model"]["steps"]) == VOCODER_STEPS + 2  # the counter carries on
    assert ckpt["init"] == {"path": str(vocoder_ckpt.resolve()), "weights_sha256": source[HASH_KEY],
                            "step": VOCODER_STEPS, "kind": "train", "system": "vocoder"}
    text = (run / "config.yaml").read_text()
    assert text.startswith(f"# initialised from {vocoder_ckpt.resolve()} (weights_sha256 {source[HASH_KEY]}")
    assert yaml.safe_load(text) == ckpt["config"]
    assert load_checkpoint(export_model(last, tmp_path / "ft.pt"))["init"] == ckpt["init"]

    # From an exported file: the generator (and its step counter) exactly; the discriminators,
    # which it does not hold, keep the new model's own weights.
    from clsvc.checkpoint import load_weights
    from clsvc.models import build_system

    exported = load_checkpoint(export_model(vocoder_ckpt, tmp_path / "voc.pt"))
    cfg = tiny_config(*TINY_VOCODER)
    cfg.model.n_speakers = 3
    model = build_system(cfg)
    fresh_disc = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("mpd.", "mrd."))}
    load_weights(model, exported, "voc.pt")
    state = model.state_dict()
    assert all(torch.equal(state[k], exported["model"][k]) for k in exported["model"])
    assert all(torch.equal(state[k], v) for k, v in fresh_disc.items()) and int(state["steps"]) == VOCODER_STEPS


def test_init_refuses_another_structure_system_or_mel_and_resume(vocoder_ckpt, vc_ckpt, wav_feats, tmp_path,
                                                                 capsys):
    from clsvc.checkpoint import load_checkpoint, save_checkpoint
    from clsvc.training import train

    ckpt = load_checkpoint(vocoder_ckpt)
    ckpt["config"]["mel"]["fmax"] = 7000.0
    other_mel = save_checkpoint(tmp_path / "other-mel.pt", ckpt)
    run = tmp_path / "run"
    cases = [("vocoder.dim=24", vocoder_ckpt,
              r"voc.*/last\.pt: its weights do not fit the model of this config \('generator\..* there, .* here"),
             ("vocoder.dim=16", vc_ckpt, "a clsvc checkpoint, and this run trains vocoder"),
             ("vocoder.dim=16", other_mel, "other-mel.pt: its weights were trained on another mel definition .*mel.fmax")]
    for size, init, message in cases:
        with pytest.raises(ClsvcError, match=message):
            train(tiny_config(*TINY_VOCODER, "train.max_steps=2", size), wav_feats, run, progress=False, init=init)
        assert not run.exists()  # refused before the run folder is made
    capsys.readouterr()
    assert main(["train", "--config", "cpu", "--data", str(wav_feats), "--out", str(run), "--init",
                 str(vocoder_ckpt), "--resume", *TINY, *TINY_VOCODER]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--init" in err and "--resume" in err and not run.exists()


def test_a_vocoder_fine_tunes_on_reconstructed_features_through_the_cli(recon, vocoder_ckpt, tmp_path, capsys):
    from clsvc.checkpoint import load_checkpoint
    from clsvc.training import read_log

    run = tmp_path / "ft"
    assert main(["train", "--config", "cpu", "--data", str(recon), "--out", str(run), "--init", str(vocoder_ckpt),
                 "--quiet", *TINY, *TINY_VOCODER, "train.max_steps=4"]) == 0
    rows = read_log(run)
    assert [r["step"] for r in rows] == [2, 4]
    # Past its warm-up already: the discriminators take part from the first logged row on.
    assert all("d_loss" in r and "g_adv" in r and np.isfinite(r["mel"]) for r in rows)
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4 and int(ckpt["model"]["steps"]) == VOCODER_STEPS + 4
    assert ckpt["init"]["path"] == str(vocoder_ckpt.resolve())
