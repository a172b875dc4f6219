"""Self-describing, atomically written checkpoints, for training and inference alike.

A training checkpoint holds everything needed to rebuild the model for inference (config incl.
the mel definition, speaker list, speaker table) and to continue training exactly (optimizer,
AMP scaler, step, every RNG state incl. the batch sampler's). An exported model
(:func:`export_model`, ``clsvc export``) holds only what inference needs: the weights without
training-only parts (classifiers, discriminators), the config, speakers and speaker table.

Both are plain dicts saved with ``torch.save`` and read back with ``weights_only=True`` (no
code is unpickled), tagged with :data:`FORMAT` and ``kind`` (``"train"`` or ``"inference"``).

Integrity: :func:`save_checkpoint` stores :func:`weights_sha256` of the weights under
``weights_sha256`` and :func:`load_checkpoint` checks it, the file's structure and that every
weight is finite, so that a file damaged on disk or in transfer is refused with one line instead
of converting with garbage weights (``torch.load`` does not check the zip members' CRCs) or
crashing later with a KeyError.

Half precision: ``export_model(..., dtype=torch.float16)`` (``clsvc export --fp16``, what the
shipped models of :mod:`clsvc.pretrained` are) stores the floating-point weights as float16 (half
the size) and tags the file ``dtype: "float16"``; the hash covers the stored float16 weights and
:func:`load_checkpoint` checks it before upcasting them to float32 (CPU inference runs in
float32). The speaker table stays float32 (a few numbers per speaker).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import math
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .config import Config, config_from_dict
from .errors import ClsvcError
from .files import atomic_path
from .models import System, build_system

FORMAT = "clsvc-checkpoint"
VERSION = 1
TRAIN, INFERENCE = "train", "inference"
HASH_KEY = "weights_sha256"

_NOT_OURS = "pass a file from RUN/checkpoints/ written by `clsvc train`"
_FIX_DAMAGED = "re-export it from the training run or resume from an earlier step_N.pt"


def weights_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a state dict: for each key in sorted order its name, dtype, shape and the
    tensor's raw bytes (of a contiguous CPU copy, so views, devices and strides do not matter)."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach()
        # Flat bytes: works for every dtype (bf16 has no numpy dtype) and for 0-d tensors.
        data = t.cpu().contiguous().reshape(-1).view(torch.uint8)
        h.update(f"{len(key)}:{key}|{t.dtype}|{tuple(t.shape)}|{data.numel()}|".encode())
        h.update(data.numpy().data)
    return h.hexdigest()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plus format tag, time and :func:`weights_sha256` of ``payload["model"]``)
    to ``path`` atomically: a crash mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = dict(payload, format=FORMAT, version=VERSION,
                   saved_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    payload[HASH_KEY] = weights_sha256(payload["model"])
    payload.setdefault("kind", TRAIN)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


class DamagedCheckpoint(ClsvcError):
    """A clsvc checkpoint damaged on disk or in transfer; ``what`` says how (callers that know a
    better fix than re-exporting, e.g. a shipped model's "reinstall", reword the message)."""

    def __init__(self, path: Path, what: str):
        super().__init__(f"{path}: damaged checkpoint ({what}); {_FIX_DAMAGED}")
        self.path = path
        self.what = what


def _damaged(path: Path, what: str) -> DamagedCheckpoint:
    return DamagedCheckpoint(path, what)


def _type(v: Any) -> str:
    return "None" if v is None else type(v).__name__


def _short(v: Any, n: int = 40) -> str:
    """``repr(v)`` cut to ``n`` characters (one line: repr escapes newlines)."""
    r = repr(v)
    return r if len(r) <= n else r[: n - 3] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_plain(v: Any) -> bool:
    """YAML/JSON-like data: what a stored config is made of."""
    if v is None or isinstance(v, (str, int, float, bool)):
        return True
    if isinstance(v, (list, tuple)):
        return all(_is_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _is_plain(x) for k, x in v.items())
    return False


#: Weight dtypes an exported file may store (``dtype`` entry; absent: as trained, float32).
STORED_DTYPES = {"float32": torch.float32, "float16": torch.float16}
_HALF = (torch.float16, torch.bfloat16)


def _unreadable(path: Path) -> ClsvcError:
    """The error for a file ``torch.load`` could not read: damaged if it is (or was) a zip
    archive, which is what ``torch.save`` writes, else not a checkpoint at all."""
    try:
        with path.open("rb") as f:
            magic = f.read(4)
    except OSError as e:
        return ClsvcError(f"{path}: checkpoint cannot be read ({e.strerror or e}); check its permissions")
    if not magic:
        return _damaged(path, "empty file")
    if magic == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()
        except Exception:
            return _damaged(path, "truncated or corrupted zip archive")
        if bad is not None:
            return _damaged(path, f"CRC mismatch in archive member {_short(bad, 80)}")
    return ClsvcError(f"{path}: not a clsvc checkpoint (unreadable by torch.load); {_NOT_OURS}")


def _check_structure(path: Path, ckpt: dict[str, Any]) -> None:
    """Raise a one-line ClsvcError for the first thing of a tagged file that is not as
    :func:`save_checkpoint` (and ``training.state.payload``) write it."""
    version = ckpt.get("version", 0)
    if not _is_int(version):
        raise _damaged(path, f"'version' is a {_type(version)}, expected an integer")
    if version > VERSION:
        raise ClsvcError(f"{path}: written by a newer clsvc (format {version}); upgrade clsvc")
    # Files from before the export feature have no 'kind': they are training checkpoints.
    kind = ckpt.get("kind", TRAIN)
    if kind not in (TRAIN, INFERENCE):
        raise _damaged(path, f"'kind' is {_short(kind)}, expected {TRAIN!r} or {INFERENCE!r}")
    for key in ("config", "model", "step", "speakers"):
        if key not in ckpt:
            raise _damaged(path, f"no {key!r} entry")
    dtype = ckpt.get("dtype", "float32")
    if dtype not in STORED_DTYPES:
        raise _damaged(path, f"'dtype' is {_short(dtype)}, expected one of {', '.join(STORED_DTYPES)}")

    config = ckpt["config"]
    if not isinstance(config, dict):
        raise _damaged(path, f"'config' is a {_type(config)}, expected a dict")
    if not _is_plain(config):
        raise _damaged(path, "'config' holds values other than plain strings, numbers, lists and dicts")

    model = ckpt["model"]
    if not isinstance(model, dict):
        raise _damaged(path, f"'model' is a {_type(model)}, expected a dict of tensors")
    if not model:
        raise _damaged(path, "'model' holds no weights")
    for k, v in model.items():
        if not isinstance(k, str):
            raise _damaged(path, f"'model' has a {_type(k)} key {_short(k)}, expected weight names")
        if not isinstance(v, torch.Tensor):
            raise _damaged(path, f"weight {_short(k, 80)} is a {_type(v)}, expected a tensor")
        if v.layout != torch.strided or v.is_quantized:
            raise _damaged(path, f"weight {_short(k, 80)} is a {v.layout} / {v.dtype} tensor, expected a dense one")

    step = ckpt["step"]
    if not _is_int(step) or step < 0:
        what = _short(step) if _is_int(step) else f"a {_type(step)}"
        raise _damaged(path, f"'step' is {what}, expected an integer >= 0")
    elapsed = ckpt.get("elapsed", 0.0)
    if not (isinstance(elapsed, (int, float)) and not isinstance(elapsed, bool) and math.isfinite(elapsed)):
        raise _damaged(path, f"'elapsed' is {_short(elapsed)}, expected a number of seconds")

    speakers = ckpt["speakers"]
    if not isinstance(speakers, list):
        raise _damaged(path, f"'speakers' is a {_type(speakers)}, expected a list of speaker names")
    odd = [s for s in speakers if not isinstance(s, str)]
    if odd:
        raise _damaged(path, f"'speakers' holds a {_type(odd[0])} entry, expected speaker names")
    table = ckpt.get("speaker_table")
    if table is not None:
        if not isinstance(table, torch.Tensor) or table.dim() != 2 or not table.is_floating_point():
            what = f"a {table.dim()}-D {table.dtype} tensor" if isinstance(table, torch.Tensor) else f"a {_type(table)}"
            raise _damaged(path, f"'speaker_table' is {what}, expected a 2-D float tensor")
        if table.shape[0] != len(speakers):
            raise _damaged(path, f"'speaker_table' has {table.shape[0]} rows for {len(speakers)} speakers")
        if not bool(torch.isfinite(table).all()):
            raise _damaged(path, "'speaker_table' holds NaN or infinite values")

    if kind == TRAIN:
        for key in ("optimizer", "rng"):
            if not isinstance(ckpt.get(key), dict):
                what = f"no {key!r} entry" if key not in ckpt else f"{key!r} is a {_type(ckpt[key])}, expected a dict"
                raise _damaged(path, what)
        if ckpt.get("scaler") is not None and not isinstance(ckpt["scaler"], dict):
            raise _damaged(path, f"'scaler' is a {_type(ckpt['scaler'])}, expected a dict or None")


def _check_weights(path: Path, ckpt: dict[str, Any]) -> None:
    """The stored hash (when there is one) matches the weights, and every weight is finite."""
    model: dict[str, torch.Tensor] = ckpt["model"]
    if HASH_KEY in ckpt:
        stored = ckpt[HASH_KEY]
        if not isinstance(stored, str):
            raise _damaged(path, f"{HASH_KEY!r} is a {_type(stored)}, expected a hex string")
        if weights_sha256(model) != stored:
            raise _damaged(path, "the weights do not match their SHA-256 stored at save time: "
                                 "the file was corrupted on disk or in transfer, or edited")
    # else: a file written by this project before the hash was added (format 1 all the same);
    # it is still loaded, checked for structure and finite weights only.
    for k, v in model.items():
        if (v.is_floating_point() or v.is_complex()) and not bool(torch.isfinite(v).all()):
            raise _damaged(path, f"weight {_short(k, 80)} holds NaN or infinite values")


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a file written by :func:`save_checkpoint`; anything else, or such a file that was
    damaged (structure, weights hash, non-finite weights), is a one-line ClsvcError."""
    path = Path(path)
    if not path.is_file():
        raise ClsvcError(f"{path}: checkpoint not found; pass a .pt file written by `clsvc train`")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        raise _unreadable(path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ClsvcError(f"{path}: not a clsvc checkpoint (no '{FORMAT}' tag); {_NOT_OURS}")
    _check_structure(path, ckpt)
    _check_weights(path, ckpt)  # on the weights as stored (float16 in a --fp16 export)
    if any(v.dtype in _HALF for v in ckpt["model"].values()):
        ckpt["model"] = {k: v.float() if v.dtype in _HALF else v for k, v in ckpt["model"].items()}
    return ckpt


def is_inference_only(ckpt: dict[str, Any]) -> bool:
    """True for an exported model (no optimizer, no training-only weights)."""
    return ckpt.get("kind", TRAIN) == INFERENCE


def model_from_checkpoint(ckpt: dict[str, Any], where: str) -> tuple[System, Config]:
    """Rebuild the model (eval mode) and its config from a checkpoint dict alone (one that
    :func:`load_checkpoint` returned: a bad stored config is a one-line ClsvcError)."""
    config: Any = ckpt.get("config")  # not a dict: config_from_dict says so in one line
    cfg = config_from_dict(config, f"{where} (config)")
    model = build_system(cfg)
    try:
        if is_inference_only(ckpt):
            model.load_inference_state(ckpt["model"])
        else:
            model.load_state_dict(ckpt["model"])
    except RuntimeError:
        raise ClsvcError(
            f"{where}: weights do not match the config stored with them; the file is damaged "
            "or was edited, re-export it from the training run"
        ) from None
    return model.eval(), cfg


def load_weights(model: System, ckpt: dict[str, Any], where: str, partial: bool = False) -> list[str]:
    """Copy the weights (and buffers) of a checkpoint dict into ``model``, which must have the
    same structure: the same names and shapes (an exported file may lack the ``training_only``
    parts, which keep ``model``'s own values; training-only parts ``model`` does not have are
    skipped). Anything else is one ClsvcError line naming ``where`` and the first difference.

    With ``partial`` only the tensors whose name and shape match are copied (e.g. a model with a
    wider decoder started from a trained one's encoder); the rest keep ``model``'s fresh values
    and their names are returned (a checkpoint that fits nothing is an error). Returns [] when
    everything was copied."""
    state: dict[str, torch.Tensor] = ckpt["model"]
    own = model.state_dict()
    if partial:
        fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        if not fits:
            raise ClsvcError(f"{where}: none of its weights fit the model of this config (no name and shape "
                             "in common); pass a checkpoint of the same system")
        model.load_state_dict(fits, strict=False)
        return [k for k in own if k not in fits]
    # An exported file has no training-only part; a training run's lacks those its config did not build.
    optional = model.training_only if is_inference_only(ckpt) else model.optional_training
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    # A training-only part this config does not build (ClsVC's phone classifier when the run that
    # saved it had loss.phone and this one has not) is left behind; inference never needed it.
    unexpected = [k for k in state if k not in own and not k.startswith(model.training_only)]
    state = {k: v for k, v in state.items() if k in own}
    shapes = [k for k in state if tuple(state[k].shape) != tuple(own[k].shape)]  # state: own's keys only
    if missing or unexpected or shapes:
        if shapes:
            k = shapes[0]
            first = f"{_short(k, 80)} is {tuple(state[k].shape)} there, {tuple(own[k].shape)} here"
        elif missing:
            first = f"no {_short(missing[0], 80)} there"
        else:
            first = f"{_short(unexpected[0], 80)} is not in this model"
        n = len(missing) + len(unexpected) + len(shapes)
        raise ClsvcError(f"{where}: its weights do not fit the model of this config ({first}; {n} difference(s)); "
                         "pass a checkpoint of the same model settings (and training speakers, where the "
                         "model has a layer per speaker)")
    model.load_state_dict(state, strict=not optional)
    return []


def _to_dtype(state: Mapping[str, torch.Tensor], dtype: torch.dtype, where: str) -> dict[str, torch.Tensor]:
    """``state`` (cloned) with its floating-point tensors cast to ``dtype`` unless that is
    float32, the dtype they are trained in (integer buffers are kept as they are); a weight beyond
    ``dtype``'s range (it would become infinite) is one ClsvcError line."""
    limit = torch.finfo(dtype).max
    out = {}
    for k, v in state.items():
        if dtype != torch.float32 and v.is_floating_point() and v.dtype != dtype:
            peak = float(v.detach().abs().max()) if v.numel() else 0.0
            if peak > limit:
                raise ClsvcError(f"{where}: weight {_short(k, 80)} reaches {peak:.3g}, beyond {dtype} "
                                 f"(max {limit:.3g}); export it without --fp16")
            v = v.to(dtype)
        out[k] = v.clone()
    return out


def export_model(checkpoint: str | Path, out: str | Path, dtype: torch.dtype = torch.float32,
                 griffin_lim_iters: int | None = None, convert: Mapping[str, float] | None = None) -> Path:
    """Write the inference-only file of ``checkpoint`` to ``out`` (see the module docstring),
    its floating-point weights stored as ``dtype`` (float32, or float16: half the size).
    ``griffin_lim_iters``: store this many Griffin-Lim iterations in the file's mel config (what
    a converter of the file uses without a neural vocoder; it shapes no feature), instead of the
    training run's. ``convert``: finishing settings to store instead of the run's, by
    :class:`~clsvc.config.ConvertConfig` field (e.g. ``{"contrast": 0.25}``; checked like any
    config value)."""
    names = {v: k for k, v in STORED_DTYPES.items()}
    if dtype not in names:
        raise ValueError(f"dtype must be one of {', '.join(STORED_DTYPES)}, not {dtype}")
    if griffin_lim_iters is not None and griffin_lim_iters < 1:
        raise ClsvcError(f"--griffin-lim-iters must be at least 1, not {griffin_lim_iters}")
    ckpt = load_checkpoint(checkpoint)
    model, _ = model_from_checkpoint(ckpt, str(checkpoint))
    config = copy.deepcopy(ckpt["config"])
    if griffin_lim_iters is not None:
        config.setdefault("mel", {})["griffin_lim_iters"] = int(griffin_lim_iters)
    for key, value in (convert or {}).items():
        config.setdefault("convert", {})[key] = float(value)
    config_from_dict(config, f"{checkpoint} with the export options")  # the config's own rules, before writing
    payload = {
        "kind": INFERENCE,
        "config": config,
        "speakers": list(ckpt.get("speakers", [])),
        "speaker_table": ckpt.get("speaker_table"),
        "model": _to_dtype(model.inference_state_dict(), dtype, str(checkpoint)),
        "step": int(ckpt.get("step", 0)),
        "elapsed": float(ckpt.get("elapsed", 0.0)),
    }
    if dtype != torch.float32:  # float32 files stay as before (readable by older clsvc unchanged)
        payload["dtype"] = names[dtype]
    if isinstance(ckpt.get("init"), dict):  # the weights its run started from (`clsvc train --init`)
        payload["init"] = ckpt["init"]
    return save_checkpoint(out, payload)
