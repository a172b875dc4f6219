"""The training state: one object that a checkpoint saves and restores in full."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..config import Config, config_from_dict
from ..errors import ClsvcError
from ..models import ClsVC
from .checkpoint import rng_state, set_rng_state


@dataclass
class TrainState:
    cfg: Config
    model: ClsVC  # the bare model (what is saved)
    net: nn.Module  # what is called in training: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    data_gen: torch.Generator
    speakers: list[str]
    step: int = 0
    elapsed: float = 0.0  # seconds of training so far, across resumes
    speaker_table: torch.Tensor | None = None  # (K, s) unit-norm mean embeddings
    extra: dict[str, Any] = field(default_factory=dict)


def build_model(cfg: Config) -> ClsVC:
    return ClsVC(cfg.model, n_mels=cfg.mel.n_mels, loss=cfg.loss)


def build_optimizer(model: ClsVC, cfg: Config) -> torch.optim.Optimizer:
    adv = list(model.adversary.parameters())
    adv_ids = {id(p) for p in adv}
    rest = [p for p in model.parameters() if id(p) not in adv_ids]
    o = cfg.optim
    return torch.optim.Adam(
        [{"params": rest, "lr": o.lr}, {"params": adv, "lr": o.lr * o.adversary_lr_mult}],
        lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay,
    )


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
        "optimizer": state.optimizer.state_dict(),
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "step": state.step,
        "elapsed": state.elapsed,
        "rng": rng,
        "extra": state.extra,
    }


def restore(state: TrainState, ckpt: dict[str, Any], rank: int = 0) -> None:
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
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


def model_from_checkpoint(ckpt: dict[str, Any], where: str) -> tuple[ClsVC, Config]:
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
