"""Multi-process training through torchrun with the gloo backend (2 CPU processes; ``--device
cpu`` so that a machine with fewer than two GPUs runs them too)."""

import subprocess
import sys

import torch

from clsvc.checkpoint import load_checkpoint
from clsvc.training import read_log

from helpers import TINY


def torchrun(*args, timeout=300):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "clsvc", *map(str, args), "--device", "cpu"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_ddp_two_cpu_processes_train_and_resume(features, tmp_path):
    run = tmp_path / "ddp"
    r = torchrun("train", "--config", "cpu", "--data", features, "--out", run, "--quiet", *TINY,
                 "train.max_steps=4", "train.log_every=1")
    assert r.returncode == 0, r.stderr[-3000:]
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4
    # Every rank's batch sampler state is saved, so a resumed DDP run continues exactly.
    assert len(ckpt["rng"]["data_per_rank"]) == 2
    assert not torch.equal(ckpt["rng"]["data_per_rank"][0], ckpt["rng"]["data_per_rank"][1])
    rows = read_log(run)
    assert [row["step"] for row in rows] == [1, 2, 3, 4]  # rank 0 alone logs
    r = torchrun("train", "--data", features, "--out", run, "--resume", "--quiet", "train.max_steps=6")
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6


def test_ddp_rejects_indivisible_batch(features, tmp_path):
    r = torchrun("train", "--config", "cpu", "--data", features, "--out", tmp_path / "r", "--quiet", *TINY,
                 "train.batch_size=5", "train.max_steps=2")
    assert r.returncode != 0 and "not divisible" in r.stderr
