"""Process-group setup for ``torchrun`` (DDP). A plain ``clsvc train`` is a world of one.

``torchrun --nproc_per_node N -m clsvc train ...`` (or ``--nnodes``/``--rdzv_endpoint`` for
several machines) sets RANK/WORLD_SIZE/LOCAL_RANK; we then use NCCL on GPUs and gloo on CPUs.
Rank 0 logs and saves; every rank samples its own batches from its own seeded generator.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ..devices import pick_device


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) run: rank, world size, device."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0 (the one that logs and writes checkpoints)."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def setup(requested_device: str = "auto") -> DistInfo:
    """Join the process group when started by torchrun, and pick this rank's device (an
    unusable device is a ClsvcError before anything is created)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(requested_device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, device)


def teardown(info: DistInfo | None = None, wait: bool = False) -> None:
    """Leave the process group (if any); with ``wait``, first wait for every rank of ``info``.

    The run's objects (the DDP wrapper holds the group's pending work) are collected before the
    group goes: a gloo worker thread that outlives them aborts the process at exit."""
    if dist.is_available() and dist.is_initialized():
        if wait and info is not None:
            barrier(info)
        gc.collect()
        dist.destroy_process_group()


def any_true(flag: bool, info: DistInfo) -> bool:
    """True on every rank if ``flag`` is true on any rank (keeps ranks stepping together)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's ``obj`` on every rank (a one-item list without DDP)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op without DDP)."""
    if info.enabled:
        dist.barrier()
