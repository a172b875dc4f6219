"""Faults around training: signals, kills, a full disk, a second trainer, orphaned temp files, a
refused config. Whatever stops a run, ``--resume`` must end with the very log and weights of a run
that never stopped.

The stop tests run the trainer in a subprocess (``HARNESS``, one interpreter for three runs: each
costs seconds of imports) and send the signal as soon as a run has logged a row: the signal lands
at whatever point the trainer has reached (mid-step, in validation, in a checkpoint write).
Correctness never depends on that timing: the trainer holds still at a later row (in its
``on_log`` callback) until the test has sent the signal, so every signal lands before the run
could end, and any landing point must give the same result. Deterministic in-process tests pin
down the rest (a signal at a known step, a second Ctrl-C inside a checkpoint write, a full disk).
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from clsvc.checkpoint import load_checkpoint
from clsvc.errors import ClsvcError
from clsvc.training import read_log, train
from clsvc.training.run_dir import lock_run
from clsvc.training.signals import StopSignals, TrainingStopped

from helpers import TINY, read_run, tiny_config

# The run every test compares with: 12 steps, a row every 2 steps (so a stop between two rows must
# carry the half-summed window over), validation every 4, a checkpoint every 3, and the
# conversion-code term on (it draws a permutation from the torch RNG every step).
STEPS = 12
RUN_CFG = (f"train.max_steps={STEPS}", "train.log_every=2", "train.val_every=4", "train.ckpt_every=3",
           "loss.convert_code=0.5")

HARNESS = r"""
import json, signal, sys, time
from pathlib import Path

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if our parent ignores it
from clsvc.config import load_config
from clsvc.training.loop import TrainingStopped, train

features, runs = sys.argv[1], json.loads(sys.argv[2])
for spec in runs:
    run, hold = Path(spec["run"]), spec["hold"]
    sent = run.parent / (run.name + ".sent")

    def on_log(kind, step, values):
        if kind == "train" and step >= hold:  # hold still until the test has sent its signal
            deadline = time.monotonic() + 120
            while not sent.exists() and time.monotonic() < deadline:
                time.sleep(0.002)

    try:
        train(load_config("cpu", spec["overrides"]), features, run, progress=False, on_log=on_log)
        status = {"code": 0, "message": ""}
    except TrainingStopped as e:  # what `clsvc train` does: one line, exit 128 + signal
        status = {"code": 128 + e.signum, "message": str(e)}
    (run.parent / (run.name + ".status")).write_text(json.dumps(status))
"""


def stop_runs(features: Path, plan: list[tuple[Path, int, int, int, tuple[str, ...]]]) -> int:
    """Train the runs of ``plan`` one after the other in one subprocess (``HARNESS``): for each
    ``(run, signal, after_step, hold, overrides)``, once the run has logged a train row at
    ``after_step`` or later, send it ``signal``; the trainer holds still at its row of step
    ``hold`` until then. Only the last run may be SIGKILLed. Returns the exit status."""
    specs = [{"run": str(run), "hold": hold, "overrides": [*TINY, *overrides]} for run, _, _, hold, overrides in plan]
    proc = subprocess.Popen([sys.executable, "-c", HARNESS, str(features), json.dumps(specs)],
                            stderr=subprocess.PIPE, text=True, cwd=plan[0][0].parent)
    try:
        for run, sig, after_step, _, _ in plan:
            deadline = time.monotonic() + 240
            while not any(r["step"] >= after_step for r in read_log(run)):
                assert proc.poll() is None, proc.communicate()[1][-3000:]
                assert time.monotonic() < deadline, f"{run} logged nothing"
                time.sleep(0.005)
            proc.send_signal(sig)
            (run.parent / (run.name + ".sent")).touch()
        proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode


def status(run: Path) -> dict:
    return json.loads((run.parent / (run.name + ".status")).read_text())


def strip(rows: list[dict]) -> list[dict]:
    """Log rows without the wall-clock column."""
    return [{k: v for k, v in r.items() if k != "minutes"} for r in rows]


def assert_same_run(got: Path, want: Path) -> None:
    """Every logged value (train and validation rows) and every weight identical."""
    a, b = read_run(got), read_run(want)
    assert strip(a.rows) == strip(b.rows)
    assert strip(a.val) == strip(b.val)
    wa, wb = a.weights(), b.weights()
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert load_checkpoint(a.ckpt)["step"] == load_checkpoint(b.ckpt)["step"] == STEPS


def temp_files(run: Path) -> list[Path]:
    return [*run.glob(".*.tmp*"), *(run / "checkpoints").glob(".*.tmp*")]


@pytest.fixture(scope="module")
def reference(features, tmp_path_factory) -> Path:
    """The run done in one go."""
    run = tmp_path_factory.mktemp("faults") / "reference"
    train(tiny_config(*RUN_CFG), features, run, progress=False)
    r = read_run(run)
    assert [x["step"] for x in r.rows] == [2, 4, 6, 8, 10, 12]
    assert [x["step"] for x in r.val] == [4, 8, 12]  # the last step validated once, not twice
    return run


@pytest.fixture(scope="module")
def stopped(features, tmp_path_factory) -> dict[str, Path]:
    """Three runs of ``RUN_CFG`` stopped in one subprocess: by SIGINT and by SIGTERM (sent once the
    run logged step 2, landing by step 6 at the latest), then by SIGKILL (sent once it logged step 4,
    landing by step 8: between the checkpoints of steps 3 and 6, or in the write of step 6, or
    after it)."""
    root = tmp_path_factory.mktemp("stopped")
    runs = {name: root / name for name in ("SIGINT", "SIGTERM", "SIGKILL")}
    code = stop_runs(features, [(runs["SIGINT"], signal.SIGINT, 2, 6, RUN_CFG),
                                (runs["SIGTERM"], signal.SIGTERM, 2, 6, RUN_CFG),
                                (runs["SIGKILL"], signal.SIGKILL, 4, 8, RUN_CFG)])
    assert code == -signal.SIGKILL
    return runs


# ---------------------------------------------------------------------------------------- signals


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_saves_the_last_whole_step_and_resume_is_exact(sig, features, stopped, reference):
    name = signal.Signals(sig).name
    run = stopped[name]
    st = status(run)
    assert st["code"] == 128 + sig  # TrainingStopped.signum: `clsvc train` exits 130 / 143
    assert st["message"].startswith(f"{name}: stopped at step") and "--resume" in st["message"]
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 2 <= step <= 6  # the step in progress when the signal came, completed and saved
    assert max(r["step"] for r in read_log(run) + read_log(run, "val")) <= step
    assert not temp_files(run)
    train(None, features, run, resume=True, progress=False)
    assert_same_run(run, reference)


def test_sigkill_at_any_point_then_resume_is_exact(features, stopped, reference):
    run = stopped["SIGKILL"]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] in (3, 6)
    time.sleep(1.01 - time.time() % 1)  # TensorBoard orders event files by the second they were opened
    train(None, features, run, resume=True, progress=False)
    assert not temp_files(run)
    assert_same_run(run, reference)
    # TensorBoard hides what the killed run logged after its checkpoint.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/recon")] == [2, 4, 6, 8, 10, 12]
    assert [e.step for e in acc.Scalars("val/recon")] == [4, 8, 12]


def _self_signal_at(step: int, sig: int, times: int = 1):
    def on_log(kind, s, values):
        if kind == "train" and s == step:
            for _ in range(times):
                os.kill(os.getpid(), sig)
    return on_log


def test_signal_in_process_stops_and_handlers_come_back(features, reference, tmp_path, monkeypatch):
    """SIGTERM at step 4, delivered twice at once (as torchrun or a scheduler may): one stop request."""
    monkeypatch.setattr(StopSignals, "repeat_s", 60.0)  # "at once", however busy the machine
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    with pytest.raises(TrainingStopped, match="SIGTERM: stopped at step 4") as e:
        train(tiny_config(*RUN_CFG), features, run, progress=False,
              on_log=_self_signal_at(4, signal.SIGTERM, times=2))
    assert isinstance(e.value, KeyboardInterrupt) and e.value.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert [r["step"] for r in read_log(run, "val")] == [4]  # the in-loop one; no extra row on a stop
    train(None, features, run, resume=True, progress=False)
    assert_same_run(run, reference)


@pytest.fixture
def live_sigint():
    """SIGINT handled as in a terminal for the test, whatever the process inherited (a shell's
    background job ignores it, and the trainer rightly leaves an ignored SIGINT ignored)."""
    old = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_a_second_ctrl_c_while_saving_stops_at_once_and_keeps_the_last_checkpoint(
        features, reference, tmp_path, monkeypatch, live_sigint):
    """Ctrl-C at step 4 asks for a stop; a second Ctrl-C comes while step 4 is being written: the
    write is abandoned, last.pt keeps step 3 (whole), and the run still resumes exactly (the log
    rows of step 4 are dropped)."""
    monkeypatch.setattr(StopSignals, "repeat_s", 0.0)  # the second press comes milliseconds after the first
    run = tmp_path / "run"
    real_save = torch.save
    before = signal.getsignal(signal.SIGINT)

    def save_then_ctrl_c(obj, f, *a, **k):
        real_save(obj, f, *a, **k)
        if obj["step"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # lands before the file is published

    monkeypatch.setattr(torch, "save", save_then_ctrl_c)
    with pytest.raises(TrainingStopped, match="second SIGINT: stopped at once without saving") as e:
        train(tiny_config(*RUN_CFG), features, run, progress=False, on_log=_self_signal_at(4, signal.SIGINT))
    assert e.value.signum == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) == before
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert not temp_files(run)
    monkeypatch.setattr(torch, "save", real_save)
    train(None, features, run, resume=True, progress=False)
    assert_same_run(run, reference)


# ------------------------------------------------------------------------------ the run folder


def test_orphaned_temp_files_are_removed_on_the_next_start(features, tmp_path):
    run = tmp_path / "run"
    train(tiny_config("train.max_steps=2"), features, run, progress=False)
    orphans = [run / "checkpoints" / ".last.pt.k3j9x2.tmp", run / "checkpoints" / ".step_0000004.pt.a1.tmp",
               run / ".config.yaml.q8w7e6.tmp", run / ".log.jsonl.zz.tmp"]
    for p in orphans:
        p.write_bytes(b"\0" * 4096)
    keep = run / "checkpoints" / "notes.txt"
    keep.write_text("mine")
    train(None, features, run, resume=True, overrides=["train.max_steps=3"], progress=False)
    assert not any(p.exists() for p in orphans) and keep.exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3


def test_a_second_trainer_is_refused_while_the_first_lives(features, tmp_path):
    run = tmp_path / "run"
    train(tiny_config("train.max_steps=2"), features, run, progress=False)
    holder = lock_run(run)  # what a live trainer holds (flock: per open file, so this process counts as another)
    try:
        with pytest.raises(ClsvcError, match=r"another trainer is running on this run folder \(process \d+\)"):
            train(None, features, run, resume=True, overrides=["train.max_steps=3"], progress=False)
        with pytest.raises(ClsvcError, match="another trainer"):  # before the "already trained" refusal
            train(tiny_config("train.max_steps=2"), features, run, progress=False)
    finally:
        holder.close()  # what the OS does when the holder dies, SIGKILL included
    train(None, features, run, resume=True, overrides=["train.max_steps=3"], progress=False)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3


def test_refusals_leave_no_run_folder(features, tmp_path):
    one_speaker = tmp_path / "one-speaker"
    shutil.copytree(features, one_speaker)
    lines = (one_speaker / "manifest.tsv").read_text().splitlines()
    (one_speaker / "manifest.tsv").write_text("\n".join([lines[0]] + [x for x in lines[1:] if "spk_a" in x]) + "\n")
    cases = [
        (tiny_config(), tmp_path / "no-such-data", {}, "manifest.tsv"),
        (tiny_config("mel.fmax=8000"), features, {}, "different mel config"),
        (tiny_config(), one_speaker, {}, "at least 2 speakers"),
        (tiny_config(), features, {"resume": True}, "nothing to resume"),
    ]
    for i, (cfg, data, kw, message) in enumerate(cases):
        run = tmp_path / "runs" / f"run{i}"
        with pytest.raises(ClsvcError, match=message):
            train(cfg, data, run, progress=False, **kw)
        assert not (tmp_path / "runs").exists(), message


def test_config_yaml_is_written_whole(features, tmp_path):
    import yaml

    run = tmp_path / "run"
    train(tiny_config("train.max_steps=1"), features, run, progress=False)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["max_steps"] == 1 and not temp_files(run)


# ------------------------------------------------------------------------------------ full disk


def _full_disk_at(step: int, monkeypatch):
    """torch.save writes part of the file, then the disk is full (for the save of ``step`` on)."""
    real_save = torch.save

    def save(obj, f, *a, **k):
        if obj["step"] >= step:
            Path(f).write_bytes(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


def test_a_full_disk_stops_training_with_one_line(features, reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _full_disk_at(6, monkeypatch)
    with pytest.raises(ClsvcError) as e:
        train(tiny_config(*RUN_CFG), features, run, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{run}: could not save checkpoints/last.pt at step 6")
    assert "No space left on device" in msg and "--resume" in msg and "still holds step 3" in msg
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert not temp_files(run)
    monkeypatch.undo()  # space freed: --resume continues exactly
    train(None, features, run, resume=True, progress=False)
    assert_same_run(run, reference)


def test_a_write_refused_by_the_file_system_inside_torch(features, tmp_path):
    """A real failed write: a file-size limit makes the kernel refuse it (EFBIG), which torch's
    C++ writer reports as a RuntimeError without the errno."""
    run = tmp_path / "run"
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def limit_after_first_checkpoint(kind, step, values):
        if kind == "train" and step == 4:  # last.pt of step 3 is on disk
            size = (run / "checkpoints" / "last.pt").stat().st_size
            resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, limits[1]))

    try:
        with pytest.raises(ClsvcError, match=r"could not save checkpoints/last.pt at step 6 .*still holds step 3"):
            train(tiny_config(*RUN_CFG), features, run, progress=False, on_log=limit_after_first_checkpoint)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, old)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert not temp_files(run)
    json.dumps(read_log(run))  # the log is whole
