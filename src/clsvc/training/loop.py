"""Training: small functions around :class:`~clsvc.training.state.TrainState`.

``train()`` is what ``clsvc train`` runs. A run folder holds ``config.yaml`` (the resolved
config), ``checkpoints/last.pt`` (written every ``train.ckpt_every`` steps and at the end),
``log.jsonl`` (averaged losses per ``train.log_every`` steps and validation results) and
``tb/`` (TensorBoard).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml

from ..checkpoint import is_inference_only, load_checkpoint, save_checkpoint
from ..config import Config, MelConfig, config_from_dict, to_dict, with_overrides
from ..data.dataset import Batch, FeatureSet
from ..data.manifest import check_features_mel, read_manifest
from ..dvector import VectorCache
from ..errors import ClsvcError
from ..models import Reference, VCSystem, build_system
from . import distributed as dist_utils
from .state import TrainState, build_optimizers, payload, reset_lrs, restore

LAST = "last.pt"
# Per-utterance vectors that do not change with training (d-vectors), cached beside the features.
VOICE_CACHE = "voice_vectors.npz"
# Utterances per speaker a voice part sees before training (AutoVC trains on their mean d-vector).
FIT_UTTERANCES = 20
# Loss terms shown on the progress bar when a system logs them (all terms go to TensorBoard).
SHOWN = ("recon", "cls_acc", "adv_acc", "kl", "vq", "d_loss", "g_adv")


# ----------------------------------------------------------------------------------------------
# one step, validation, speaker table


def autocast_ctx(state: TrainState, device: torch.device):
    """bf16/fp16 autocast on CUDA when ``train.amp``; nothing on CPU."""
    if device.type == "cuda" and state.cfg.train.amp:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def train_step(state: TrainState, batch: Batch, device: torch.device) -> dict[str, float]:
    """One optimisation step on ``batch`` (every phase of the system, in order); returns the
    loss terms as floats (a GAN's phases log their own terms)."""
    state.net.train()
    batch = batch.to(device)
    terms_all: dict[str, float] = {}
    for phase, opt in state.optimizers.items():
        with autocast_ctx(state, device):
            loss, terms = state.net(batch.mel, batch.lengths, batch.speaker, phase)
        if not torch.isfinite(loss):
            raise ClsvcError(
                f"training diverged at step {state.step} (loss {loss.item()}); lower optim.lr "
                "or set optim.grad_clip=1.0, then resume from the last checkpoint"
            )
        opt.zero_grad(set_to_none=True)
        params = [p for g in opt.param_groups for p in g["params"]]
        if state.scaler is not None:
            state.scaler.scale(loss).backward()
            state.scaler.unscale_(opt)
        else:
            loss.backward()
        if state.cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, state.cfg.optim.grad_clip)
        if state.scaler is not None:
            state.scaler.step(opt)
        else:
            opt.step()
        terms_all.update({k: float(v.detach()) for k, v in terms.items()})
    if state.scaler is not None:
        state.scaler.update()  # once per iteration, after every optimizer stepped (torch AMP docs)
    state.step += 1
    return terms_all


@torch.no_grad()
def validate(state: TrainState, batches: list[Batch], device: torch.device) -> dict[str, float]:
    """Mean loss terms over fixed held-out batches (model in eval mode, no updates)."""
    state.model.eval()
    sums: dict[str, float] = {}
    for b in batches:
        b = b.to(device)
        for phase in state.optimizers:
            _, terms = state.model(b.mel, b.lengths, b.speaker, phase)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v)
    state.model.train()
    return {k: v / max(1, len(batches)) for k, v in sums.items()}


def speaker_refs(data: FeatureSet, per_speaker: int, mel_cfg: MelConfig,
                 max_frames: int | None = None) -> list[list[Reference]]:
    """Up to ``per_speaker`` utterances of each training speaker as voice references (mels
    cropped to ``max_frames``; audio loaded from the manifest's source file on demand)."""
    from ..audio import load_wav

    def loader(path: str) -> Callable[[], np.ndarray]:
        def load() -> np.ndarray:
            if not Path(path).is_file():
                raise ClsvcError(f"{path}: audio named in the manifest not found; voice vectors are made "
                                 "from the original audio: restore the corpus")
            return load_wav(path, mel_cfg)
        return load

    return [[Reference(data.mels[i][:max_frames], load_wav=loader(data.entries[i].source),
                       key=f"{data.entries[i].speaker}/{data.entries[i].utt_id}") for i in idx[:per_speaker]]
            for idx in data.by_speaker]


@torch.no_grad()
def speaker_table(model: VCSystem, data: FeatureSet, per_speaker: int, mel_cfg: MelConfig,
                  max_frames: int = 512, cache: VectorCache | None = None) -> torch.Tensor:
    """(K, s) unit-norm vectors of the training speakers, made by the system's voice part from
    up to ``per_speaker`` utterances of each speaker (in eval mode)."""
    was_training = model.training
    model.eval()
    table = model.voice.table(speaker_refs(data, per_speaker, mel_cfg, max_frames), cache)
    model.train(was_training)
    return table.float().cpu()


# ----------------------------------------------------------------------------------------------
# the run


class RunLogger:
    """Rank-0 logging to TensorBoard and ``log.jsonl``; every other rank gets a no-op."""

    def __init__(self, run: Path, enabled: bool):
        self.enabled = enabled
        self.tb: Any = None  # a SummaryWriter on rank 0
        self.jsonl: IO[str] | None = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"))
            self.jsonl = (run / "log.jsonl").open("a")

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """One row of ``kind`` (train/val) at ``step``: TensorBoard scalars and a JSON line."""
        if self.tb is None or self.jsonl is None:
            return
        for k, v in values.items():
            self.tb.add_scalar(f"{kind}/{k}", v, step)
        self.jsonl.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self.jsonl.flush()

    def close(self) -> None:
        """Flush and close TensorBoard and the JSON log."""
        if self.tb is not None and self.jsonl is not None:
            self.tb.close()
            self.jsonl.close()


def _check_resume_config(cfg: Config, ckpt_cfg: Config, where: Path) -> None:
    own = tuple(s for s in (cfg.model.system,) if hasattr(cfg, s))  # a system's own section, if any
    for section in ("mel", "model", "loss") + own:
        a, b = to_dict(getattr(cfg, section)), to_dict(getattr(ckpt_cfg, section))
        if section == "model":
            a.pop("n_speakers", None), b.pop("n_speakers", None)
        diff = sorted(k for k in a if a[k] != b.get(k))
        if diff:
            raise ClsvcError(
                f"{where}: checkpoint was trained with a different {section} config (differs in "
                f"{', '.join(f'{section}.{k}' for k in diff)}); resume with the run's own config "
                "(omit --config) or start a new run with another --out"
            )


def train(cfg: Config | None, data: str | Path, run: str | Path, resume: bool = False,
          device: str = "auto", progress: bool = True,
          on_log: Callable[[str, int, dict[str, float]], None] | None = None,
          overrides: list[str] | None = None) -> Path:
    """Train ClsVC on the preprocessed features in ``data``; returns the last checkpoint path.

    With ``resume``, training continues from ``run/checkpoints/last.pt`` exactly where it
    stopped (same batches, same RNG); ``cfg`` may then be None (use the run's config) or differ
    only in the ``train``/``optim`` sections (e.g. a larger ``train.max_steps``); ``overrides``
    are applied to the run's config when ``cfg`` is None.
    """
    run = Path(run)
    info = dist_utils.setup(device)
    try:
        return _train(cfg, Path(data), run, resume, info, progress, on_log, overrides or [])
    finally:
        dist_utils.teardown()


def _prepare_run_dir(run: Path, resume: bool) -> Path:
    last = run / "checkpoints" / LAST
    if not resume and last.exists():
        raise ClsvcError(
            f"{run}: already holds a trained run ({last}); pass --resume to continue it or "
            "choose another --out"
        )
    if resume and not last.exists():
        raise ClsvcError(f"{run}: nothing to resume (no checkpoints/{LAST}); drop --resume to start")
    try:
        (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{run}: cannot create the run folder ({e.strerror}); choose a writable --out") from None
    probe = run / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError:
        raise ClsvcError(f"{run}: folder is not writable; choose another --out") from None
    return last


def _train(cfg: Config | None, data: Path, run: Path, resume: bool, info: dist_utils.DistInfo,
           progress: bool, on_log, overrides: list[str]) -> Path:
    from tqdm import tqdm

    last = run / "checkpoints" / LAST
    if info.is_main:
        _prepare_run_dir(run, resume)
    dist_utils.barrier(info)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(last, map_location="cpu")
        if is_inference_only(ckpt):
            raise ClsvcError(f"{last}: an exported model (no optimizer state) cannot be resumed; "
                             "resume from the training run's own checkpoint")
        ckpt_cfg = config_from_dict(ckpt["config"], f"{last} (config)")
        if cfg is None:
            cfg = with_overrides(ckpt_cfg, overrides, "run config + overrides") if overrides else ckpt_cfg
        _check_resume_config(cfg, ckpt_cfg, last)
    if cfg is None:
        raise ClsvcError("no config given; pass --config (e.g. --config cpu)")

    check_features_mel(data, cfg.mel)
    entries = read_manifest(data)
    train_set = FeatureSet(data, ("train",), entries=entries)
    if len(train_set.speakers) < 2:
        raise ClsvcError(
            f"{data}: training needs at least 2 speakers with 'train' utterances, found "
            f"{len(train_set.speakers)}; preprocess a multi-speaker corpus"
        )
    if ckpt is not None and list(ckpt["speakers"]) != train_set.speakers:
        raise ClsvcError(
            f"{data}: the training speakers differ from those of {last}; resume on the same "
            "preprocessed data"
        )
    val_set = FeatureSet(data, ("val",), speakers=train_set.speakers, entries=entries)
    cfg.model.n_speakers = len(train_set.speakers)

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    ws = info.world_size
    if cfg.train.batch_size % ws:
        raise ClsvcError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by the {ws} processes; "
            "pick a multiple of the process count"
        )
    local_bs = cfg.train.batch_size // ws

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    model = build_system(cfg).to(info.device)
    voice_cache = VectorCache(data / VOICE_CACHE)
    # A voice part whose vectors the system trains on (AutoVC's mean d-vectors) makes them now.
    model.voice.fit(speaker_refs(train_set, FIT_UTTERANCES, cfg.mel), voice_cache)
    if info.is_main:
        voice_cache.save()
    net: torch.nn.Module = model
    if info.enabled:
        # A GAN's discriminator phase leaves the generator unused (and vice versa).
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
            find_unused_parameters=len(model.phases) > 1)
    optimizers = build_optimizers(model, cfg)
    scaler = None
    if info.device.type == "cuda" and cfg.train.amp and not torch.cuda.is_bf16_supported():
        scaler = torch.amp.GradScaler("cuda")
    gen = torch.Generator().manual_seed(cfg.train.seed + 1000 * info.rank)
    state = TrainState(cfg, model, net, optimizers, scaler, gen, train_set.speakers)
    if ckpt is not None:
        restore(state, ckpt, info.rank)
        state.cfg = cfg  # keep the (possibly extended) train/optim settings of this command
        reset_lrs(state)

    if info.is_main:
        (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    logger = RunLogger(run, info.is_main)
    val_batches = (val_set.fixed_batches(cfg.train.val_batches, cfg.train.batch_size,
                                         cfg.train.crop_frames, cfg.train.pad_value)
                   if len(val_set) else [])

    saved = {"step": -1}

    def save(path: Path) -> None:
        if path == last and saved["step"] == state.step:
            return
        saved["step"] = state.step if path == last else saved["step"]
        gens = dist_utils.gather_objects(state.data_gen.get_state(), info)
        if info.is_main:
            state.speaker_table = speaker_table(model, train_set, cfg.train.table_utterances, cfg.mel,
                                                cache=voice_cache)
            save_checkpoint(path, payload(state, gens if info.enabled else None))

    t = cfg.train
    # A wall-clock budget ends training long before max_steps: the bar then counts seconds of
    # the budget (the step is in the postfix) so its ETA is true.
    by_time = t.max_minutes > 0
    bar = tqdm(total=int(t.max_minutes * 60) if by_time else t.max_steps,
               initial=int(state.elapsed) if by_time else state.step, desc="train",
               unit="s" if by_time else "step", disable=not (progress and info.is_main),
               dynamic_ncols=True)
    window: dict[str, float] = {}
    n_window = 0
    start = time.monotonic() - state.elapsed
    interrupted = False
    try:
        while state.step < t.max_steps:
            batch = train_set.sample(local_bs, t.crop_frames, state.data_gen, t.sampling, t.pad_value)
            terms = train_step(state, batch, info.device)
            state.elapsed = time.monotonic() - start
            for k, v in terms.items():
                window[k] = window.get(k, 0.0) + v
            n_window += 1
            bar.update(min(int(state.elapsed), bar.total) - bar.n if by_time else 1)
            if state.step % t.log_every == 0 or state.step == t.max_steps:
                avg = {k: v / n_window for k, v in window.items()}
                avg["minutes"] = state.elapsed / 60
                logger.log("train", state.step, avg)
                if on_log is not None and info.is_main:
                    on_log("train", state.step, avg)
                shown = {k: f"{avg[k]:.4f}" if k == "recon" else f"{avg[k]:.2f}" for k in SHOWN if k in avg}
                bar.set_postfix(step=state.step, **dict(list(shown.items())[:4]))
                window, n_window = {}, 0
            if val_batches and info.is_main and state.step % t.val_every == 0:
                vals = validate(state, val_batches, info.device)
                logger.log("val", state.step, vals)
                if on_log is not None:
                    on_log("val", state.step, vals)
            if state.step % t.ckpt_every == 0:
                save(last)
                if t.keep_every and state.step % t.keep_every == 0 and info.is_main:
                    save_checkpoint(run / "checkpoints" / f"step_{state.step:07d}.pt", payload(state))
            over_time = t.max_minutes > 0 and state.elapsed >= t.max_minutes * 60
            if dist_utils.any_true(over_time, info):
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    save(last)  # also on Ctrl-C: nothing learned is lost, `--resume` continues from here
    if val_batches and info.is_main:
        vals = validate(state, val_batches, info.device)
        logger.log("val", state.step, vals)
        if on_log is not None:
            on_log("val", state.step, vals)
    logger.close()
    if interrupted:
        raise KeyboardInterrupt
    return last


def read_log(run: str | Path, kind: str = "train") -> list[dict[str, Any]]:
    """Rows of ``log.jsonl`` of the given kind (``train`` or ``val``)."""
    path = Path(run) / "log.jsonl"
    if not path.exists():
        return []
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("kind") == kind]


__all__ = ["train", "train_step", "validate", "speaker_table", "read_log", "LAST"]
