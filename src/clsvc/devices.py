"""Which torch device to run on: one check shared by training, inference and the CLI."""

from __future__ import annotations

import torch

from .errors import ClsvcError

DEVICE_HINT = "use auto, cpu, cuda or cuda:N"


def pick_device(requested: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything else is taken as a torch device
    (``cuda`` = this rank's GPU) and must exist here: an unknown name, CUDA on a build or
    machine without it, or a GPU index beyond those visible is one ClsvcError line."""
    text = str(requested).strip()
    if text == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        # "auto" with a GPU is this rank's GPU, checked like an explicit "cuda" below: torchrun
        # with more processes per node than GPUs would otherwise die inside CUDA ("invalid
        # device ordinal") instead of saying what to change.
        dev = torch.device("cuda" if text == "auto" else text)
    except (RuntimeError, ValueError, TypeError):
        raise ClsvcError(f"device {text!r}: not a device name; {DEVICE_HINT}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ClsvcError(f"device {text!r}: Apple MPS is not available on this machine; use --device cpu")
        return dev
    if dev.type != "cuda":
        raise ClsvcError(f"device {text!r}: clsvc runs on cpu, cuda or mps only; {DEVICE_HINT}")
    if not torch.cuda.is_available():
        why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
               else "no CUDA GPU is visible (driver missing or CUDA_VISIBLE_DEVICES empty)")
        raise ClsvcError(f"device {text!r}: {why}; use --device cpu (or auto)")
    if dev.index is None:
        dev = torch.device(f"cuda:{local_rank}")
    count = torch.cuda.device_count()
    if dev.index is not None and dev.index >= count:
        visible = f"cuda:0 to cuda:{count - 1}" if count > 1 else "cuda:0"
        raise ClsvcError(f"device {text!r} (cuda:{dev.index}): only {count} CUDA device(s) visible ({visible}); "
                         "choose one of those or fewer processes per node")
    return dev
