"""Typed configuration: dataclasses loaded from YAML with ``key.sub=value`` overrides.

A config file may name a ``base`` (another YAML file, resolved relative to it, or a built-in
name such as ``paper``); its keys are applied on top of the base. Unknown keys and values of the
wrong type are errors that name the file and the key, so a typo never silently trains the wrong
model.

Built-in configs live in the repository's ``configs/`` folder (shipped inside the package as
``clsvc/configs``): ``clsvc train --config cpu`` and ``--config configs/cpu.yaml`` are the same.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ClsvcError

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
SYSTEMS = ("clsvc", "autovc", "vqvc", "vae", "stargan")


@dataclass(frozen=True)
class MelConfig:
    """The single mel-spectrogram definition (AutoVC's recipe, used by the ClsVC paper).

    Audio is 16 kHz mono, high-passed at 30 Hz; STFT magnitude (n_fft 1024, Hann window 1024,
    hop 256, i.e. 16 ms frames at 62.5 frames/s) is projected on 80 Slaney mel bands spanning
    90-7600 Hz, converted to dB with an amplitude floor of 1e-5, shifted by ``-ref_level_db``
    and mapped to [0, 1] by ``(dB - min_level_db) / -min_level_db`` with clipping.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 90.0
    fmax: float = 7600.0
    highpass_hz: float = 30.0
    amp_floor: float = 1e-5
    ref_level_db: float = 16.0
    min_level_db: float = -100.0
    # Griffin-Lim settings for the default vocoder (the inverse of this definition).
    griffin_lim_iters: int = 60


@dataclass
class ModelConfig:
    """Network sizes. Defaults are the AutoVC-sized network of ``configs/paper.yaml``.

    Encoder: ``enc_conv_layers`` x Conv1d(k=5, ``enc_channels``) + norm + ReLU, then a
    bidirectional LSTM (``enc_lstm_hidden`` per direction, ``enc_lstm_layers``), then a linear
    projection to Z = S_x (first ``speaker_dim``) + C_x (last ``content_dim``) per frame.
    S_x is the time average of its frames (utterance level); C_x stays frame level.

    Decoder: LSTM(``dec_pre_lstm``) -> ``dec_conv_layers`` x Conv1d(``dec_channels``) ->
    LSTM(``dec_lstm_hidden``, ``dec_lstm_layers``) -> linear to mel, plus a residual postnet of
    ``postnet_layers`` convs (``postnet_channels``, tanh). Any LSTM size 0 removes that LSTM.
    """

    # Which system: clsvc (the paper), autovc, vqvc (VQVC+), vae (VAE-VC), stargan (StarGAN-VC2).
    # The baselines read their own section below; the shared sizes here are reused where the
    # architectures agree (AutoVC's encoder/decoder/postnet are ClsVC's reference).
    system: str = "clsvc"
    n_speakers: int = 0  # set from the training data; 0 = not yet known
    speaker_dim: int = 256
    content_dim: int = 32
    enc_channels: int = 512
    enc_conv_layers: int = 3
    enc_lstm_hidden: int = 256
    enc_lstm_layers: int = 2
    dec_pre_lstm: int = 512
    dec_channels: int = 512
    dec_conv_layers: int = 3
    dec_lstm_hidden: int = 1024
    dec_lstm_layers: int = 2
    postnet_channels: int = 512
    postnet_layers: int = 5
    kernel_size: int = 5
    # "batch" (AutoVC), "group" (batch-size independent) or "none".
    norm: str = "batch"
    # Content-code post-processing (paper: none). "instance" removes each utterance's per-channel
    # mean and scale over time, i.e. the time-invariant part where a voice hides most easily.
    content_norm: str = "none"
    # C1 on the L2-normalised S_x: "linear" (paper) or "cosine" (scaled cosine logits).
    speaker_classifier: str = "linear"
    cosine_scale: float = 16.0
    # C2 on C_x: "frame" classifies every frame, "pooled" the time-averaged code.
    adversary_input: str = "frame"
    adversary_hidden: int = 256
    adversary_layers: int = 2


@dataclass
class LossConfig:
    """Loss weights. Paper: L = L_recon + alpha L_code + beta CE(C1) + lambda adversarial CE."""

    alpha: float = 0.1  # code reconstruction ||E(x') - Z||^2
    beta: float = 0.1  # speaker classification CE(C1(norm S_x))
    lambda_adv: float = 0.5  # adversarial speaker classification on C_x
    # "grl" (paper): C2 minimises CE, a gradient reversal layer makes E maximise the same CE.
    # "entropy": C2 minimises CE on a detached C_x; E minimises CE to the *uniform* target,
    # i.e. is pushed towards "C2 cannot tell", never towards "C2 is confidently wrong".
    adversarial: str = "grl"
    code_distance: str = "l2"  # "l2" (paper) or "l1" (AutoVC)
    # Remedy (not in the paper): the code loss on converted outputs. For x_a->b = D(C_a, S_b)
    # the re-encoded content must match C_a and the re-encoded speaker must match S_b.
    convert_code: float = 0.0
    # Remedy: C1 must recognise speaker b in the re-encoded conversion x_a->b.
    convert_cls: float = 0.0


@dataclass
class AutoVCConfig:
    """AutoVC (Qian et al. 2019): content encoder fed the mel and the source speaker's d-vector,
    a down-sampled bottleneck, decoder + postnet from ModelConfig's sizes. The speaker vector
    is the mean Resemblyzer (GE2E, 256-d) d-vector of a speaker's utterances."""

    bottleneck_dim: int = 32  # channels of the content code (both LSTM directions together)
    downsample: int = 32  # keep one code every `downsample` frames (then repeat it)
    lambda_code: float = 1.0  # AutoVC's weight of the code loss
    code_distance: str = "l1"  # AutoVC uses L1 for the code loss


@dataclass
class VQVCConfig:
    """VQVC+ (Wu et al. 2020): a U-Net-like conv encoder/decoder; at each level the content is
    the vector-quantised code and the speaker is the time-averaged residual between the
    continuous and the quantised code, fed to the decoder at that level."""

    channels: int = 256  # conv width of encoder and decoder
    levels: int = 3  # U-Net levels (each halves the time resolution)
    codebook_size: int = 64  # codes per level
    code_dim: int = 64  # dimension of the quantised vectors
    commitment: float = 0.25  # weight of the encoder commitment loss (VQ-VAE's beta)
    codebook_ema: float = 0.0  # > 0: EMA codebook updates with this decay instead of a loss
    # Weight of the summed VQ losses (codebook + commitment) in the total; the authors' code
    # uses 0.1 with L1 reconstruction.
    vq_weight: float = 1.0


@dataclass
class VAEConfig:
    """VAE-VC (Hsu et al. 2016): a conditional VAE, frame-level latent from the encoder, decoder
    conditioned on a learned speaker table (seen speakers only). Defaults are configs/vae.yaml's;
    layer counts, kernel and norm come from ModelConfig (see clsvc.models.vae)."""

    latent_dim: int = 64  # z per frame (the paper's public code: 64)
    speaker_emb_dim: int = 128  # learned speaker table row (the paper's public code: 128)
    channels: int = 512  # conv/LSTM width of encoder, decoder and postnet (AutoVC's 512)
    # Weight of the KL term; recon and KL are both means per frame and dimension, so the
    # paper's unit-variance ELBO on 10 dB units is kl_weight = latent_dim * 0.01 / 40 = 0.016.
    kl_weight: float = 0.016
    kl_anneal_steps: int = 10000  # linear KL warm-up (avoids posterior collapse early on)


@dataclass
class StarGANConfig:
    """StarGAN-VC2 (Kaneko et al. 2019) on mel features: 2-1-2D conv generator with
    conditional instance normalisation, projection discriminator conditioned on the
    source-and-target pair, least-squares adversarial + cycle + identity losses."""

    # Widths count a conv's channels *before* its GLU halves them (the paper's figure labels).
    gen_channels: int = 128  # G's first 2-D conv (g); down-sampling 2g, 4g; up-sampling 8g, 4g
    res_channels: int = 256  # 1-D width of the CIN residual blocks (their convs: 2x this)
    res_blocks: int = 9
    disc_channels: int = 128  # D's first 2-D conv (d); then 2d, 4d, 8d, 8d
    lambda_cyc: float = 10.0
    lambda_id: float = 5.0
    id_steps: int = 10000  # the identity loss is used for the first id_steps steps only
    disc_lr_scale: float = 0.5  # D's rate relative to optim.lr (paper: 1e-4 vs 2e-4)


@dataclass
class OptimConfig:
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = no clipping (paper does not mention clipping)
    # Learning-rate multiplier for C2 (adversary strength); 1 = paper.
    adversary_lr_mult: float = 1.0


@dataclass
class TrainConfig:
    batch_size: int = 16
    max_steps: int = 200_000
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    crop_frames: int = 128  # T; shorter utterances are padded with pad_value
    pad_value: float = 0.0  # 0 in the [0, 1] mel scale = the -100 dB floor, i.e. silence
    # "speaker": pick a speaker uniformly, then one of their utterances (balances speakers
    # with few utterances); "utterance": uniform over utterances.
    sampling: str = "speaker"
    seed: int = 1234
    threads: int = 0  # torch CPU threads; 0 = torch default
    amp: bool = True  # autocast on CUDA only
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 8
    ckpt_every: int = 2000
    keep_every: int = 0  # also keep step_N.pt every N steps; 0 = only last.pt
    # Utterances per speaker averaged into the stored speaker table (used by --target-speaker).
    table_utterances: int = 8


@dataclass
class Config:
    mel: MelConfig = field(default_factory=MelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Baselines' own settings (ignored unless model.system names them).
    autovc: AutoVCConfig = field(default_factory=AutoVCConfig)
    vqvc: VQVCConfig = field(default_factory=VQVCConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    stargan: StarGANConfig = field(default_factory=StarGANConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of builtins (tuples become lists), safe for YAML and checkpoints."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ClsvcError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, where) for a, v in zip(args, value))
    if origin in (typing.Union, types.UnionType):
        for a in typing.get_args(tp):
            try:
                return _coerce(value, a, where)
            except ClsvcError:
                continue
        raise ClsvcError(f"{where}: {value!r} does not fit {tp}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ClsvcError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ClsvcError(f"{where}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ClsvcError(f"{where}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ClsvcError(f"{where}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ClsvcError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ClsvcError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type, data: dict[str, Any], where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and bad types raise ClsvcError."""
    if not isinstance(data, dict):
        raise ClsvcError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ClsvcError(
            f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(names))}"
        )
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value or {}, f"{where}.{name}")
        else:
            kwargs[name] = _coerce(value, tp, f"{where}.{name}")
    return cls(**kwargs)


def _deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# files and overrides


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A path to a YAML file, or a built-in name (``paper``, ``cpu``, ``clsvcs`` ...)."""
    p = Path(name)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.insert(0, relative_to / p)
    if p.suffix == "":
        candidates.append(BUILTIN_CONFIG_DIR / f"{p.name}.yaml")
    candidates.append(BUILTIN_CONFIG_DIR / p.name)
    for c in candidates:
        if c.is_file():
            return c
    builtin = sorted(q.stem for q in BUILTIN_CONFIG_DIR.glob("*.yaml"))
    raise ClsvcError(
        f"config {name}: no such file; give a YAML path or one of the built-in configs: "
        f"{', '.join(builtin)}"
    )


def _load_yaml_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ClsvcError(f"config {path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ClsvcError(f"config {path}: not valid YAML ({e}); fix the file's syntax") from None
    if not isinstance(data, dict):
        raise ClsvcError(f"config {path}: expected a mapping of sections (mel, model, ...)")
    base = data.pop("base", None)
    if base is not None:
        base_path = resolve_config_path(base, relative_to=path.parent)
        data = _deep_update(_load_yaml_tree(base_path, seen + (path,)), data)
    return data


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.batch_size=8", "model.content_dim=16"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ClsvcError(
                f"override {item!r}: expected key=value, e.g. train.max_steps=1000"
            )
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ClsvcError(
                f"override {item!r}: the key must be section.name, e.g. loss.alpha=0.1"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(name: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when ``name`` is None) and apply overrides."""
    data: dict = {}
    where = "config"
    if name is not None:
        path = resolve_config_path(name)
        data = _load_yaml_tree(path)
        where = f"config {path}"
    if overrides:
        data = _deep_update(data, parse_overrides(overrides))
    cfg = from_dict(Config, data, where)
    validate(cfg, where)
    return cfg


def with_overrides(cfg: Config, overrides: list[str], where: str = "config") -> Config:
    """A copy of ``cfg`` with ``key.sub=value`` overrides applied (and validated)."""
    out = from_dict(Config, _deep_update(cfg.to_dict(), parse_overrides(overrides)), where)
    validate(out, where)
    return out


def config_from_dict(data: dict, where: str = "checkpoint config") -> Config:
    cfg = from_dict(Config, data, where)
    validate(cfg, where)
    return cfg


def _choice(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ClsvcError(f"{where}: {value!r} is not one of {', '.join(allowed)}")


def validate(cfg: Config, where: str = "config") -> None:
    """Cross-field checks that types alone cannot express."""
    m, lo, t = cfg.model, cfg.loss, cfg.train
    _choice(m.system, SYSTEMS, f"{where}: model.system")
    _choice(m.norm, ("batch", "group", "none"), f"{where}: model.norm")
    _choice(m.content_norm, ("none", "instance"), f"{where}: model.content_norm")
    _choice(m.speaker_classifier, ("linear", "cosine"), f"{where}: model.speaker_classifier")
    _choice(m.adversary_input, ("frame", "pooled"), f"{where}: model.adversary_input")
    _choice(lo.adversarial, ("grl", "entropy"), f"{where}: loss.adversarial")
    _choice(lo.code_distance, ("l1", "l2"), f"{where}: loss.code_distance")
    _choice(t.sampling, ("speaker", "utterance"), f"{where}: train.sampling")
    for name in ("speaker_dim", "content_dim", "enc_channels", "dec_channels"):
        if getattr(m, name) <= 0:
            raise ClsvcError(f"{where}: model.{name} must be positive")
    if m.kernel_size % 2 == 0:
        raise ClsvcError(f"{where}: model.kernel_size must be odd (got {m.kernel_size})")
    if t.batch_size < 1 or t.crop_frames < 8:
        raise ClsvcError(f"{where}: train.batch_size must be >= 1 and train.crop_frames >= 8")
    if cfg.mel.win_length > cfg.mel.n_fft:
        raise ClsvcError(f"{where}: mel.win_length must not exceed mel.n_fft")
    if not 0 < cfg.mel.fmin < cfg.mel.fmax <= cfg.mel.sample_rate / 2:
        raise ClsvcError(f"{where}: need 0 < mel.fmin < mel.fmax <= sample_rate/2")
    # The baselines' own sections (checked here so a typo fails at load, not mid-build).
    a, v, s = cfg.autovc, cfg.vqvc, cfg.stargan
    _choice(a.code_distance, ("l1", "l2"), f"{where}: autovc.code_distance")
    if a.bottleneck_dim < 2 or a.bottleneck_dim % 2 or a.downsample < 1:
        raise ClsvcError(f"{where}: autovc.bottleneck_dim must be even and >= 2 (two LSTM directions) "
                         "and autovc.downsample >= 1")
    if v.levels < 1 or v.codebook_size < 2 or v.code_dim < 1:
        raise ClsvcError(f"{where}: vqvc.levels >= 1, vqvc.codebook_size >= 2 and vqvc.code_dim >= 1 are needed")
    if not 0.0 <= v.codebook_ema < 1.0:
        raise ClsvcError(f"{where}: vqvc.codebook_ema must be in [0, 1) (0 = codebook loss instead of EMA)")
    if s.res_blocks < 0 or s.gen_channels < 2 or s.disc_channels < 2:
        raise ClsvcError(f"{where}: stargan.gen_channels and stargan.disc_channels must be >= 2, res_blocks >= 0")
