"""The command line end to end, and every bad-input path: one clear line, exit 2, no traceback,
no output file."""

import csv
import os

import numpy as np
import pytest
import soundfile as sf

from clsvc.cli import main

from helpers import SR, TINY, synth_utterance


@pytest.fixture(scope="module")
def pipeline(corpus, tmp_path_factory):
    """preprocess -> train through the CLI (subprocesses, like a user)."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("cli")

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "clsvc", *map(str, args)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return r.stdout

    out = run("preprocess", corpus, "--out", root / "feats", "--holdout-per-speaker", "1", "--jobs", "2", "--quiet")
    assert "manifest.tsv" in out and "train" in out
    out = run("train", "--config", "cpu", "--data", root / "feats", "--out", root / "run", "--quiet",
              *TINY, "train.max_steps=6")
    assert "last.pt" in out
    return root


def wav_file(path, seconds=1.0, seed=0, f0=150):
    sf.write(path, synth_utterance(f0, 1.0, seed, seconds), SR)
    return path


def test_convert_one_shot_and_by_name(pipeline, corpus, tmp_path, cli):
    ckpt = pipeline / "run" / "checkpoints" / "last.pt"
    out = tmp_path / "a.wav"
    code, stdout, err = cli("convert", "--checkpoint", ckpt, "--source", corpus / "spk_a" / "spk_a_001.wav",
                            "--target", corpus / "spk_b" / "spk_b_001.wav", corpus / "spk_b" / "spk_b_002.wav",
                            "--out", out)
    assert code == 0, err
    wav, sr = sf.read(out)
    assert sr == 16000 and abs(len(wav) - 1.2 * SR) < 600 and np.isfinite(wav).all() and np.abs(wav).max() > 0
    code, _, err = cli("convert", "--checkpoint", ckpt, "--source", corpus / "spk_a" / "spk_a_001.wav",
                       "--target-speaker", "spk_c", "--out", tmp_path / "b.wav")
    assert code == 0, err and (tmp_path / "b.wav").exists()


def test_convert_list_embed_info(pipeline, corpus, tmp_path, capsys):
    ckpt = pipeline / "run" / "checkpoints" / "last.pt"
    lst = tmp_path / "pairs.csv"
    with lst.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "target", "target_speaker", "out"])
        w.writerow([corpus / "spk_a" / "spk_a_002.wav", f"{corpus / 'spk_b' / 'spk_b_003.wav'};{corpus / 'spk_b' / 'spk_b_004.wav'}", "", "x.wav"])
        w.writerow([corpus / "spk_b" / "spk_b_002.wav", "", "spk_a", "y.wav"])
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--quiet"]) == 0
    assert (tmp_path / "x.wav").exists() and (tmp_path / "y.wav").exists()
    emb = tmp_path / "e.npz"
    assert main(["embed", "--checkpoint", str(ckpt), "--out", str(emb),
                 str(corpus / "spk_a" / "spk_a_001.wav"), str(corpus / "spk_a" / "spk_a_002.wav")]) == 0
    z = np.load(emb)
    assert z["embeddings"].shape == (2, 16) and np.allclose(np.linalg.norm(z["embeddings"], axis=1), 1, atol=1e-4)
    assert main(["info", str(ckpt)]) == 0
    assert "spk_a" in capsys.readouterr().out


def test_python_api(pipeline, corpus):
    import clsvc

    vc = clsvc.load(pipeline / "run" / "checkpoints" / "last.pt")
    y = vc.convert(str(corpus / "spk_a" / "spk_a_001.wav"), [str(corpus / "spk_b" / "spk_b_001.wav")])
    assert y.dtype == np.float32 and y.ndim == 1
    e = vc.embed([str(corpus / "spk_b" / "spk_b_001.wav")])
    assert e.shape == (16,) and abs(np.linalg.norm(e) - 1) < 1e-5
    # An in-memory waveform works too.
    y2 = vc.convert(synth_utterance(150, 1.0, 5, 1.0), target_speaker="spk_b")
    assert len(y2) > 0


def test_export_info_convert_and_no_resume(pipeline, corpus, tmp_path, capsys):
    import shutil

    from clsvc.checkpoint import is_inference_only, load_checkpoint

    ckpt = pipeline / "run" / "checkpoints" / "last.pt"
    model = tmp_path / "model.pt"
    assert main(["export", str(ckpt), str(model)]) == 0
    assert str(model) in capsys.readouterr().out
    exported = load_checkpoint(model)
    assert is_inference_only(exported) and "optimizer" not in exported
    assert exported["speakers"] == ["spk_a", "spk_b", "spk_c"]
    assert not any(k.startswith(("speaker_classifier.", "adversary.")) for k in exported["model"])
    assert model.stat().st_size < ckpt.stat().st_size

    # Not overwritten without --force; with it, it is.
    before = model.read_bytes()
    _error(capsys, ["export", ckpt, model], str(model), "already exists", "--force")
    assert model.read_bytes() == before
    assert main(["export", str(ckpt), str(model), "--force"]) == 0
    capsys.readouterr()

    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    assert "exported model" in out and "spk_a" in out
    assert main(["info", str(ckpt)]) == 0
    assert "exported model" not in capsys.readouterr().out

    src, ref = corpus / "spk_a" / "spk_a_001.wav", corpus / "spk_b" / "spk_b_001.wav"
    # One-shot and by name (that it converts exactly like the checkpoint: tests/test_systems.py).
    for target in (["--target", ref], ["--target-speaker", "spk_c"]):
        out_wav = tmp_path / f"{target[0].strip('-')}.wav"
        assert main(["convert", "--checkpoint", str(model), "--source", str(src), *map(str, target),
                     "--out", str(out_wav), "--quiet"]) == 0
        wav, sr = sf.read(out_wav)
        assert sr == SR and abs(len(wav) - 1.2 * SR) < 600 and np.isfinite(wav).all() and np.abs(wav).max() > 0

    # A run whose last.pt is an exported model cannot be resumed (no optimizer state).
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(model, run / "checkpoints" / "last.pt")
    _error(capsys, ["train", "--data", pipeline / "feats", "--out", run, "--resume", "train.max_steps=8"],
           "exported model", "cannot be resumed")
    _error(capsys, ["train", "--config", "cpu", "--data", pipeline / "feats", "--out", run, "--resume", *TINY,
                    "train.max_steps=8"], "exported model", "cannot be resumed")
    assert load_checkpoint(run / "checkpoints" / "last.pt")["kind"] == "inference"  # left as it was
    assert not (run / "log.jsonl").exists()


def test_long_input_is_chunked_without_seams(pipeline):
    import clsvc

    vc = clsvc.load(pipeline / "run" / "checkpoints" / "last.pt", chunk_frames=64, overlap_frames=16)
    mel = vc.mel(synth_utterance(150, 1.0, 9, 4.0))  # 251 frames -> 5 chunks
    spk = vc.speaker_embedding("spk_b")
    out = vc.convert_mel(mel, spk)
    assert out.shape == mel.shape
    # No jumps at chunk boundaries larger than the ordinary frame-to-frame change.
    step = np.abs(np.diff(out, axis=0)).mean(axis=1)
    assert step.max() < 4 * np.median(step) + 0.05
    whole = clsvc.load(pipeline / "run" / "checkpoints" / "last.pt").convert_mel(mel, spk)
    assert np.abs(whole - out).mean() < 0.05


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), SR)
    sf.write(d / "silent.wav", np.zeros(SR, np.float32), SR)
    wav_file(d / "short.wav", seconds=0.2)
    wav_file(d / "good.wav")
    (d / "notckpt.pt").write_bytes(b"hello")
    return d


def _error(capsys, argv, *words):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clsvc: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


@pytest.mark.parametrize("source, words", [
    ("missing.wav", ["missing.wav", "no such file"]),
    ("corrupt.wav", ["corrupt.wav", "cannot read audio"]),
    ("empty.wav", ["empty.wav", "no audio samples"]),
    ("silent.wav", ["silent.wav", "silent"]),
    ("short.wav", ["short.wav", "at least"]),
])
def test_bad_source_audio(pipeline, bad_files, tmp_path, capsys, source, words):
    out = tmp_path / "o.wav"
    _error(capsys, ["convert", "--checkpoint", pipeline / "run/checkpoints/last.pt", "--source",
                    bad_files / source, "--target", bad_files / "good.wav", "--out", out], *words)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_bad_target_audio(pipeline, bad_files, tmp_path, capsys):
    out = tmp_path / "o.wav"
    _error(capsys, ["convert", "--checkpoint", pipeline / "run/checkpoints/last.pt", "--source",
                    bad_files / "good.wav", "--target", bad_files / "good.wav", bad_files / "silent.wav",
                    "--out", out], "silent.wav")
    assert not out.exists()


def test_bad_checkpoints(pipeline, bad_files, tmp_path, capsys):
    args = ["--source", bad_files / "good.wav", "--target", bad_files / "good.wav", "--out", tmp_path / "o.wav"]
    _error(capsys, ["convert", "--checkpoint", bad_files / "notckpt.pt", *args], "notckpt.pt", "not a clsvc checkpoint")
    _error(capsys, ["convert", "--checkpoint", bad_files / "nope.pt", *args], "nope.pt", "not found")
    assert not (tmp_path / "o.wav").exists()


def test_checkpoint_from_another_config(pipeline, capsys):
    _error(capsys, ["train", "--config", "cpu", "--data", pipeline / "feats", "--out", pipeline / "run",
                    "--resume", *TINY, "model.content_dim=4"], "different model config", "model.content_dim")


def test_unknown_speaker(pipeline, bad_files, tmp_path, capsys):
    _error(capsys, ["convert", "--checkpoint", pipeline / "run/checkpoints/last.pt", "--source",
                    bad_files / "good.wav", "--target-speaker", "ghost", "--out", tmp_path / "o.wav"],
           "ghost", "spk_a")
    assert not (tmp_path / "o.wav").exists()


def test_unwritable_or_existing_output(pipeline, bad_files, tmp_path, capsys):
    base = ["convert", "--checkpoint", pipeline / "run/checkpoints/last.pt", "--source", bad_files / "good.wav",
            "--target", bad_files / "good.wav"]
    _error(capsys, base + ["--out", tmp_path / "no/such/dir/o.wav"], "does not exist")
    _error(capsys, base + ["--out", tmp_path], "is a folder")
    (tmp_path / "exists.wav").write_bytes(b"keep me")
    _error(capsys, base + ["--out", tmp_path / "exists.wav"], "--force")
    assert (tmp_path / "exists.wav").read_bytes() == b"keep me"
    if os.geteuid() != 0:  # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        _error(capsys, base + ["--out", ro / "o.wav"], "not writable")


def test_bad_config_and_data(pipeline, tmp_path, capsys):
    _error(capsys, ["train", "--config", tmp_path / "none.yaml", "--data", pipeline / "feats", "--out", tmp_path / "r"],
           "none.yaml")
    _error(capsys, ["train", "--config", "cpu", "--data", pipeline / "feats", "--out", tmp_path / "r", "model.bogus=1"],
           "bogus")
    _error(capsys, ["train", "--config", "cpu", "--data", tmp_path / "nofeats", "--out", tmp_path / "r"],
           "clsvc preprocess")
    _error(capsys, ["preprocess", tmp_path / "nocorpus", "--out", tmp_path / "f"], "nocorpus")


def test_bad_pair_list_converts_nothing(pipeline, bad_files, tmp_path, capsys):
    lst = tmp_path / "pairs.csv"
    lst.write_text(f"source,target,out\n{bad_files / 'good.wav'},{bad_files / 'good.wav'},a.wav\n"
                   f"{bad_files / 'good.wav'},,b.wav\n")
    _error(capsys, ["convert", "--checkpoint", pipeline / "run/checkpoints/last.pt", "--list", lst], "line 3")
    assert not (tmp_path / "a.wav").exists()


def test_subprocess_error_has_no_traceback(bad_files, tmp_path, cli):
    code, out, err = cli("convert", "--checkpoint", bad_files / "notckpt.pt", "--source", bad_files / "good.wav",
                         "--target", bad_files / "good.wav", "--out", tmp_path / "o.wav")
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1
