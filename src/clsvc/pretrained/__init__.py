"""Named pretrained models shipped inside the package; no network is ever used.

Each shipped model ``NAME`` is two files in this folder (or in ``$CLSVC_PRETRAINED_DIR`` when
that is set, e.g. by tests):

* ``NAME.pt`` — an inference-only model file (:func:`clsvc.checkpoint.export_model` with
  float16 weights, ``clsvc export --fp16``), loaded and verified like any checkpoint (weights
  SHA-256, structure, finite weights) and upcast to float32 on load;
* ``NAME.json`` — its card (:class:`Card`): kind (``"vc"`` or ``"vocoder"``), description,
  training data with their licences, the training command and config, steps, benchmark figures
  and, for VC models, the speakers a user can pick with ``--target-speaker``; it also holds the
  SHA-256 of the weights so that a ``.pt`` that is not the one the card describes is refused.

A name is shipped when both files are there: :func:`ship` (``clsvc export --fp16 --card``)
writes the pair. Wherever clsvc takes a checkpoint or a vocoder file it takes a name too
(:func:`resolve`): a path to an existing file wins, then a shipped name; anything else is one
ClsvcError line listing the shipped names. ``clsvc models`` lists them, ``clsvc info NAME``
shows a card.

This module imports neither torch nor the models at import time (the CLI reads
:data:`DEFAULT_VOCODER` while building its parser).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..errors import ClsvcError

if TYPE_CHECKING:
    import torch

#: Environment variable that points name resolution at another folder of ``NAME.pt`` + ``NAME.json``.
ENV = "CLSVC_PRETRAINED_DIR"
KINDS = ("vc", "vocoder")
#: The vocoder used when none is given (``--vocoder``, ``clsvc.load(..., vocoder=)``): the model's
#: own, i.e. the shipped vocoder its card names (:func:`vocoder_for`), else Griffin-Lim.
DEFAULT_VOCODER = "auto"
#: The names of the Griffin-Lim vocoder (no file, no weights); kept in step with clsvc.vocoder.
GRIFFIN_LIM = ("griffin-lim", "griffinlim", "gl")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KIND_LABEL = {"vc": "VC model", "vocoder": "vocoder"}
_FLAG = {"vc": "--checkpoint", "vocoder": "--vocoder"}
_REINSTALL = "reinstall clsvc (pip install --force-reinstall clsvc)"


@dataclass
class DataSource:
    """One corpus a shipped model was trained on, with its licence (e.g. ``CC BY 4.0``)."""

    name: str
    licence: str
    url: str = ""


@dataclass
class Training:
    """How a shipped model was trained: the command line and the config (name or file)."""

    command: str
    config: str = ""


@dataclass
class Card:
    """What ``NAME.json`` holds (unknown keys are refused, as in configs).

    ``steps``: training steps behind the weights; ``bench``: figures from BENCHMARKS.md (metric
    name -> value, e.g. ``{"mcd_audio": 6.1, "cos_tgt": 0.82}``); ``speakers``: the training
    speakers a user can pick with ``--target-speaker`` (VC models; empty for vocoders);
    ``weights_sha256``: :func:`clsvc.checkpoint.weights_sha256` of ``NAME.pt``'s stored weights
    (empty: not checked); ``vocoder``: VC models only, the shipped vocoder their conversions use
    when none is given (``--vocoder auto``, the default; empty: Griffin-Lim), e.g. one fine-tuned
    on this model's own mels.
    """

    kind: Literal["vc", "vocoder"]
    description: str
    data: list[DataSource]
    training: Training
    steps: int
    bench: dict[str, float] = field(default_factory=dict)
    speakers: list[str] = field(default_factory=list)
    weights_sha256: str = ""
    vocoder: str = ""


@dataclass(frozen=True)
class Shipped:
    """A shipped model: its name, kind (``"vc"`` / ``"vocoder"``), description and files."""

    name: str
    kind: str
    description: str
    path: Path  # NAME.pt

    @property
    def card_path(self) -> Path:
        return self.path.with_suffix(".json")


def folder() -> Path:
    """The folder of shipped models: ``$CLSVC_PRETRAINED_DIR`` if set, else this package folder."""
    env = os.environ.get(ENV, "")
    return Path(env) if env else Path(__file__).resolve().parent


def _folder_checked() -> Path:
    where = folder()
    if not where.is_dir():
        raise ClsvcError(f"{ENV}={where}: not a folder; unset it or point it at a folder of NAME.pt + NAME.json")
    return where


def _read_card(name: str, path: Path) -> Card:
    """The card at ``path`` (of shipped model ``name``); a bad one is one ClsvcError line."""
    from ..files import read_utf8

    text = read_utf8(path, f"card of shipped model {name}", save_as="UTF-8 JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ClsvcError(f"{path}: card of shipped model {name} is not valid JSON (line {e.lineno}: {e.msg}); "
                         f"{_REINSTALL}") from None
    return _checked_card(data, f"{path} (card of shipped model {name})")


def _checked_card(data: Any, where: str) -> Card:
    """``data`` as a :class:`Card`; anything else is one ClsvcError line naming ``where``."""
    from ..config import from_dict

    c = from_dict(Card, data, where)
    if c.kind == "vocoder" and c.speakers:
        raise ClsvcError(f"{where}: a vocoder's card lists speakers; leave 'speakers' out for vocoders")
    if c.kind == "vocoder" and c.vocoder:
        raise ClsvcError(f"{where}: a vocoder's card names a vocoder; leave 'vocoder' out for vocoders")
    if c.vocoder and not _NAME.fullmatch(c.vocoder):
        raise ClsvcError(f"{where}: vocoder: {c.vocoder!r} is not a model name; give a shipped vocoder's name")
    if c.steps < 0:
        raise ClsvcError(f"{where}: steps: {c.steps}, expected an integer >= 0")
    return c


def available(kind: str | None = None) -> list[Shipped]:
    """The shipped models (of ``kind`` when given), sorted by name: every ``NAME.pt`` with a
    ``NAME.json`` next to it. A card that cannot be read is one ClsvcError line."""
    out = []
    for pt in sorted(_folder_checked().glob("*.pt")):
        name = pt.stem
        if not _NAME.fullmatch(name) or not pt.with_suffix(".json").is_file():
            continue
        c = _read_card(name, pt.with_suffix(".json"))
        if kind is None or c.kind == kind:
            out.append(Shipped(name, c.kind, c.description, pt))
    return out


def _listing(kind: str | None) -> str:
    """``"shipped VC models: a, b"`` (or the kinds of all), for messages."""
    models = available(kind)
    label = f"shipped {_KIND_LABEL[kind]}s" if kind else "shipped models"
    if not models:
        return f"no {label} in this version yet"
    names = ", ".join(m.name if kind else f"{m.name} ({m.kind})" for m in models)
    return f"{label}: {names} (`clsvc models` lists them)"


def _not_found(text: str, kind: str | None) -> ClsvcError:
    if kind == "vocoder":
        return ClsvcError(f"vocoder {text}: no such file and no shipped vocoder of that name; use griffin-lim, "
                          "the path of a vocoder checkpoint (clsvc train --config vocoder-cpu, then clsvc export) "
                          f"or a shipped vocoder; {_listing(kind)}")
    return ClsvcError(f"{text}: checkpoint not found and no shipped model of that name; pass a .pt file written "
                      f"by `clsvc train` or `clsvc export`, or a shipped name; {_listing(kind)}")


def shipped(name: str, kind: str | None = None) -> Shipped | None:
    """Shipped model ``name`` (checked against ``kind`` when given), or None when no such name
    ships. Half a pair (a ``.pt`` without its card or the reverse) or a name of another kind
    is one ClsvcError line."""
    if not _NAME.fullmatch(name):
        return None
    where = _folder_checked()
    pt, js = where / f"{name}.pt", where / f"{name}.json"
    if not pt.is_file() and not js.is_file():
        return None
    if not pt.is_file() or not js.is_file():
        missing = js if not js.is_file() else pt
        raise ClsvcError(f"shipped model {name}: {missing} is missing (the model and its card ship together); "
                         f"{_REINSTALL}")
    c = _read_card(name, js)
    if kind is not None and c.kind != kind:
        raise ClsvcError(f"{name}: a shipped {_KIND_LABEL[c.kind]}, not a {_KIND_LABEL[kind]}; pass it to "
                         f"{_FLAG[c.kind]} (for {_FLAG[kind]}: {_listing(kind)})")
    return Shipped(name, c.kind, c.description, pt)


def resolve(name_or_path: str | Path, kind: str | None = None) -> Path:
    """The file to load for ``name_or_path``: the path itself when it is an existing file, else
    shipped model ``name_or_path`` (of ``kind``, ``"vc"`` or ``"vocoder"``, when given); anything
    else is one ClsvcError line listing the shipped names."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    path = Path(name_or_path)
    if path.is_file():
        return path
    found = shipped(str(name_or_path), kind)
    if found is None:
        raise _not_found(str(name_or_path), kind)
    return found.path


def card(name: str) -> dict[str, Any]:
    """The card of shipped model ``name`` as stored in ``NAME.json`` (checked against :class:`Card`)."""
    found = shipped(name)
    if found is None:
        raise ClsvcError(f"{name}: no shipped model of that name; {_listing(None)}")
    from ..config import to_dict

    return dict(to_dict(_read_card(name, found.card_path)))


def is_shipped(path: str | Path) -> str | None:
    """The name of the shipped model whose file ``path`` is, or None."""
    path = Path(path)
    if path.suffix != ".pt" or not path.is_file():
        return None
    try:
        same = path.resolve().parent == _folder_checked().resolve()
    except ClsvcError:
        return None
    return path.stem if same and path.with_suffix(".json").is_file() else None


def load_checkpoint(name_or_path: str | Path, kind: str | None = None,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, Any], Path]:
    """:func:`clsvc.checkpoint.load_checkpoint` of :func:`resolve` (``name_or_path``, ``kind``):
    the verified checkpoint dict (float16 weights upcast to float32) and the file it came from.

    A shipped file is also checked against its card's ``weights_sha256``; a damaged shipped
    file is one ClsvcError line that says to reinstall clsvc (it was not trained by the user)."""
    from ..checkpoint import HASH_KEY, DamagedCheckpoint
    from ..checkpoint import load_checkpoint as _load

    path = resolve(name_or_path, kind)
    name = is_shipped(path)
    try:
        ckpt = _load(path, map_location=map_location)
    except DamagedCheckpoint as e:
        if name is None:
            raise
        raise ClsvcError(f"{path}: shipped model {name} is damaged ({e.what}); {_REINSTALL}") from None
    if name is not None:
        want = _read_card(name, path.with_suffix(".json")).weights_sha256
        if want and ckpt.get(HASH_KEY) != want:
            raise ClsvcError(f"{path}: not the weights its card {path.with_suffix('.json').name} describes "
                             f"(SHA-256 differs); {_REINSTALL}")
    return ckpt, path


def vocoder_for(vocoder: str | Path, checkpoint: str | Path | None) -> str | Path:
    """The vocoder to use: ``vocoder`` itself, except ``"auto"`` (:data:`DEFAULT_VOCODER`), which
    is ``checkpoint``'s own: the shipped vocoder named by the card of ``checkpoint`` when that is a
    shipped VC model (by name or by its file), else ``"griffin-lim"`` (a user's own checkpoint, no
    checkpoint, or a card that names none). A card naming a vocoder that does not ship is one
    ClsvcError line (a broken install)."""
    if str(vocoder) != DEFAULT_VOCODER:
        return vocoder
    name = None
    if checkpoint is not None:
        name = is_shipped(checkpoint) if Path(checkpoint).is_file() else str(checkpoint)
    found = shipped(name, "vc") if name is not None and _NAME.fullmatch(name) else None
    own = card(found.name)["vocoder"] if found is not None else ""
    if not own:
        return GRIFFIN_LIM[0]
    if shipped(own, "vocoder") is None:
        raise ClsvcError(f"shipped model {name}: its card names vocoder {own}, which is not shipped; {_REINSTALL}")
    return own


def vocoder_file(name: str | Path, checkpoint: str | Path | None = None) -> Path | None:
    """The file of vocoder ``name`` (a path, a shipped vocoder's name, or ``auto``: ``checkpoint``'s
    own, see :func:`vocoder_for`), or None for Griffin-Lim; an unknown name is one ClsvcError line.
    Loads nothing: for checks before hours of work."""
    name = vocoder_for(name, checkpoint)
    if str(name) in GRIFFIN_LIM:
        return None
    return resolve(name, "vocoder")


def ship(checkpoint: str | Path, out: str | Path, card_fields: Mapping[str, Any],
         force: bool = False, griffin_lim_iters: int | None = None,
         convert: Mapping[str, float] | None = None) -> tuple[Path, Path]:
    """Export ``checkpoint`` with float16 weights to ``out`` (``NAME.pt``) and write its card
    ``NAME.json`` next to it: ``card_fields`` (description, data, training, bench and, for a VC
    model, the speakers to offer; default: every training speaker of its speaker table) with
    ``kind``, ``steps`` and ``weights_sha256`` filled in from the file. Copying both files into
    :func:`folder` ships model NAME. ``griffin_lim_iters``, ``convert``: as in
    :func:`clsvc.checkpoint.export_model`.

    The ``.pt`` is written first and the card last (each atomically, neither over an existing
    file without ``force``), so a name is never listed before its weights are complete."""
    import torch

    from ..checkpoint import HASH_KEY, export_model, model_from_checkpoint
    from ..checkpoint import load_checkpoint as _load
    from ..config import to_dict
    from ..files import atomic_path, atomic_write_text

    out = Path(out)
    name = out.stem
    if out.suffix != ".pt" or not _NAME.fullmatch(name) or name in GRIFFIN_LIM:
        raise ClsvcError(f"{out}: a shipped model is NAME.pt with NAME of letters, digits, '.', '_' or '-' "
                         "(not griffin-lim); choose another file name")
    js = out.with_suffix(".json")
    for f in (out, js):
        if f.exists() and not force:
            raise ClsvcError(f"{f}: already exists; pass --force to overwrite it or choose another name")
    if not isinstance(card_fields, Mapping):
        raise ClsvcError(f"card for {name}: expected a mapping of description, data, training, bench, ...")
    src = _load(checkpoint)
    model, _ = model_from_checkpoint(src, str(checkpoint))
    kind = "vocoder" if hasattr(model, "vocode") else "vc"
    fields = dict(card_fields)
    for key in ("kind", "steps", "weights_sha256"):
        if key in fields:
            raise ClsvcError(f"card for {name}: leave out {key!r}, it is filled in from the checkpoint")
    # Only speakers with a row in the stored table can be picked by name.
    speakers = list(src.get("speakers", [])) if src.get("speaker_table") is not None else []
    if kind == "vc":
        picked = fields.setdefault("speakers", speakers)
        unknown = [s for s in picked if s not in speakers] if isinstance(picked, list) else []
        if unknown:
            raise ClsvcError(f"card for {name}: speakers {', '.join(map(str, unknown[:5]))} are not in the speaker "
                             f"table of {checkpoint}; list only speakers it was trained on")
    fields.update(kind=kind, steps=int(src.get("step", 0)))
    checked = _checked_card(fields, f"card for {name}")  # before anything is written
    with atomic_path(out, suffix=".tmp.pt", exclusive=not force) as tmp:
        export_model(checkpoint, tmp, dtype=torch.float16, griffin_lim_iters=griffin_lim_iters,
                     convert=convert)
        checked.weights_sha256 = str(_load(tmp)[HASH_KEY])
    atomic_write_text(js, json.dumps(to_dict(checked), indent=2, ensure_ascii=False) + "\n", exclusive=not force)
    return out, js


__all__ = ["DEFAULT_VOCODER", "ENV", "KINDS", "Card", "DataSource", "Shipped", "Training", "available", "card",
           "folder", "is_shipped", "load_checkpoint", "resolve", "ship", "shipped", "vocoder_file", "vocoder_for"]
