"""``clsvc experiment FILE``: train several systems on the same data with the same budget,
evaluate each with ``clsvc evaluate`` and write the paper-style comparison.

An experiment file (YAML, see ``configs/experiments/``)::

    name: bench-cpu
    data:                       # either a corpus to preprocess ...
      corpus: [../shared/corpus/tts-parallel]
      unseen: [v21, v22, v23]
      holdout_regex: "_(05[1-9]|060)$"
    # data: {features: feats/vctk}   # ... or an existing feature folder
    budget: {max_minutes: 20, max_steps: 200000}   # the same for every system
    overrides: [train.threads=1]                    # config overrides for every system
    eval: {seen_pairs: 48, unseen_pairs: 36}       # clsvc.config.EvalConfig fields (+ any2many_pairs)
    systems:                    # display name -> config (+ overrides)
      ClsVC: {config: cpu-paper}
      ClsVCs: {config: cpu-paper, overrides: [loss.alpha=0]}
    ablation: {full: ClsVC, without_code: ClsVCs}   # Fig. 4a
    split_sizes: [ClsVC, ClsVC-dim1]                # Fig. 5 panel

Relative paths are resolved against the current directory; ``${VAR:-default}`` is expanded
from the environment. Everything lands under the work folder (``--work``, default
``runs/experiments/NAME``): ``features/``, ``runs/SLUG/``, ``eval/SLUG/``, ``comparison.md``,
``comparison.json`` and ``plots/``. Re-running the command skips finished trainings and
evaluations and resumes an interrupted training exactly.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ClsvcError
from .pretrained import DEFAULT_VOCODER, vocoder_file

DONE = "done.json"


@dataclass
class SystemSpec:
    """One system of an experiment: its name, config and overrides."""
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)

    @property
    def slug(self) -> str:
        """A file-system-safe name for the system's run folder."""
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "system"


@dataclass
class Experiment:
    """A parsed experiment file: data, budget, systems and evaluation settings."""
    name: str
    data: dict
    systems: list[SystemSpec]
    budget: dict
    eval: dict
    ablation: dict
    split_sizes: list[str]
    source: Path


def _expand(value):
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: os.environ.get(m.group(1), m.group(2) or ""), value)
    if isinstance(value, list):
        return [_expand(v) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v) for k, v in value.items()}
    return value


def load_experiment(path: str | Path) -> Experiment:
    """Parse and check an experiment file; every mistake names the file and the key."""
    from .config import BUILTIN_CONFIG_DIR, read_yaml, resolve_config_path

    path = Path(path)
    if not path.is_file():
        builtin = BUILTIN_CONFIG_DIR / "experiments" / f"{path.name.removesuffix('.yaml')}.yaml"
        if builtin.is_file():
            path = builtin
        else:
            raise ClsvcError(f"{path}: experiment file not found; see configs/experiments/ for examples")
    raw = read_yaml(path, "experiment") or {}
    raw = _expand(raw)
    known = {"name", "data", "systems", "budget", "eval", "ablation", "split_sizes", "overrides"}
    unknown = set(raw) - known
    if unknown:
        raise ClsvcError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(known))}")
    if not isinstance(raw.get("systems"), dict) or not raw["systems"]:
        raise ClsvcError(f"{path}: `systems` must map display names to {{config: ..., overrides: [...]}}")
    systems = []
    for name, spec in raw["systems"].items():
        spec = spec or {}
        if not isinstance(spec, dict) or "config" not in spec:
            raise ClsvcError(f"{path}: systems.{name} needs a `config` (a built-in name or a YAML file)")
        extra = set(spec) - {"config", "overrides"}
        if extra:
            raise ClsvcError(f"{path}: systems.{name}: unknown key(s) {', '.join(sorted(extra))}")
        resolve_config_path(spec["config"])  # fails early with a clear message
        common = [str(o) for o in raw.get("overrides") or []]  # applied to every system first
        own = [str(o) for o in spec.get("overrides") or []]
        systems.append(SystemSpec(str(name), str(spec["config"]), common + own))
    slugs = [s.slug for s in systems]
    if len(set(slugs)) != len(slugs):
        raise ClsvcError(f"{path}: system names must differ after lower-casing and removing punctuation")
    data = raw.get("data") or {}
    if bool(data.get("features")) == bool(data.get("corpus")):
        raise ClsvcError(f"{path}: `data` needs either `features` (a preprocessed folder) or `corpus`")
    if not isinstance(data.get("unseen") or [], list):
        raise ClsvcError(f"{path}: data.unseen must be a list of speaker names, e.g. [spk_a, spk_b]")
    names = {s.name for s in systems}
    ablation = raw.get("ablation") or {}
    for key in ("full", "without_code"):
        if ablation and ablation.get(key) not in names:
            raise ClsvcError(f"{path}: ablation.{key} must name one of the systems")
    split = list(raw.get("split_sizes") or [])
    bad = [s for s in split if s not in names]
    if bad:
        raise ClsvcError(f"{path}: split_sizes names unknown system(s) {', '.join(bad)}")
    budget = raw.get("budget") or {}
    bad_budget = set(budget) - {"max_minutes", "max_steps"}
    if bad_budget:
        raise ClsvcError(f"{path}: budget allows max_minutes and max_steps, not {', '.join(sorted(bad_budget))}")
    from .evaluation.suite import eval_config

    eval_config(raw.get("eval") or {}, f"{path}: eval")
    return Experiment(str(raw.get("name") or path.stem), data, systems, budget, raw.get("eval") or {},
                      ablation, split, path)


def _features(exp: Experiment, work: Path, progress: bool) -> Path:
    if exp.data.get("features"):
        feats = Path(exp.data["features"])
        if not (feats / "manifest.tsv").is_file():
            raise ClsvcError(f"{exp.source}: data.features {feats} has no manifest.tsv; run `clsvc preprocess` first")
        return feats
    from .config import MelConfig, load_config
    from .data import SplitSpec, preprocess

    corpora = exp.data["corpus"] if isinstance(exp.data["corpus"], list) else [exp.data["corpus"]]
    for c in corpora:
        if not Path(c).is_dir():
            raise ClsvcError(f"{exp.source}: corpus folder {c} not found; fix data.corpus or set the path variable")
    # Speaker names as text, even where YAML reads them as numbers (LibriSpeech's 1688 ...).
    unseen = [str(s) for s in exp.data.get("unseen") or []]
    spec = SplitSpec(unseen=unseen, num_unseen=int(exp.data.get("num_unseen", 0)),
                     holdout_per_speaker=int(exp.data.get("holdout_per_speaker", 0)),
                     holdout_regex=str(exp.data.get("holdout_regex") or ""), seed=int(exp.data.get("seed", 0)))
    feats = work / "features"
    # The F0 contours too when a system is conditioned on pitch (added to a folder made without).
    f0 = any(load_config(s.config, s.overrides).model.f0_condition for s in exp.systems)
    preprocess(corpora, feats, MelConfig(), split=spec, progress=progress, f0=f0)  # skips finished files
    return feats


def _budget_overrides(exp: Experiment) -> list[str]:
    return [f"train.{k}={v}" for k, v in exp.budget.items()]


def train_system(spec: SystemSpec, exp: Experiment, feats: Path, run: Path, progress: bool) -> Path:
    """Train (or resume, or skip) one system; returns its checkpoint."""
    from .config import load_config
    from .training import train

    last = run / "checkpoints" / "last.pt"
    if (run / DONE).is_file() and last.is_file():
        return last
    overrides = spec.overrides + _budget_overrides(exp)
    t0 = time.time()
    if last.is_file():
        ckpt = train(None, feats, run, resume=True, progress=progress, overrides=_budget_overrides(exp))
    else:
        ckpt = train(load_config(spec.config, overrides), feats, run, progress=progress)
    from .checkpoint import load_checkpoint

    meta = load_checkpoint(ckpt)
    (run / DONE).write_text(json.dumps({"system": spec.name, "config": spec.config, "overrides": spec.overrides,
                                        "step": int(meta["step"]), "train_minutes": float(meta.get("elapsed", 0)) / 60,
                                        "this_call_minutes": (time.time() - t0) / 60}, indent=2) + "\n")
    return ckpt


def run_experiment(path: str | Path, work: str | Path | None = None, only: list[str] | None = None,
                   progress: bool = True, force_eval: bool = False, vocoder: str = DEFAULT_VOCODER) -> dict:
    """Train, evaluate and compare every system of the experiment file (resumable)."""
    from .evaluation.scoring import check_scorers
    from .evaluation.suite import eval_config, evaluate

    exp = load_experiment(path)
    work = Path(work) if work else Path("runs") / "experiments" / exp.name
    work.mkdir(parents=True, exist_ok=True)
    systems = [s for s in exp.systems if not only or s.name in only or s.slug in only]
    if only and not systems:
        raise ClsvcError(f"--only {','.join(only)} matches no system of {exp.source}")
    cfg = eval_config(exp.eval, f"{exp.source}: eval")
    check_scorers(cfg)  # a missing scorer package is reported before hours of training
    vocoder_file(vocoder)  # so is an unknown --vocoder
    feats = _features(exp, work, progress)
    results = {}
    for i, spec in enumerate(systems, 1):
        run = work / "runs" / spec.slug
        print(f"[{i}/{len(systems)}] {spec.name}: train ({spec.config} {' '.join(spec.overrides)})", flush=True)
        ckpt = train_system(spec, exp, feats, run, progress)
        out = work / "eval" / spec.slug
        if force_eval or not (out / "metrics.json").is_file():
            print(f"[{i}/{len(systems)}] {spec.name}: evaluate", flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            evaluate(out, feats, checkpoint=ckpt, cfg=cfg, progress=progress, force=True, title=spec.name,
                     bounds_cache=work / "eval" / "bounds-cache.json", vocoder=vocoder)
        results[spec.name] = json.loads((out / "metrics.json").read_text())
        results[spec.name]["train"] = json.loads((run / DONE).read_text())
    from .evaluation import compare

    return compare.write(work, exp, results)
