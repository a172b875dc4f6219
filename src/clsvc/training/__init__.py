"""Training: state, loop, DDP helpers (checkpoints live in :mod:`clsvc.checkpoint`)."""

from .loop import TrainingStopped, read_log, train
from .state import TrainState

__all__ = ["TrainState", "TrainingStopped", "read_log", "train"]
