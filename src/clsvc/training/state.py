"""The training state: one object that a checkpoint saves and restores in full."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..config import Config, config_from_dict
from ..errors import ClsvcError
from ..models import VCSystem, build_system
from .checkpoint import rng_state, set_rng_state


@dataclass
class TrainState:
    cfg: Config
    model: VCSystem  # the bare model (what is saved)
    net: nn.Module  # what is called in training: the model, or its DDP wrapper
    optimizers: dict[str, torch.optim.Optimizer]  # one per phase of the system
    scaler: torch.amp.GradScaler | None
    data_gen: torch.Generator
    speakers: list[str]
    step: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    speaker_table: torch.Tensor | None = None  # (K, s) unit-norm mean embeddings
    extra: dict[str, Any] = field(default_factory=dict)


def build_model(cfg: Config) -> VCSystem:
    """The system named by ``cfg.model.system`` (``cfg.model.n_speakers`` must be set)."""
    return build_system(cfg)


def group_lr(group: dict, cfg: Config) -> float:
    """Learning rate of an optimizer group: ``optim.lr``, times ``optim.adversary_lr_mult`` for
    a group named "adversary" (ClsVC's C2)."""
    mult = cfg.optim.adversary_lr_mult if group.get("name") == "adversary" else 1.0
    return cfg.optim.lr * group.get("lr_scale", 1.0) * mult


def build_optimizers(model: VCSystem, cfg: Config) -> dict[str, torch.optim.Optimizer]:
    """One Adam (the paper's betas) per phase of the system."""
    o = cfg.optim
    opts = {}
    for phase in model.phases:
        groups = model.param_groups(phase, o.lr)
        for g in groups:
            g["lr"] = group_lr(g, cfg)
        opts[phase] = torch.optim.Adam(groups, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay)
    return opts


def reset_lrs(state: "TrainState") -> None:
    """Apply the config's learning rates (after a resume that may have changed optim.lr)."""
    for opt in state.optimizers.values():
        for g in opt.param_groups:
            g["lr"] = group_lr(g, state.cfg)


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
        "rng": rng,
        "extra": state.extra,
    }


def restore(state: TrainState, ckpt: dict[str, Any], rank: int = 0) -> None:
    state.model.load_state_dict(ckpt["model"])
    saved = ckpt["optimizer"]
    if "param_groups" in saved:  # a single-optimizer checkpoint (clsvc 0.1 format)
        saved = {"main": saved}
    for phase, opt in state.optimizers.items():
        opt.load_state_dict(saved[phase])
    if state.scaler is not None and ckpt.get("scaler"):
        state.scaler.load_state_dict(ckpt["scaler"])
    state.step = int(ckpt["step"])
    state.elapsed = float(ckpt.get("elapsed", 0.0))
    state.speaker_table = ckpt.get("speaker_table")
    state.extra = dict(ckpt.get("extra") or {})
    rng = dict(ckpt["rng"])
    per_rank = rng.get("data_per_rank")
    if per_rank is not None and rank < len(per_rank):
        rng["data"] = per_rank[rank]
    set_rng_state(rng, state.data_gen)


def model_from_checkpoint(ckpt: dict[str, Any], where: str) -> tuple[VCSystem, Config]:
    """Rebuild the model (eval mode) from a checkpoint dict alone."""
    cfg = config_from_dict(ckpt["config"], f"{where} (config)")
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise ClsvcError(
            f"{where}: weights do not match the config stored with them; the file is damaged "
            "or was edited, re-export it from the training run"
        ) from None
    return model.eval(), cfg
