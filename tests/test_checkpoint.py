"""Checkpoint integrity: the weights hash stored at save time and checked at load, the structure
checks, and that every damaged file is one ClsvcError line (library) and exit 2 with one stderr
line and no traceback (CLI) -- never a KeyError, TypeError or silently wrong weights."""

from __future__ import annotations

import errno
import math
import re
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import clsvc
from clsvc.checkpoint import (
    HASH_KEY,
    export_model,
    is_inference_only,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
    weights_sha256,
)
from clsvc.cli import main
from clsvc.errors import ClsvcError

FIX = "re-export it from the training run or resume from an earlier step_N.pt"


# ----------------------------------------------------------------------------------------------
# helpers


def _raw(path: Path) -> dict[str, Any]:
    """The file as torch.load reads it, no checks."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _largest_weight(ckpt: dict[str, Any]) -> str:
    return max((k for k, v in ckpt["model"].items() if v.dtype == torch.float32), key=lambda k: ckpt["model"][k].numel())


def _flip_weight_record(src: Path, dst: Path) -> str:
    """Copy ``src`` to ``dst`` with one bit flipped inside the zip member holding the largest
    weight's bytes, everything else byte-identical (so that member's CRC no longer matches).
    The bit is the lowest mantissa bit of one float: the weight stays finite, only the hash can
    tell. Returns the member's name."""
    ckpt = _raw(src)
    w = ckpt["model"][_largest_weight(ckpt)]
    want = w.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:
        info = next(i for i in z.infolist() if "/data/" in i.filename and z.read(i) == want)
    assert info.compress_type == zipfile.ZIP_STORED
    name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26:info.header_offset + 30])
    start = info.header_offset + 30 + name_len + extra_len  # the local header is 30 bytes + name + extra
    assert raw[start:start + len(want)] == want
    raw[start + (len(want) // 2 & ~3)] ^= 0x01  # byte 0 of a float32 (little-endian): its lowest bits
    dst.write_bytes(bytes(raw))
    return info.filename


def _write(good: Path, out: Path, mutate: Callable[[dict[str, Any]], Any], rehash: bool = True) -> Path:
    """``good`` loaded raw, changed by ``mutate`` and saved with plain torch.save; with ``rehash``
    the stored weights hash is brought up to date (where the weights are still a tensor dict), so
    that the structure check under test is the one that fires."""
    ckpt = _raw(good)
    mutate(ckpt)
    model = ckpt.get("model")
    if rehash and isinstance(model, dict) and all(isinstance(v, torch.Tensor) and v.layout == torch.strided
                                                  for v in model.values()):
        ckpt[HASH_KEY] = weights_sha256(model)
    torch.save(ckpt, out)
    return out


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.__setitem__(key, value)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda c: c.pop(key)


def _set_weight(value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["model"][_largest_weight(c)] = value
    return mutate


def _poison_weight(x: float) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["model"][_largest_weight(c)].view(-1)[3] = x
    return mutate


def _add_to_weight(c: dict[str, Any]) -> None:
    c["model"][_largest_weight(c)] += 1e-3


def _short_table(c: dict[str, Any]) -> None:
    c["speaker_table"] = c["speaker_table"][:-1]


# name -> (how the file is damaged, words the message must hold). ``{weight}``: the largest weight.
DAMAGED: dict[str, tuple[Callable[[Path, Path], Any], list[str]]] = {
    "crc_flipped_weight_record": (_flip_weight_record, ["SHA-256"]),
    "weights_edited_after_save": (lambda g, o: _write(g, o, _add_to_weight, rehash=False), ["SHA-256"]),
    "hash_not_a_string": (lambda g, o: _write(g, o, _set(HASH_KEY, 5), rehash=False), [HASH_KEY]),
    "missing_config": (lambda g, o: _write(g, o, _drop("config")), ["'config'"]),
    "missing_model": (lambda g, o: _write(g, o, _drop("model")), ["'model'"]),
    "missing_step": (lambda g, o: _write(g, o, _drop("step")), ["'step'"]),
    "missing_speakers": (lambda g, o: _write(g, o, _drop("speakers")), ["'speakers'"]),
    "missing_optimizer": (lambda g, o: _write(g, o, _drop("optimizer")), ["'optimizer'"]),
    "config_not_a_dict": (lambda g, o: _write(g, o, _set("config", ["cpu"])), ["'config'", "list"]),
    "config_with_a_tensor": (lambda g, o: _write(g, o, lambda c: c["config"].__setitem__("x", torch.ones(1))),
                             ["'config'"]),
    "model_not_a_dict": (lambda g, o: _write(g, o, lambda c: c.__setitem__("model", list(c["model"].values()))),
                         ["'model'", "list"]),
    "model_empty": (lambda g, o: _write(g, o, _set("model", {})), ["'model'", "no weights"]),
    "model_with_a_non_tensor": (lambda g, o: _write(g, o, _set_weight([1.0, 2.0])), ["{weight}", "list"]),
    "model_with_a_sparse_tensor": (lambda g, o: _write(g, o, _set_weight(torch.eye(3).to_sparse())),
                                   ["{weight}", "sparse"]),
    "step_as_str": (lambda g, o: _write(g, o, _set("step", "8")), ["'step'", "str"]),
    "step_negative": (lambda g, o: _write(g, o, _set("step", -1)), ["'step'", "-1"]),
    "elapsed_as_str": (lambda g, o: _write(g, o, _set("elapsed", "ten")), ["'elapsed'"]),
    "version_as_str": (lambda g, o: _write(g, o, _set("version", "1")), ["'version'"]),
    "speakers_not_a_list": (lambda g, o: _write(g, o, _set("speakers", "spk_a")), ["'speakers'", "str"]),
    "speakers_not_names": (lambda g, o: _write(g, o, _set("speakers", ["spk_a", None, "spk_c"])),
                           ["'speakers'", "None"]),
    "speaker_table_short": (lambda g, o: _write(g, o, _short_table), ["'speaker_table'", "2 rows for 3 speakers"]),
    "speaker_table_1d": (lambda g, o: _write(g, o, _set("speaker_table", torch.zeros(3))), ["'speaker_table'", "1-D"]),
    "speaker_table_nan": (lambda g, o: _write(g, o, lambda c: c["speaker_table"].view(-1).__setitem__(0, math.nan)),
                          ["'speaker_table'", "NaN"]),
    "nan_weight": (lambda g, o: _write(g, o, _poison_weight(math.nan)), ["{weight}", "NaN"]),
    "inf_weight": (lambda g, o: _write(g, o, _poison_weight(-math.inf)), ["{weight}", "infinite"]),
    "wrong_kind": (lambda g, o: _write(g, o, _set("kind", "bogus")), ["'kind'", "'bogus'"]),
    "rng_not_a_dict": (lambda g, o: _write(g, o, _set("rng", None)), ["'rng'"]),
    "truncated": (lambda g, o: o.write_bytes(g.read_bytes()[: g.stat().st_size // 2]), ["zip archive"]),
    "empty": (lambda g, o: o.write_bytes(b""), ["empty file"]),
}
# Files that are not clsvc checkpoints at all (the "as today" message).
FOREIGN: dict[str, Callable[[Path, Path], Any]] = {
    "not_a_dict": lambda g, o: torch.save([1, 2, 3], o),
    "plain_tensor": lambda g, o: torch.save(torch.zeros(3), o),
    "untagged_dict": lambda g, o: torch.save({"model": {"w": torch.zeros(2)}}, o),
    "text": lambda g, o: o.write_bytes(b"hello\n"),
}


@pytest.fixture(scope="module")
def good(trained_run) -> Path:
    return trained_run / "checkpoints" / "last.pt"


@pytest.fixture(scope="module")
def bad_dir(good, tmp_path_factory) -> Path:
    """Every damaged and foreign file of DAMAGED / FOREIGN, made once, named ``<case>.pt``."""
    d = tmp_path_factory.mktemp("bad-ckpts")
    for name, (make, _) in DAMAGED.items():
        make(good, d / f"{name}.pt")
    for name, make in FOREIGN.items():
        make(good, d / f"{name}.pt")
    return d


def _one_line(e: pytest.ExceptionInfo[ClsvcError]) -> str:
    msg = str(e.value)
    assert "\n" not in msg and "\r" not in msg, msg
    return msg


# ----------------------------------------------------------------------------------------------
# the hash


def test_hash_covers_names_dtypes_shapes_and_bytes():
    w = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    base = weights_sha256({"a": w, "b": torch.tensor(7)})
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert weights_sha256({"b": torch.tensor(7), "a": w.clone()}) == base  # key order, copies
    assert weights_sha256({"a": w.t().contiguous().t(), "b": torch.tensor(7)}) == base  # strides
    for other in [{"a2": w, "b": torch.tensor(7)}, {"a": w.reshape(4, 3), "b": torch.tensor(7)},
                  {"a": w.double(), "b": torch.tensor(7)}, {"a": w, "b": torch.tensor(8)},
                  {"a": w + torch.finfo(torch.float32).tiny, "b": torch.tensor(7)}, {"a": w}]:
        assert weights_sha256(other) != base
    # bf16 (no numpy dtype), half, bool, 0-d and empty tensors hash too, and differ by dtype.
    odd = {"bf": torch.ones(5, dtype=torch.bfloat16), "h": torch.ones(5, dtype=torch.float16),
           "m": torch.tensor([True, False]), "s": torch.tensor(1.5), "e": torch.zeros(0, 3)}
    assert weights_sha256(odd) != weights_sha256(dict(odd, bf=torch.ones(5, dtype=torch.float16)))


def test_round_trip_stores_and_verifies_the_hash(good, tmp_path):
    ckpt = load_checkpoint(good)
    assert re.fullmatch(r"[0-9a-f]{64}", ckpt[HASH_KEY])
    assert ckpt[HASH_KEY] == weights_sha256(ckpt["model"])
    # save -> load again, with odd dtypes and a non-contiguous weight in the model
    model = dict(ckpt["model"], **{"x.bf16": torch.randn(4, 3).to(torch.bfloat16), "x.count": torch.tensor(3),
                                   "x.t": torch.randn(3, 5).t()})
    out = save_checkpoint(tmp_path / "again.pt", dict(ckpt, model=model))
    back = load_checkpoint(out)
    assert back[HASH_KEY] == weights_sha256(model)
    assert all(torch.equal(back["model"][k], v) for k, v in model.items())
    assert back["step"] == ckpt["step"] and back["speakers"] == ckpt["speakers"]


def test_older_files_without_a_hash_still_load(good, tmp_path):
    old = _write(good, tmp_path / "old.pt", lambda c: (c.pop(HASH_KEY), c.pop("kind")), rehash=False)
    ckpt = load_checkpoint(old)
    assert HASH_KEY not in ckpt and not is_inference_only(ckpt)
    model, _ = model_from_checkpoint(ckpt, str(old))
    assert not model.training


def test_export_output_verifies_on_load(good, tmp_path):
    out = export_model(good, tmp_path / "model.pt")
    ckpt = load_checkpoint(out)
    assert is_inference_only(ckpt) and "optimizer" not in ckpt
    assert ckpt[HASH_KEY] == weights_sha256(ckpt["model"]) != load_checkpoint(good)[HASH_KEY]
    model_from_checkpoint(ckpt, str(out))
    bad = tmp_path / "model-flipped.pt"
    _flip_weight_record(out, bad)
    with pytest.raises(ClsvcError, match="damaged checkpoint"):
        load_checkpoint(bad)


# ----------------------------------------------------------------------------------------------
# damaged files


def test_the_flipped_record_is_damage_that_only_the_hash_sees(good, tmp_path):
    bad = tmp_path / "flipped.pt"
    member = _flip_weight_record(good, bad)
    with zipfile.ZipFile(bad) as z:
        assert z.testzip() == member  # the zip CRC of that member is wrong now
    try:
        raw = _raw(bad)  # torch.load (2.x) does not check member CRCs: it reads the weights as they are
    except Exception:
        raw = None  # a torch that checks CRCs: then load_checkpoint reports the CRC (below)
    with pytest.raises(ClsvcError) as e:
        load_checkpoint(bad)
    msg = _one_line(e)
    assert msg.startswith(f"{bad}: damaged checkpoint (") and msg.endswith(FIX)
    if raw is not None:
        name = _largest_weight(raw)
        assert not torch.equal(raw["model"][name], _raw(good)["model"][name])
        assert torch.isfinite(raw["model"][name]).all()  # nothing but the hash can tell
        assert "SHA-256" in msg
    with pytest.raises(ClsvcError, match="damaged checkpoint"):
        clsvc.load(bad)


@pytest.mark.parametrize("case", list(DAMAGED))
def test_damaged_checkpoint_is_one_clsvc_error_line(case, bad_dir, good):
    path = bad_dir / f"{case}.pt"
    with pytest.raises(ClsvcError) as e:  # any other exception fails the test
        load_checkpoint(path)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: damaged checkpoint (") and msg.endswith(FIX), msg
    weight = _largest_weight(_raw(good))
    for word in DAMAGED[case][1]:
        assert word.format(weight=weight) in msg, msg
    with pytest.raises(ClsvcError):
        clsvc.load(path)


@pytest.mark.parametrize("case", list(FOREIGN))
def test_foreign_file_is_not_a_clsvc_checkpoint(case, bad_dir):
    path = bad_dir / f"{case}.pt"
    with pytest.raises(ClsvcError) as e:
        load_checkpoint(path)
    msg = _one_line(e)
    assert msg.startswith(f"{path}: not a clsvc checkpoint"), msg
    with pytest.raises(ClsvcError):
        clsvc.load(path)


def test_unreadable_file_is_one_line(good, tmp_path, monkeypatch):
    """A file that cannot be opened (permissions; simulated, as root reads any file)."""
    path = tmp_path / "locked.pt"
    path.write_bytes(good.read_bytes())

    def refuse(*args: Any, **kw: Any) -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ClsvcError) as e:
        load_checkpoint(path)
    monkeypatch.undo()
    assert _one_line(e) == f"{path}: checkpoint cannot be read (Permission denied); check its permissions"


def test_bad_stored_config_and_mismatched_weights_are_one_line(good, tmp_path):
    """Past the structure checks: a stored config with a bad value, and weights of another shape."""
    bad_cfg = _write(good, tmp_path / "cfg.pt", lambda c: c["config"]["model"].__setitem__("speaker_dim", "big"))
    ckpt = load_checkpoint(bad_cfg)
    with pytest.raises(ClsvcError) as e:
        model_from_checkpoint(ckpt, str(bad_cfg))
    assert "speaker_dim" in _one_line(e) and str(bad_cfg) in str(e.value)

    def shrink(c: dict[str, Any]) -> None:
        name = _largest_weight(c)
        c["model"][name] = c["model"][name][:1].clone()

    bad_shape = _write(good, tmp_path / "shape.pt", shrink)
    with pytest.raises(ClsvcError) as e:
        clsvc.load(bad_shape)
    assert "do not match the config" in _one_line(e)


def test_info_on_every_bad_file_is_exit_2_and_one_line(bad_dir, capsys):
    capsys.readouterr()
    for path in sorted(bad_dir.iterdir()):
        assert main(["info", str(path)]) == 2, path
        captured = capsys.readouterr()
        assert captured.out == "" and captured.err.count("\n") == 1, captured.err
        assert captured.err.startswith(f"clsvc: error: {path}: "), captured.err


@pytest.mark.parametrize("command", ["info", "convert"])
@pytest.mark.parametrize("case", ["crc_flipped_weight_record", "missing_step"])
def test_cli_subprocess_exits_2_with_one_line(case, command, bad_dir, corpus, tmp_path, cli):
    path = bad_dir / f"{case}.pt"
    args: list[Any] = ["info", path]
    if command == "convert":
        args = ["convert", "--checkpoint", path, "--source", corpus / "spk_a" / "spk_a_001.wav",
                "--target", corpus / "spk_b" / "spk_b_001.wav", "--out", tmp_path / "o.wav"]
    code, out, err = cli(*args)
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1 and "damaged checkpoint" in err, err
    assert not (tmp_path / "o.wav").exists()
