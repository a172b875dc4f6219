"""Training: state, loop, checkpoints, DDP helpers."""

from .checkpoint import load_checkpoint, save_checkpoint
from .loop import read_log, train
from .state import TrainState, build_model, model_from_checkpoint

__all__ = ["TrainState", "build_model", "load_checkpoint", "model_from_checkpoint", "read_log",
           "save_checkpoint", "train"]
