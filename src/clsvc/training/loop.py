"""Training: small functions around :class:`~clsvc.training.state.TrainState`.

``train()`` is what ``clsvc train`` runs. A run folder holds ``config.yaml`` (the resolved
config), ``checkpoints/last.pt`` (written every ``train.ckpt_every`` steps and at the end),
``log.jsonl`` (averaged losses per ``train.log_every`` steps and validation results), ``tb/``
(TensorBoard) and ``.lock`` (held by the trainer that works in the folder).

Stopping and resuming (``--resume`` continues exactly as if the run had not stopped):

* Everything is checked (config, data, speakers, batch size, the checkpoint to resume) before
  the run folder is created, so a refused command leaves no folder behind.
* One trainer per run folder: a second one is refused while the first lives (``flock`` on
  ``RUN/.lock``; the OS releases it when the process dies, so a killed run never blocks its resume).
* SIGINT (Ctrl-C) and SIGTERM (``kill``, schedulers) stop training after the step in progress:
  that step is saved to ``last.pt`` (without the end-of-run validation: the resumed run validates
  where an uninterrupted one would) and :class:`TrainingStopped` (a ``KeyboardInterrupt``) is
  raised; its ``signum`` gives the exit status ``128 + signum``. The same signal again (a second
  or more later; see :class:`StopSignals`) stops at once without saving: ``last.pt`` keeps the
  last step saved before (every write is atomic, so no file is left half-written).
* After a stop of any kind (SIGKILL and power loss included) ``--resume`` removes the temporary
  files a killed write left behind, drops the log rows written after the checkpoint (and hides
  them in TensorBoard) and continues from it.
* A checkpoint that cannot be written (disk full) stops training with one line; ``last.pt``
  keeps the previous step.

Starting from another run's weights (``init``, ``clsvc train --init CKPT``): a new run whose
model is loaded from CKPT (a training checkpoint or an exported file of the same system, mel
definition and model structure) before its first step; optimizers, step counter, log and RNG
start fresh. The run records CKPT's path and ``weights_sha256`` in every checkpoint (``init``)
and atop ``config.yaml``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch
import yaml

from ..checkpoint import HASH_KEY, is_inference_only, load_checkpoint, load_weights, save_checkpoint, weights_sha256
from ..config import Config, MelConfig, config_from_dict, to_dict, with_overrides
from ..data.dataset import Batch, FeatureSet
from ..data.manifest import check_features_mel, read_manifest
from ..dvector import VectorCache
from ..errors import ClsvcError
from ..files import atomic_write_text
from ..models import Reference, System, build_system, system_class
from . import distributed as dist_utils
from .run_dir import (
    CONFIG,
    LAST,
    LOG,
    check_run_dir,
    is_write_failure,
    lock_run,
    make_run_dir,
    read_rows,
    remove_orphans,
    trim_log,
    write_failure,
)
from .signals import StopSignals, TrainingStopped, signal_name
from .state import (
    TrainState,
    build_optimizers,
    freeze,
    payload,
    reset_lrs,
    restore,
    rng_state,
    schedule_lrs,
    set_rng_state,
)

# Per-utterance vectors that do not change with training (d-vectors), cached beside the features.
VOICE_CACHE = "voice_vectors.npz"
# Utterances per speaker a voice part sees before training (AutoVC trains on their mean d-vector).
FIT_UTTERANCES = 20
# Loss terms shown on the progress bar when a system logs them (all terms go to TensorBoard).
SHOWN = ("recon", "cls_acc", "adv_acc", "kl", "vq", "d_loss", "g_adv")


# ----------------------------------------------------------------------------------------------
# one step, validation, speaker table


def amp_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a training step on ``device`` runs under: bf16 on CUDA when ``train.amp``
    (fp16 on GPUs without bf16, which then also need a GradScaler); None on CPU or with it off."""
    if device.type != "cuda" or not cfg.train.amp:
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_ctx(state: TrainState, device: torch.device):
    """Autocast at :func:`amp_dtype`, or nothing."""
    dtype = amp_dtype(state.cfg, device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def train_step(state: TrainState, batch: Batch, device: torch.device) -> dict[str, float]:
    """One optimisation step on ``batch`` (every phase of the system, in order; a phase the
    system reports idle this step is skipped); returns the loss terms as floats (a GAN's phases
    log their own terms)."""
    state.net.train()
    batch = batch.to(device)
    terms_all: dict[str, float] = {}
    for phase, opt in state.optimizers.items():
        # Asked before the forward: under DDP a forward without its backward breaks the next step.
        if not state.model.phase_active(phase):
            continue
        with autocast_ctx(state, device):
            loss, terms = state.net(batch.mel, batch.lengths, batch.speaker, phase, **batch.extra())
        if loss is None:  # idle after all (the system's own schedule)
            continue
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
            _, terms = state.model(b.mel, b.lengths, b.speaker, phase, **b.extra())
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
def speaker_table(model: System, data: FeatureSet, per_speaker: int, mel_cfg: MelConfig,
                  max_frames: int = 512, cache: VectorCache | None = None) -> torch.Tensor | None:
    """(K, s) unit-norm vectors of the training speakers, made by the system (its voice part)
    from up to ``per_speaker`` utterances of each speaker, in eval mode; None for a system
    without speakers (the vocoder)."""
    was_training = model.training
    model.eval()
    table = model.speaker_table(speaker_refs(data, per_speaker, mel_cfg, max_frames), cache)
    model.train(was_training)
    return None if table is None else table.float().cpu()


# ----------------------------------------------------------------------------------------------
# stopping on signals


# ----------------------------------------------------------------------------------------------
# the run folder


class RunLogger:
    """Rank-0 logging to TensorBoard and ``log.jsonl``; every other rank gets a no-op.
    ``purge_step``: a resumed run's first step (TensorBoard hides the killed run's later events)."""

    def __init__(self, run: Path, enabled: bool, purge_step: int | None = None):
        self.enabled = enabled
        self.run = run
        self.tb: Any = None  # a SummaryWriter on rank 0
        self.jsonl: IO[str] | None = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(run / "tb"), purge_step=purge_step)
            self.jsonl = (run / LOG).open("a")

    def log(self, kind: str, step: int, values: dict[str, float]) -> None:
        """One row of ``kind`` (train/val) at ``step``: TensorBoard scalars and a JSON line."""
        if self.tb is None or self.jsonl is None:
            return
        for k, v in values.items():
            self.tb.add_scalar(f"{kind}/{k}", v, step)
        try:
            self.jsonl.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
            self.jsonl.flush()
        except OSError as e:
            raise ClsvcError(f"{self.run / LOG}: could not write ({e.strerror or e}); free space and "
                             "continue with --resume") from None

    def close(self) -> None:
        """Flush and close TensorBoard and the JSON log."""
        if self.tb is not None and self.jsonl is not None:
            self.tb.close()
            with contextlib.suppress(OSError):
                self.jsonl.close()
            self.tb = self.jsonl = None


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


# ----------------------------------------------------------------------------------------------
# the run


def train(cfg: Config | None, data: str | Path, run: str | Path, resume: bool = False,
          device: str = "auto", progress: bool = True,
          on_log: Callable[[str, int, dict[str, float]], None] | None = None,
          overrides: list[str] | None = None, init: str | Path | None = None, init_partial: bool = False) -> Path:
    """Train ClsVC on the preprocessed features in ``data``; returns the last checkpoint path.

    With ``resume``, training continues from ``run/checkpoints/last.pt`` exactly where it
    stopped (same batches, same RNG, same log); ``cfg`` may then be None (use the run's config)
    or differ only in the ``train``/``optim`` sections (e.g. a larger ``train.max_steps``);
    ``overrides`` are applied to the run's config when ``cfg`` is None.

    With ``init`` (not with ``resume``) a new run starts from the weights of that checkpoint or
    exported file: same ``model.system`` and mel definition, and the same structure (names and
    shapes of every weight; an exported file's missing training-only parts, e.g. classifiers or
    discriminators, start fresh), else a one-line ClsvcError naming the file. Optimizers start
    fresh and the run counts from step 0. Whatever a system keeps in its weights comes along:
    the vocoder's ``steps`` buffer (generator steps taken), so fine-tuning a vocoder trained past
    ``vocoder.warmup_steps`` continues adversarially from its first step (set
    ``vocoder.warmup_steps`` above that count to have a reconstruction-only phase again, or
    ``vocoder.adversarial`` false to train without discriminators throughout). The
    system then prepares for this run's data as every run does (AutoVC re-fits its speakers'
    mean d-vectors). With ``init_partial`` the model may differ from the checkpoint's: only the
    weights of the same name and shape are copied, the others start fresh (their names are
    recorded in the run's ``init`` record and atop ``config.yaml``); e.g. a wider decoder on a
    trained encoder, with ``train.freeze`` keeping the encoder as it was.

    SIGINT and SIGTERM stop training after the step in progress, which is saved; then
    :class:`TrainingStopped` (a ``KeyboardInterrupt``) is raised (see the module docstring).
    """
    run = Path(run)
    if init is not None and resume:
        raise ClsvcError("--init starts a new run from another checkpoint's weights, --resume continues this "
                         "run; pass only one of them")
    if init_partial and init is None:
        raise ClsvcError("--init-partial needs --init CKPT (the checkpoint whose fitting weights to start from)")
    info = dist_utils.setup(device)
    finished = False  # every rank got to the end (saved, or stopped by a signal after saving)
    try:
        with StopSignals(run / "checkpoints" / LAST) as stop:
            out = _train(cfg, Path(data), run, resume, info, progress, on_log, overrides or [], stop,
                         Path(init) if init is not None else None, init_partial)
        finished = True
        return out
    except TrainingStopped:
        finished = True
        raise
    finally:
        # Ranks leave together: one that tears the process group down while rank 0 still
        # validates could abort at exit (gloo). After an error the ranks may be out of step,
        # so then nobody waits.
        dist_utils.teardown(info, wait=finished)


def _train(cfg: Config | None, data: Path, run: Path, resume: bool, info: dist_utils.DistInfo,
           progress: bool, on_log, overrides: list[str], stop: StopSignals, init: Path | None,
           init_partial: bool = False) -> Path:
    with contextlib.ExitStack() as cleanup:
        lock: IO[str] | None = None
        if info.is_main and run.is_dir():  # refuse a second trainer before any work
            lock = cleanup.enter_context(lock_run(run))
        if info.is_main:
            check_run_dir(run, resume)
        setup = _setup(cfg, data, run, resume, info, overrides, init, init_partial)
        if info.is_main:  # everything checked: now the run folder is made
            make_run_dir(run)
            if lock is None:
                lock = cleanup.enter_context(lock_run(run))
            remove_orphans(run)
            setup.last_val = trim_log(run, setup.state.step) if resume else -1
            try:
                atomic_write_text(run / CONFIG, _init_note(setup.state.init)
                                  + yaml.safe_dump(setup.state.cfg.to_dict(), sort_keys=False))
            except OSError as e:
                raise ClsvcError(f"{run / CONFIG}: could not write ({e.strerror or e}); free space or "
                                 "choose another --out") from None
        dist_utils.barrier(info)
        logger = RunLogger(run, info.is_main, purge_step=setup.state.step + 1 if resume else None)
        cleanup.callback(logger.close)
        return _loop(setup, run, info, progress, on_log, stop, logger)
    raise AssertionError("unreachable")  # for mypy: ExitStack may swallow exceptions


class _Setup:
    """What :func:`_setup` made: the state to train, the data and the voice-vector cache."""

    def __init__(self, state: TrainState, train_set: FeatureSet, val_set: FeatureSet, voice_cache: VectorCache,
                 local_bs: int):
        self.state, self.train_set, self.val_set = state, train_set, val_set
        self.voice_cache, self.local_bs = voice_cache, local_bs
        self.last_val = -1  # step of the last validation row in the log


def _init_note(init: dict[str, Any] | None) -> str:
    """The comment atop ``config.yaml`` of a run started with ``--init`` ("" for others)."""
    if init is None:
        return ""
    note = (f"# initialised from {init.get('path')} (weights_sha256 {init.get('weights_sha256')}, "
            f"its step {init.get('step')}): clsvc train --init\n")
    if init.get("fresh"):
        note += f"# --init-partial: started fresh (not in it with this shape): {', '.join(init['fresh'])}\n"
    return note


def _read_init(path: Path, cfg: Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The checkpoint ``--init`` names (a file, or a shipped model's name such as ``arctic``) and
    the run's record of it, once it is of ``cfg``'s system and mel definition (its structure is
    checked when it is loaded into the model)."""
    from ..pretrained import load_checkpoint as load_named

    ckpt, path = load_named(path, map_location="cpu")
    have = config_from_dict(ckpt["config"], f"{path} (config)")
    if have.model.system != cfg.model.system:
        raise ClsvcError(
            f"{path}: a {have.model.system} checkpoint, and this run trains {cfg.model.system}; pass a "
            f"{cfg.model.system} checkpoint to --init, or a config of model.system: {have.model.system}"
        )
    diff = cfg.mel.differences(have.mel)
    if diff:
        raise ClsvcError(f"{path}: its weights were trained on another mel definition (differs in "
                         f"{', '.join(diff)}); pass a checkpoint trained on the mel definition of this config")
    record = {"path": str(path.resolve()), "weights_sha256": ckpt.get(HASH_KEY) or weights_sha256(ckpt["model"]),
              "step": int(ckpt["step"]), "kind": str(ckpt.get("kind", "train")), "system": have.model.system}
    return ckpt, record


def _setup(cfg: Config | None, data: Path, run: Path, resume: bool, info: dist_utils.DistInfo,
           overrides: list[str], init: Path | None = None, init_partial: bool = False) -> _Setup:
    """Check the config, data and checkpoint(s) and build the training state (nothing is
    written to the run folder)."""
    last = run / "checkpoints" / LAST
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
    start: tuple[dict[str, Any], dict[str, Any]] | None = _read_init(init, cfg) if init is not None else None
    ws = info.world_size
    if cfg.train.batch_size % ws:
        raise ClsvcError(
            f"train.batch_size {cfg.train.batch_size} is not divisible by the {ws} processes; "
            "pick a multiple of the process count"
        )

    check_features_mel(data, cfg.mel)
    entries = read_manifest(data)
    # A system that learns audio (the vocoder) trains on the waveforms kept beside the features,
    # one conditioned on pitch (model.f0_condition) on the F0 contours, one whose content code is
    # supervised with phones (loss.phone) on the phone labels.
    inputs = system_class(cfg.model.system).batch_inputs(cfg)
    with_wav, with_f0, with_phones = "wav" in inputs, "f0" in inputs, "phones" in inputs
    train_set = FeatureSet(data, ("train",), entries=entries, with_wav=with_wav, hop=cfg.mel.hop_length,
                           with_f0=with_f0, with_phones=with_phones)
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
    if (cfg.loss.parallel > 0 or cfg.loss.parallel_code > 0) and not train_set.pairs:
        raise ClsvcError(
            f"{data}: loss.parallel and loss.parallel_code need parallel utterances (two training speakers with "
            "the same transcript, as ARCTIC's prompts.txt gives) and these features have none; set them to 0"
        )
    val_set = FeatureSet(data, ("val",), speakers=train_set.speakers, entries=entries, with_wav=with_wav,
                         hop=cfg.mel.hop_length, with_f0=with_f0, with_phones=with_phones)
    cfg.model.n_speakers = len(train_set.speakers)

    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)

    torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
    model = build_system(cfg)
    if start is not None:
        fresh = load_weights(model, start[0], str(init), partial=init_partial)
        if init_partial:  # the modules that start fresh, e.g. decoder.lstm
            start[1]["fresh"] = sorted({k.rsplit(".", 1)[0] for k in fresh})
    freeze(model, cfg.train.freeze)
    model = model.to(info.device)
    voice_cache = VectorCache(data / VOICE_CACHE)
    # A voice part whose vectors the system trains on (AutoVC's mean d-vectors) makes them now.
    model.prepare(speaker_refs(train_set, FIT_UTTERANCES, cfg.mel), voice_cache)
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
    if amp_dtype(cfg, info.device) == torch.float16:  # bf16 keeps fp32's range: no scaling needed
        scaler = torch.amp.GradScaler("cuda")
    gen = torch.Generator().manual_seed(cfg.train.seed + 1000 * info.rank)
    state = TrainState(cfg, model, net, optimizers, scaler, gen, train_set.speakers,
                       init=start[1] if start is not None else None)
    if ckpt is not None:
        restore(state, ckpt, info.rank)
        state.cfg = cfg  # keep the (possibly extended) train/optim settings of this command
        reset_lrs(state)
    return _Setup(state, train_set, val_set, voice_cache, cfg.train.batch_size // ws)


def _loop(setup: _Setup, run: Path, info: dist_utils.DistInfo, progress: bool, on_log,
          stop: StopSignals, logger: RunLogger) -> Path:
    from tqdm import tqdm

    state, train_set, cfg = setup.state, setup.train_set, setup.state.cfg
    model = state.model
    last = run / "checkpoints" / LAST
    t = cfg.train
    pairs = t.parallel_pairs if cfg.loss.parallel > 0 or cfg.loss.parallel_code > 0 else 0  # beside each batch
    val_batches = (setup.val_set.fixed_batches(t.val_batches, t.batch_size, t.crop_frames, t.pad_value,
                                               parallel_pairs=pairs)
                   if len(setup.val_set) else [])
    # Step of the last save of last.pt by this command, and the step last.pt holds on disk.
    saved = {"step": -1, "disk": state.step if last.exists() else -1}

    def save(path: Path) -> None:
        """Write the state to ``path`` (every rank takes part). Saving changes nothing of the run
        (the RNG is put back after the speaker table), so a run saved at any step continues as one
        that was not. A write that fails (disk full) is one ClsvcError line on every rank."""
        if path == last and saved["step"] == state.step:
            return
        gens = dist_utils.gather_objects(state.data_gen.get_state(), info)
        error: ClsvcError | None = None
        if info.is_main:
            rng = rng_state(state.data_gen)
            state.speaker_table = speaker_table(model, train_set, t.table_utterances, cfg.mel,
                                                cache=setup.voice_cache)
            set_rng_state(rng, state.data_gen)
            try:
                save_checkpoint(path, payload(state, gens if info.enabled else None))
            except Exception as e:
                if not is_write_failure(e):
                    raise
                error = write_failure(run, path.name, state.step, saved["disk"], e)
        if dist_utils.any_true(error is not None, info):
            raise error or ClsvcError(f"{run}: rank 0 could not save a checkpoint (its message says why); "
                                      "free space and continue with --resume")
        if path == last:
            saved["step"] = saved["disk"] = state.step

    def log_val() -> None:
        vals = validate(state, val_batches, info.device)
        logger.log("val", state.step, vals)
        setup.last_val = state.step
        if on_log is not None:
            on_log("val", state.step, vals)

    # A wall-clock budget ends training long before max_steps: the bar then counts seconds of
    # the budget (the step is in the postfix) so its ETA is true.
    by_time = t.max_minutes > 0
    bar = tqdm(total=int(t.max_minutes * 60) if by_time else t.max_steps,
               initial=int(state.elapsed) if by_time else state.step, desc="train",
               unit="s" if by_time else "step", disable=not (progress and info.is_main),
               dynamic_ncols=True)
    start = time.monotonic() - state.elapsed
    try:
        # Stop requests and the time budget are looked at between steps, by every rank together.
        while state.step < t.max_steps:
            over_time = by_time and state.elapsed >= t.max_minutes * 60
            if dist_utils.any_true(over_time or stop.signum != 0, info):
                break
            batch = train_set.sample(setup.local_bs, t.crop_frames, state.data_gen, t.sampling, t.pad_value)
            if pairs:
                batch.parallel = train_set.sample_parallel(pairs, t.crop_frames, state.data_gen, t.pad_value)
            schedule_lrs(state)
            terms = train_step(state, batch, info.device)
            state.elapsed = time.monotonic() - start
            state.add_to_log(terms)
            bar.update(min(int(state.elapsed), bar.total) - bar.n if by_time else 1)
            if state.step % t.log_every == 0 or state.step == t.max_steps:
                avg = state.take_log_row()
                avg["minutes"] = state.elapsed / 60
                logger.log("train", state.step, avg)
                if on_log is not None and info.is_main:
                    on_log("train", state.step, avg)
                shown = {k: f"{avg[k]:.4f}" if k == "recon" else f"{avg[k]:.2f}" for k in SHOWN if k in avg}
                bar.set_postfix(step=state.step, **dict(list(shown.items())[:4]))
            if val_batches and info.is_main and state.step % t.val_every == 0:
                log_val()
            if state.step % t.ckpt_every == 0:
                save(last)
            if t.keep_every and state.step % t.keep_every == 0:
                save(run / "checkpoints" / f"step_{state.step:07d}.pt")
    finally:
        bar.close()
    # Why the loop ended early (every rank asks, together): a signal, or the time budget.
    signum = max(dist_utils.gather_objects(stop.signum, info)) if state.step < t.max_steps else 0
    if signum and info.is_main and progress:
        print(f"clsvc: {signal_name(signum)}: saving step {state.step} and stopping (send it again to stop "
              "at once without saving)", file=sys.stderr, flush=True)
    save(last)  # the last completed step; nothing of a step in progress
    if signum:
        raise TrainingStopped(signum, f"{signal_name(signum)}: stopped at step {state.step}, saved in {last}; "
                                      "continue with --resume")
    if val_batches and info.is_main and setup.last_val != state.step:  # once per step
        log_val()
    return last


def read_log(run: str | Path, kind: str = "train") -> list[dict[str, Any]]:
    """Rows of ``log.jsonl`` of the given kind (``train`` or ``val``); a line cut short by a
    killed run is skipped."""
    path = Path(run) / LOG
    if not path.exists():
        return []
    return [row for _, row in read_rows(path) if row.get("kind") == kind]


__all__ = ["train", "train_step", "validate", "speaker_table", "read_log", "LAST", "TrainingStopped",
           "StopSignals", "lock_run", "remove_orphans", "trim_log"]
