"""The training state: one object that a checkpoint saves and restores in full, and the RNG
states that make a resumed run draw exactly what an uninterrupted one would."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..config import Config
from ..errors import ClsvcError
from ..models import System


@dataclass
class TrainState:
    """Everything a training run changes: weights, optimizers, scaler, sampler RNG, counters."""

    cfg: Config
    model: System  # the bare model (what is saved)
    net: nn.Module  # what is called in training: the model, or its DDP wrapper
    optimizers: dict[str, torch.optim.Optimizer]  # one per phase of the system
    scaler: torch.amp.GradScaler | None
    data_gen: torch.Generator
    speakers: list[str]
    step: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    speaker_table: torch.Tensor | None = None  # (K, s) unit-norm training-speaker vectors
    # Loss terms summed over the steps since the last logged row (the next row is their mean):
    # saved with the rest, so a run resumed between two rows logs what an uninterrupted one does.
    log_sums: dict[str, float] = field(default_factory=dict)
    # Steps that reported each term (a phase idle on some steps, e.g. a GAN's discriminator
    # updated every k steps, averages over the steps it ran).
    log_counts: dict[str, int] = field(default_factory=dict)
    # The checkpoint a run started from (``clsvc train --init``): its path, weights_sha256, step and
    # kind; saved with every checkpoint of the run (and its export), so the run says where it began.
    init: dict[str, Any] | None = None

    def add_to_log(self, terms: dict[str, float]) -> None:
        """Count one step's loss terms towards the next logged row."""
        for k, v in terms.items():
            self.log_sums[k] = self.log_sums.get(k, 0.0) + v
            self.log_counts[k] = self.log_counts.get(k, 0) + 1

    def take_log_row(self) -> dict[str, float]:
        """The mean of each term over the steps that reported it since the last row (and start
        a new window)."""
        row = {k: v / max(1, self.log_counts.get(k, 1)) for k, v in self.log_sums.items()}
        self.log_sums, self.log_counts = {}, {}
        return row


# ----------------------------------------------------------------------------------------------
# optimizers


def lr_at(cfg: Config, step: int) -> float:
    """The base learning rate of the step that follows ``step`` completed steps, by
    ``optim.schedule`` (each group then multiplies it by its ``lr_scale``)."""
    o = cfg.optim
    if o.schedule == "constant":
        return o.lr
    done = min(1.0, step / max(1, cfg.train.max_steps))
    return o.lr_final + 0.5 * (o.lr - o.lr_final) * (1.0 + math.cos(math.pi * done))


def _set_lrs(opt: torch.optim.Optimizer, groups: list[dict[str, Any]], lr: float) -> None:
    """Rate of each group: ``lr`` times the group's ``lr_scale`` as the model defines it now
    (kept in the group, so :func:`schedule_lrs` can rescale it every step)."""
    for g, spec in zip(opt.param_groups, groups, strict=True):
        g["lr_scale"] = float(spec.get("lr_scale", 1.0))
        g["lr"] = lr * g["lr_scale"]


def freeze(model: torch.nn.Module, prefixes: tuple[str, ...] | list[str]) -> None:
    """Keep the parameters whose names start with one of ``prefixes`` (``train.freeze``) fixed:
    they get no gradient, so Adam leaves them as they are (it skips parameters without one;
    they stay in the optimizer, so a resume with another ``train.freeze`` still fits its
    state). A prefix that names no parameter is one ClsvcError line listing the model's parts."""
    names = [n for n, _ in model.named_parameters()]
    for pre in prefixes:
        if not any(n.startswith(pre) for n in names):
            parts = sorted({n.split(".", 1)[0] + "." for n in names})
            raise ClsvcError(f"train.freeze: {pre!r} names no parameter of this model; its parts are "
                             f"{', '.join(parts)} (or deeper, e.g. decoder.postnet.)")
    for n, p in model.named_parameters():
        p.requires_grad_(not any(n.startswith(pre) for pre in prefixes))


def build_optimizers(model: System, cfg: Config) -> dict[str, torch.optim.Optimizer]:
    """One Adam (the paper's betas) per phase of the system, with the system's groups; a phase
    with no group (a vocoder without discriminators) gets none, and the trainer skips it."""
    o = cfg.optim
    opts: dict[str, torch.optim.Optimizer] = {}
    for phase in model.phases:
        groups = model.param_groups(phase)
        if not groups:
            continue
        opt = torch.optim.Adam([{"params": g["params"]} for g in groups], lr=o.lr, betas=(o.betas[0], o.betas[1]),
                               weight_decay=o.weight_decay)
        _set_lrs(opt, groups, lr_at(cfg, 0))
        opts[phase] = opt
    return opts


def reset_lrs(state: TrainState) -> None:
    """Apply the config's learning rates at the state's step (after a resume that may have
    changed ``optim`` or ``train.max_steps``)."""
    for phase, opt in state.optimizers.items():
        _set_lrs(opt, state.model.param_groups(phase), lr_at(state.cfg, state.step))


def schedule_lrs(state: TrainState) -> None:
    """Set every group's rate for the coming step (a no-op for the constant schedule)."""
    if state.cfg.optim.schedule == "constant":
        return
    lr = lr_at(state.cfg, state.step)
    for opt in state.optimizers.values():
        for g in opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)


# ----------------------------------------------------------------------------------------------
# RNG


def rng_state(data_gen: torch.Generator | None = None) -> dict[str, Any]:
    """Every RNG a step may draw from (torch, CUDA, numpy, Python, the batch sampler), as
    tensors and builtins that ``torch.load(weights_only=True)`` can read back."""
    np_state: Any = np.random.get_state()
    py_state = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "python": {"version": py_state[0], "state": list(py_state[1])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_gen is not None:
        state["data"] = data_gen.get_state()
    return state


def set_rng_state(state: dict[str, Any], data_gen: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_state` saved."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_gen is not None and "data" in state:
        data_gen.set_state(state["data"])


# ----------------------------------------------------------------------------------------------
# checkpoint payload


def payload(state: TrainState, data_gens: list[Any] | None = None) -> dict[str, Any]:
    """Checkpoint dict of ``state``. ``data_gens``: every rank's sampler state under DDP."""
    rng = rng_state(state.data_gen)
    if data_gens is not None:
        rng["data_per_rank"] = data_gens
    return {
        "config": state.cfg.to_dict(),
        "speakers": list(state.speakers),
        "speaker_table": state.speaker_table,
        "model": state.model.state_dict(),
        "optimizer": {k: o.state_dict() for k, o in state.optimizers.items()},
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "step": state.step,
        "elapsed": state.elapsed,
        "log_window": {"sums": dict(state.log_sums), "counts": dict(state.log_counts)},
        "rng": rng,
        **({"init": dict(state.init)} if state.init is not None else {}),
    }


def restore(state: TrainState, ckpt: dict[str, Any], rank: int = 0) -> None:
    """Load a :func:`payload` back into ``state`` (rank ``rank`` takes its own sampler state)."""
    state.model.load_state_dict(ckpt["model"])
    for phase, opt in state.optimizers.items():
        opt.load_state_dict(ckpt["optimizer"][phase])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    state.step = int(ckpt["step"])
    state.elapsed = float(ckpt.get("elapsed", 0.0))
    state.speaker_table = ckpt.get("speaker_table")
    state.init = ckpt["init"] if isinstance(ckpt.get("init"), dict) else None
    window = ckpt.get("log_window") or {}  # absent from checkpoints of older versions
    state.log_sums = {str(k): float(v) for k, v in window.get("sums", {}).items()}
    counts = window.get("counts")
    if not isinstance(counts, dict):  # written before per-term counts: one count for every term
        counts = dict.fromkeys(state.log_sums, int(window.get("count", 0)))
    state.log_counts = {str(k): int(v) for k, v in counts.items()}
    rng = dict(ckpt["rng"])
    per_rank = rng.get("data_per_rank")
    if per_rank is not None and rank < len(per_rank):
        rng["data"] = per_rank[rank]
    set_rng_state(rng, state.data_gen)
