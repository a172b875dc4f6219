"""Faults at the command line's edges: bad config bytes and values, bad devices, closed pipes,
racing and colliding outputs, lists that escape their folder, full disks and file modes.

Every case must end in one ``clsvc: error:`` line (exit 2, no traceback) and leave nothing
partial behind: no output, no temporary file, no run folder.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from clsvc.cli import main
from clsvc.config import load_config
from clsvc.errors import ClsvcError
from clsvc.files import WriteError, atomic_path, atomic_write_text
from clsvc.training.distributed import pick_device

from helpers import SR, TINY, synth_utterance

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _error(capsys, argv, *words) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clsvc: error: "), err
    assert "Traceback" not in err
    for w in words:
        assert w in err, err
    return err


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden temporaries included), relative, sorted."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def ckpt(trained_run) -> Path:
    return trained_run / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def wavs(corpus) -> dict[str, Path]:
    return {"src": corpus / "spk_a" / "spk_a_001.wav", "ref": corpus / "spk_b" / "spk_b_001.wav",
            "src2": corpus / "spk_c" / "spk_c_002.wav"}


def _convert_args(ckpt, wavs, out) -> list:
    return ["convert", "--checkpoint", ckpt, "--source", wavs["src"], "--target", wavs["ref"], "--out", out, "--quiet"]


def _write_list(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["source", "target", "out"])
        w.writerows(rows)
    return path


# ----------------------------------------------------------------------------------------------
# A. config bytes, config values, devices, closed pipes


def test_non_utf8_and_malformed_yaml_are_one_line(features, tmp_path, capsys):
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("base: cpu\nmodel:\n  system: caf\xe9\n".encode("latin-1"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: cpu\ntrain:\n  max_steps: 3\n batch_size: 2\n")  # dedented key
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("model: [1, 2\n")
    run = tmp_path / "run"
    _error(capsys, ["train", "--config", latin, "--data", features, "--out", run], "latin.yaml", "not UTF-8",
           "0xe9", "line 3", "UTF-8")
    _error(capsys, ["train", "--config", bad, "--data", features, "--out", run], "bad.yaml", "not valid YAML",
           "line 4, column 2")
    _error(capsys, ["train", "--config", unclosed, "--data", features, "--out", run], "unclosed.yaml", "line 2")
    assert not run.exists()
    for f in (latin, bad, unclosed):  # the library raises the same single line
        with pytest.raises(ClsvcError) as e:
            load_config(f)
        assert "\n" not in str(e.value)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("\ufeffbase: cpu\ntrain:\n  max_steps: 3\n".encode())
    assert load_config(bom).train.max_steps == 3  # a UTF-8 byte-order mark is fine


BAD_VALUES = [
    ("train.log_every=0", "train.log_every"),
    ("optim.lr=nan", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),  # YAML's NaN (plain `nan` is a string)
    ("optim.betas=[1.5,0.9]", "optim.betas"),
    ("model.kernel_size=-1", "model.kernel_size"),
    ("mel.n_mels=0", "mel.n_mels"),
    ("train.max_steps=-5", "train.max_steps"),
    ("model.enc_lstm_layers=-1", "model.enc_lstm_layers"),
    ("train.max_minutes=-1", "train.max_minutes"),
    ("train.crop_frames=100000", "train.crop_frames"),
]


@pytest.mark.parametrize("override, key", BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_config_values_stop_train_before_the_run_folder(features, tmp_path, capsys, override, key):
    run = tmp_path / "run"
    _error(capsys, ["train", "--config", "cpu", "--data", features, "--out", run, "--quiet", *TINY, override],
           "cpu.yaml", key)
    assert not run.exists()


def test_bad_device_names(features, ckpt, wavs, tmp_path, capsys):
    run = tmp_path / "run"
    for name in ("banana", "cuda:abc", "meta", ""):
        _error(capsys, ["train", "--config", "cpu", "--data", features, "--out", run, "--device", name, *TINY],
               f"device {name!r}", "cpu")
    out = tmp_path / "o.wav"
    _error(capsys, ["convert", "--checkpoint", ckpt, "--source", wavs["src"], "--target", wavs["ref"], "--out", out,
                    "--device", "banana"], "'banana'", "auto, cpu, cuda")
    _error(capsys, ["embed", "--checkpoint", ckpt, "--out", tmp_path / "e.npz", "--device", "banana", wavs["src"]],
           "'banana'")
    assert not run.exists() and _files(tmp_path) == []
    assert pick_device("cpu") == torch.device("cpu") and pick_device("auto").type in ("cpu", "cuda")


def test_cuda_requested_where_there_is_none_or_too_few(features, ckpt, wavs, tmp_path, capsys):
    run = tmp_path / "run"
    if torch.cuda.is_available():
        bad = f"cuda:{torch.cuda.device_count()}"
        _error(capsys, ["train", "--config", "cpu", "--data", features, "--out", run, "--device", bad, *TINY],
               bad, "visible")
    else:
        for name in ("cuda", "cuda:1"):
            _error(capsys, ["train", "--config", "cpu", "--data", features, "--out", run, "--device", name, *TINY],
                   name, "--device cpu")
        _error(capsys, _convert_args(ckpt, wavs, tmp_path / "o.wav") + ["--device", "cuda"], "'cuda'", "CUDA")
    assert not run.exists() and _files(tmp_path) == []


def test_auto_device_beyond_the_visible_gpus_is_one_line(monkeypatch):
    """torchrun with more processes per node than GPUs: rank 1 of a one-GPU node is told what to
    change (``auto`` means this rank's GPU and is checked like ``cuda``), not CUDA's "invalid
    device ordinal" from deep inside the trainer."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert pick_device("auto", local_rank=0) == torch.device("cuda:0")
    with pytest.raises(ClsvcError, match=r"'auto' \(cuda:1\): only 1 CUDA device\(s\) visible.*fewer processes"):
        pick_device("auto", local_rank=1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert pick_device("auto", local_rank=3) == torch.device("cpu")


def test_closed_output_pipe_is_quiet(ckpt):
    """`clsvc info CKPT | head -1`, `clsvc --help | head -1`: the reader goes away first."""
    for args in (["info", str(ckpt)], ["--help"]):
        p = subprocess.Popen([sys.executable, "-m", "clsvc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert p.stdout is not None and p.stderr is not None
        p.stdout.close()  # before the command has written anything
        err = p.stderr.read().decode()
        code = p.wait(timeout=300)
        assert code in (0, 141) and err == "", (args, code, err)


def test_pair_list_bytes(ckpt, tmp_path, capsys, wavs):
    lst = tmp_path / "pairs.csv"
    lst.write_bytes(f"source,target,out\n{wavs['src']},{wavs['ref']},caf\xe9.wav\n".encode("latin-1"))
    _error(capsys, ["convert", "--checkpoint", ckpt, "--list", lst], "pairs.csv", "not UTF-8", "line 2")
    lst.write_text(f"source,target,out\n{wavs['src']},{wavs['ref']},{'x' * 200_000}.wav\n")
    _error(capsys, ["convert", "--checkpoint", ckpt, "--list", lst], "pairs.csv line 2", "not valid CSV")
    # A byte-order mark (Excel's "CSV UTF-8") is fine.
    lst.write_bytes(f"\ufeffsource,target,out\n{wavs['src']},{wavs['ref']},bom.wav\n".encode())
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--quiet"]) == 0
    assert (tmp_path / "bom.wav").is_file()


# ----------------------------------------------------------------------------------------------
# B. atomic_path: exclusive publishing, storage failures, modes


def test_exclusive_publish_loses_to_a_file_that_appeared(tmp_path):
    out = tmp_path / "x.bin"
    with pytest.raises(ClsvcError, match="already exists") as e:
        with atomic_path(out, exclusive=True) as tmp:
            tmp.write_bytes(b"mine")
            out.write_bytes(b"theirs")  # another process published meanwhile
    assert "\n" not in str(e.value) and out.read_bytes() == b"theirs" and _files(tmp_path) == ["x.bin"]
    # A dangling symlink counts as "something is there" (link() does not follow it).
    link = tmp_path / "dangling.bin"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ClsvcError, match="already exists"):
        atomic_write_text(link, "x", exclusive=True)
    assert not (tmp_path / "nowhere").exists()
    # Without exclusive, replacing is the point.
    atomic_write_text(out, "new")
    assert out.read_text() == "new" and sorted(_files(tmp_path)) == ["x.bin"]


def test_exclusive_publish_without_hard_links(tmp_path, monkeypatch):
    """File systems without link() fall back to an exclusive create + rename."""
    def no_link(*a, **k):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    monkeypatch.setattr(os, "link", no_link)
    out = tmp_path / "x.bin"
    atomic_write_text(out, "first", exclusive=True)
    assert out.read_text() == "first"
    with pytest.raises(ClsvcError, match="already exists"):
        atomic_write_text(out, "second", exclusive=True)
    assert out.read_text() == "first" and _files(tmp_path) == ["x.bin"]


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG])
def test_storage_errors_while_writing_are_one_line(tmp_path, err):
    out = tmp_path / "x.bin"
    out.write_bytes(b"previous")
    with pytest.raises(WriteError) as e:
        with atomic_path(out) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(err, os.strerror(err))
    msg = str(e.value)
    assert "\n" not in msg and str(out) in msg and os.strerror(err) in msg and "free space" in msg
    assert out.read_bytes() == b"previous" and _files(tmp_path) == ["x.bin"]


@pytest.mark.parametrize("stage", ["mkstemp", "fsync", "replace", "link"])
def test_storage_errors_while_publishing_are_one_line(tmp_path, monkeypatch, stage):
    import clsvc.files as files

    def boom(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = {"mkstemp": (files.tempfile, "mkstemp"), "fsync": (files.os, "fsync"),
              "replace": (files.os, "replace"), "link": (files.os, "link")}[stage]
    monkeypatch.setattr(*target, boom)
    out = tmp_path / "x.bin"
    with pytest.raises(WriteError, match="No space left on device"):
        with atomic_path(out, exclusive=stage == "link") as tmp:
            tmp.write_bytes(b"data")
    monkeypatch.undo()
    assert _files(tmp_path) == []


def test_writers_that_hide_the_errno(tmp_path, monkeypatch):
    """torch and libsndfile raise RuntimeError on a full disk: judged by the free space left."""
    import clsvc.files as files

    out = tmp_path / "x.pt"
    with pytest.raises(RuntimeError, match="a bug"):  # plenty of space: a bug stays a bug
        with atomic_path(out):
            raise RuntimeError("a bug")
    real = os.statvfs(tmp_path)

    class Full:
        f_flag, f_frsize, f_bavail, f_bfree = 0, real.f_frsize, 0, 0

    monkeypatch.setattr(files.os, "statvfs", lambda p: Full())
    with pytest.raises(WriteError, match="x.pt: could not write .No space left on device."):
        with atomic_path(out) as tmp:
            torch.save({"a": torch.zeros(4)}, tmp)
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    assert _files(tmp_path) == []


def test_errors_about_other_files_are_not_blamed_on_the_output(tmp_path):
    with pytest.raises(PermissionError):
        with atomic_path(tmp_path / "x.bin"):
            raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "some-input.wav"))
    assert _files(tmp_path) == []


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_outputs_get_the_umask_mode(ckpt, wavs, tmp_path, capsys, mask, mode):
    with _umask(mask):
        assert main([str(a) for a in _convert_args(ckpt, wavs, tmp_path / "a.wav")]) == 0
        assert main(["embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.npz"), str(wavs["src"])]) == 0
        assert main(["export", str(ckpt), str(tmp_path / "m.pt")]) == 0
        assert main(["export", str(ckpt), str(tmp_path / "m.pt"), "--force"]) == 0  # replaced: same mode
        atomic_write_text(tmp_path / "t.txt", "x")
    capsys.readouterr()
    for name in ("a.wav", "e.npz", "m.pt", "t.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == mode, name
    assert _files(tmp_path) == ["a.wav", "e.npz", "m.pt", "t.txt"]


# ----------------------------------------------------------------------------------------------
# B. disk full through the commands (in-process, the writer made to fail)


def test_disk_full_during_convert(ckpt, wavs, tmp_path, capsys, monkeypatch):
    import clsvc.audio

    def full(path, *a, **k):
        Path(path).write_bytes(b"RIFF" + b"\0" * 40)  # half a file, then the disk is full
        raise ENOSPC

    monkeypatch.setattr(clsvc.audio.sf, "write", full)
    out = tmp_path / "o.wav"
    _error(capsys, _convert_args(ckpt, wavs, out), str(out), "could not write", "No space left on device",
           "free space")
    assert _files(tmp_path) == []


def test_disk_full_during_embed_and_export(ckpt, wavs, tmp_path, capsys, monkeypatch):
    import clsvc.checkpoint

    monkeypatch.setattr(np, "savez", lambda *a, **k: (_ for _ in ()).throw(ENOSPC))
    _error(capsys, ["embed", "--checkpoint", ckpt, "--out", tmp_path / "e.npz", wavs["src"]], "e.npz",
           "No space left on device")

    def torch_full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK")
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    monkeypatch.setattr(clsvc.checkpoint.torch, "save", torch_full)
    _error(capsys, ["export", ckpt, tmp_path / "m.pt"], "m.pt", os.strerror(errno.EDQUOT))
    assert _files(tmp_path) == []


def test_disk_full_while_training_saves(features, tmp_path, capsys, monkeypatch):
    import clsvc.checkpoint

    def torch_full(obj, f, *a, **k):
        Path(f).write_bytes(b"PK")
        raise ENOSPC

    monkeypatch.setattr(clsvc.checkpoint.torch, "save", torch_full)
    run = tmp_path / "run"
    _error(capsys, ["train", "--config", "cpu", "--data", features, "--out", run, "--quiet", *TINY,
                    "train.max_steps=2"], "last.pt", "No space left on device")
    assert not [f for f in _files(run) if "checkpoints" in f]  # no checkpoint, no temporary


def test_file_too_large_in_a_real_subprocess(ckpt, wavs, tmp_path):
    """A real failing write (RLIMIT_FSIZE -> EFBIG from the kernel), not a monkeypatch."""
    import resource
    import signal

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))

    out = tmp_path / "e.npz"
    r = subprocess.run([sys.executable, "-B", "-m", "clsvc", "embed", "--checkpoint", str(ckpt), "--out", str(out),
                        str(wavs["src"]), str(wavs["src2"])], capture_output=True, text=True, timeout=300,
                       preexec_fn=small_files)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert "e.npz: could not write (File too large)" in r.stderr
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------------------------
# B. lists: duplicates, resumable reruns, confinement


def test_duplicate_outputs_in_a_list_are_refused_up_front(ckpt, wavs, tmp_path, capsys):
    lst = _write_list(tmp_path / "pairs.csv", [(wavs["src"], wavs["ref"], "a.wav"), (wavs["src2"], wavs["ref"], "b.wav"),
                                               (wavs["src2"], wavs["ref"], "sub/../a.wav")])
    (tmp_path / "sub").mkdir()
    _error(capsys, ["convert", "--checkpoint", ckpt, "--list", lst], "lines 2 and 4", "a.wav", "its own out")
    assert _files(tmp_path) == ["pairs.csv"]


def test_a_failed_list_resumes(ckpt, wavs, tmp_path, capsys):
    short = tmp_path / "short.wav"
    sf.write(short, synth_utterance(150, 1.0, 3, 0.2), SR)
    rows = [(wavs["src"], wavs["ref"], "a.wav"), (short, wavs["ref"], "b.wav"), (wavs["src2"], wavs["ref"], "c.wav")]
    lst = _write_list(tmp_path / "pairs.csv", rows)
    _error(capsys, ["convert", "--checkpoint", ckpt, "--list", lst, "--quiet"], "pairs.csv line 3", "short.wav",
           "1 file(s) written before it are kept", "rerun skips them")
    assert _files(tmp_path) == ["a.wav", "pairs.csv", "short.wav"]
    first = (tmp_path / "a.wav").stat().st_mtime_ns
    rows[1] = (wavs["src2"], wavs["ref"], "b.wav")  # the user fixes the bad row and reruns
    _write_list(lst, rows)
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--quiet"]) == 0
    assert "wrote 2 file(s); skipped 1 existing" in capsys.readouterr().out
    assert (tmp_path / "a.wav").stat().st_mtime_ns == first
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--quiet"]) == 0
    assert "wrote 0 files; skipped 3 existing" in capsys.readouterr().out
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--quiet", "--force"]) == 0
    assert capsys.readouterr().out.strip() == "wrote 3 file(s)"
    assert (tmp_path / "a.wav").stat().st_mtime_ns != first
    for name in ("a.wav", "b.wav", "c.wav"):
        wav, sr = sf.read(tmp_path / name)
        assert sr == SR and len(wav) > 0
    assert _files(tmp_path) == ["a.wav", "b.wav", "c.wav", "pairs.csv", "short.wav"]


@pytest.mark.parametrize("force", [False, True])
def test_list_outputs_stay_inside_the_output_root(ckpt, wavs, tmp_path, capsys, force):
    lists = tmp_path / "lists"
    lists.mkdir()
    victim = tmp_path / "victim.wav"
    victim.write_bytes(b"precious")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (lists / "link").symlink_to(outside)
    flags = ["--force"] if force else []
    for out, shown in (("../victim.wav", "../victim.wav"), (str(victim), str(victim)), ("link/x.wav", "link/x.wav")):
        lst = _write_list(lists / "pairs.csv", [(wavs["src"], wavs["ref"], "ok.wav"), (wavs["src"], wavs["ref"], out)])
        _error(capsys, ["convert", "--checkpoint", ckpt, "--list", lst, *flags], "pairs.csv line 3", shown,
               "outside the output root", "--allow-outside")
    assert victim.read_bytes() == b"precious" and _files(outside) == [] and not (lists / "ok.wav").exists()

    # --out-root widens (or narrows) the root; --allow-outside lifts it.
    lst = _write_list(lists / "pairs.csv", [(wavs["src"], wavs["ref"], "../elsewhere/a.wav")])
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--out-root", str(outside), "--quiet"]) == 0
    assert (outside / "a.wav").is_file()
    _error(capsys, ["convert", "--checkpoint", ckpt, "--list", lst, "--out-root", lists / "nope"], "not a folder")
    lst = _write_list(lists / "pairs.csv", [(wavs["src"], wavs["ref"], "../b.wav")])
    assert main(["convert", "--checkpoint", str(ckpt), "--list", str(lst), "--allow-outside", "--quiet"]) == 0
    assert (tmp_path / "b.wav").is_file()
    _error(capsys, _convert_args(ckpt, wavs, tmp_path / "c.wav") + ["--allow-outside"], "--list only")


# ----------------------------------------------------------------------------------------------
# C. two writers of one output


def test_convert_loses_to_a_writer_that_finished_first(ckpt, wavs, tmp_path, capsys, monkeypatch):
    """The output appears while this command converts (another process was faster)."""
    import clsvc.inference

    out = tmp_path / "o.wav"
    real = clsvc.inference.Converter.convert

    def slow(self, *a, **k):
        wav = real(self, *a, **k)
        sf.write(out, np.zeros(SR, np.float32), SR)  # the other process publishes its result
        return wav

    monkeypatch.setattr(clsvc.inference.Converter, "convert", slow)
    _error(capsys, _convert_args(ckpt, wavs, out), str(out), "already exists", "--force")
    assert np.all(sf.read(out)[0] == 0) and _files(tmp_path) == ["o.wav"]  # theirs, untouched


def test_export_and_embed_lose_to_a_writer_that_finished_first(ckpt, wavs, tmp_path, capsys, monkeypatch):
    import clsvc.checkpoint

    model = tmp_path / "m.pt"
    real_export = clsvc.checkpoint.export_model

    def racing_export(src, dst, **kw):
        model.write_bytes(b"theirs")
        return real_export(src, dst, **kw)

    monkeypatch.setattr(clsvc.checkpoint, "export_model", racing_export)
    _error(capsys, ["export", ckpt, model], "m.pt", "already exists")
    assert model.read_bytes() == b"theirs" and _files(tmp_path) == ["m.pt"]
    monkeypatch.undo()

    emb = tmp_path / "e.npz"
    real_savez = np.savez

    def racing_savez(path, **arrays):
        emb.write_bytes(b"theirs")
        real_savez(path, **arrays)

    monkeypatch.setattr(np, "savez", racing_savez)
    _error(capsys, ["embed", "--checkpoint", ckpt, "--out", emb, wavs["src"]], "e.npz", "already exists")
    assert emb.read_bytes() == b"theirs" and _files(tmp_path) == ["e.npz", "m.pt"]


def test_two_concurrent_converts_to_one_output(ckpt, wavs, tmp_path):
    out = tmp_path / "same.wav"
    cmd = [sys.executable, "-m", "clsvc", *map(str, _convert_args(ckpt, wavs, out))]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    codes = sorted(c for c, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for c, _, err in results if c == 2)
    assert "already exists" in loser and loser.count("\n") == 1 and "Traceback" not in loser
    wav, sr = sf.read(out)
    assert sr == SR and len(wav) > 0 and np.isfinite(wav).all()
    assert _files(tmp_path) == ["same.wav"]


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    from clsvc.files import atomic_dir

    out = tmp_path / "report"
    with atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (out / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "b.txt").write_text("half")
        raise RuntimeError("killed half way")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # old folder kept, no temp left
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"]
    with atomic_dir(out) as tmp:
        (tmp / "c.txt").write_text("2")
    assert sorted(p.name for p in out.iterdir()) == ["c.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
