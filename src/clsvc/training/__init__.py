"""Training: state, loop, DDP helpers (checkpoints live in :mod:`clsvc.checkpoint`)."""

from .loop import read_log, train
from .state import TrainState

__all__ = ["TrainState", "read_log", "train"]
