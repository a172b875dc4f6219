from dataclasses import dataclass, field
from typing import Literal

import pytest

from clsvc.config import Config, MelConfig, load_config, parse_overrides, with_overrides
from clsvc.errors import ClsvcError


def test_builtin_configs_load():
    paper = load_config("paper")
    assert paper.model.speaker_dim == 256 and paper.model.content_dim == 32
    assert (paper.loss.alpha, paper.loss.beta, paper.loss.lambda_adv) == (0.1, 0.1, 0.5)
    assert paper.optim.betas == (0.9, 0.98)
    assert paper.train.batch_size == 16 and paper.train.max_steps == 200_000
    assert paper.mel == MelConfig()
    cpu = load_config("cpu")
    assert cpu.model.enc_channels < paper.model.enc_channels  # inherits via base: and overrides
    real, wide = load_config("real"), load_config("real-wide")  # the shipped model's two stages
    assert wide.train.freeze == ("encoder.",) and real.train.freeze == ()
    assert wide.model.dec_lstm_hidden > real.model.dec_lstm_hidden and wide.model.f0_condition
    fine = load_config("real-finetune")  # its third stage: the same network, L1 and a decaying rate
    assert fine.model == wide.model and fine.train.freeze == wide.train.freeze
    assert (fine.loss.recon_distance, fine.optim.schedule, fine.train.max_steps) == ("l1", "cosine", 8000)
    lean = load_config("paper-lean")  # the paper's latent split and losses on narrower layers
    assert (lean.model.speaker_dim, lean.model.content_dim) == (256, 32) and lean.loss == paper.loss
    assert lean.model.dec_lstm_hidden < paper.model.dec_lstm_hidden and lean.train == paper.train


def test_config_path_and_overrides(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("base: cpu\nmodel:\n  content_dim: 8\n")
    cfg = load_config(p, ["train.batch_size=4", "optim.betas=[0.5, 0.9]", "train.amp=false"])
    assert cfg.model.content_dim == 8 and cfg.train.batch_size == 4
    assert cfg.optim.betas == (0.5, 0.9) and cfg.train.amp is False
    cfg2 = with_overrides(cfg, ["loss.alpha=0"])
    assert cfg2.loss.alpha == 0 and cfg.loss.alpha == 0.1


@pytest.mark.parametrize("override, words", [
    (["model.contnet_dim=8"], "unknown key"),
    (["train.batch_size=abc"], "expected an integer"),
    (["train.batch_size=2.5"], "expected an integer"),
    (["loss.adversarial=magic"], "not one of"),
    (["nodot=1"], "section.name"),
    (["justtext"], "key=value"),
    (["train.amp=maybe"], "true/false"),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ClsvcError, match=words):
        load_config("cpu", override)


def test_bad_files(tmp_path):
    with pytest.raises(ClsvcError, match="no such file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ClsvcError, match="not valid YAML"):
        load_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(ClsvcError, match="loops"):
        load_config(loop)


def test_round_trip_through_dict():
    cfg = load_config("cpu")
    from clsvc.config import config_from_dict

    assert config_from_dict(cfg.to_dict()) == cfg
    assert isinstance(Config().to_dict()["optim"]["betas"], list)


def test_parse_overrides_nested():
    assert parse_overrides(["a.b.c=1", "a.d=x"]) == {"a": {"b": {"c": 1}, "d": "x"}}


# ----------------------------------------------------------------------------------------------
# dacite-based loading: messages and coercions


def _one_line_error(overrides, words):
    with pytest.raises(ClsvcError) as e:
        load_config("cpu", overrides)
    msg = str(e.value)
    assert "\n" not in msg and words in msg, msg
    return msg


@pytest.mark.parametrize("override, key, allowed", [
    ("model.system=foo", "model.system", "clsvc, autovc, vqvc, vae, stargan, vocoder"),
    ("model.norm=foo", "model.norm", "batch, group, none"),
    ("model.content_norm=foo", "model.content_norm", "none, instance"),
    ("model.speaker_classifier=foo", "model.speaker_classifier", "linear, cosine"),
    ("model.adversary_input=foo", "model.adversary_input", "frame, pooled"),
    ("loss.adversarial=foo", "loss.adversarial", "grl, entropy"),
    ("loss.code_distance=foo", "loss.code_distance", "l1, l2"),
    ("autovc.code_distance=foo", "autovc.code_distance", "l1, l2"),
    ("train.sampling=foo", "train.sampling", "speaker, utterance, sqrt"),
])
def test_bad_choice_names_key_and_allowed_values(override, key, allowed):
    msg = _one_line_error([override], f"{key}: 'foo' is not one of {allowed}")
    assert msg.startswith("config ") and msg.endswith(allowed)


def test_choice_message_exact():
    from clsvc.config import config_from_dict

    with pytest.raises(ClsvcError) as e:
        config_from_dict({"model": {"norm": "foo"}}, "config")
    assert str(e.value) == "config: model.norm: 'foo' is not one of batch, group, none"


def test_systems_come_from_the_literal():
    import typing

    from clsvc.config import SYSTEMS, ModelConfig

    assert SYSTEMS == ("clsvc", "autovc", "vqvc", "vae", "stargan", "vocoder")
    assert typing.get_args(typing.get_type_hints(ModelConfig)["system"]) == SYSTEMS


def test_unknown_key_names_dotted_key_and_valid_keys():
    msg = _one_line_error(["model.contnet_dim=8"], "model.contnet_dim: unknown key; valid keys in model are ")
    assert "content_dim" in msg and "speaker_dim" in msg
    msg = _one_line_error(["model.b=1", "model.a=1"], "model.a, model.b: unknown keys")
    from clsvc.config import config_from_dict

    with pytest.raises(ClsvcError, match=r"^here: colour: unknown key; valid keys are autovc, convert, loss, mel, ") as e:
        config_from_dict({"colour": "red"}, "here")
    assert "\n" not in str(e.value)


def test_wrong_type_names_full_dotted_key():
    from clsvc.config import config_from_dict

    with pytest.raises(ClsvcError) as e:
        config_from_dict({"model": {"content_dim": "abc"}}, "config X")
    assert str(e.value) == "config X: model.content_dim: expected an integer, got 'abc'"
    with pytest.raises(ClsvcError, match="config X: optim.betas: expected a list of 2 values, got"):
        config_from_dict({"optim": {"betas": [0.1, 0.2, 0.3]}}, "config X")
    with pytest.raises(ClsvcError, match="optim.betas: expected a number, got 'x'"):
        config_from_dict({"optim": {"betas": [0.1, "x"]}}, "config X")
    with pytest.raises(ClsvcError, match="config X: model: expected a section"):
        config_from_dict({"model": 5}, "config X")
    with pytest.raises(ClsvcError, match="expected a mapping, got list"):
        config_from_dict([1, 2], "config X")  # type: ignore[arg-type]


def test_coercions_as_before():
    from clsvc.config import config_from_dict

    cfg = load_config(None, ["train.batch_size=4.0", "train.max_steps='1000'", "train.seed=1e3",
                             "loss.alpha=1", "optim.lr=1e-3", "optim.betas=[0, 0.5]"])
    assert cfg.train.batch_size == 4 and isinstance(cfg.train.batch_size, int)
    assert cfg.train.max_steps == 1000 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.seed == 1000 and isinstance(cfg.train.seed, int)
    assert cfg.loss.alpha == 1.0 and isinstance(cfg.loss.alpha, float)
    assert cfg.optim.lr == 1e-3 and isinstance(cfg.optim.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.optim.betas == (0.0, 0.5) and isinstance(cfg.optim.betas, tuple)
    for raw, value in [("true", True), ("False", False), ("yes", True), ("NO", False), ("1", True), ("0", False)]:
        assert config_from_dict({"train": {"amp": raw}}).train.amp is value
    assert config_from_dict({"train": {"amp": False}}).train.amp is False
    # empty sections mean "all defaults"
    assert config_from_dict({"mel": None, "model": {}}) == Config()
    for bad in [1, 0, "maybe", None]:
        with pytest.raises(ClsvcError, match="train.amp: expected true/false"):
            config_from_dict({"train": {"amp": bad}})
    for bad in [True, 2.5, "2.5", "x", None, float("inf"), float("nan"), [1]]:
        with pytest.raises(ClsvcError, match="train.batch_size: expected an integer"):
            config_from_dict({"train": {"batch_size": bad}})
    for bad in ["x", None, [1.0], "nan", float("nan")]:
        with pytest.raises(ClsvcError, match="loss.alpha: expected a number"):
            config_from_dict({"loss": {"alpha": bad}})


def test_from_dict_on_any_dataclass():
    from clsvc.config import from_dict

    mel = from_dict(MelConfig, {"n_mels": "40", "fmax": 7000})
    assert mel.n_mels == 40 and mel.fmax == 7000.0 and isinstance(mel, MelConfig)
    with pytest.raises(ClsvcError, match="^feats.json: hop: unknown key; valid keys are amp_floor, fmax"):
        from_dict(MelConfig, {"hop": 1}, "feats.json")
    # str fields still take numbers (as before)
    assert from_dict(Toy, {"name": 5}).name == "5"
    with pytest.raises(ClsvcError, match="^toy: name: expected a string, got"):
        from_dict(Toy, {"name": [1]}, "toy")


# ----------------------------------------------------------------------------------------------
# validate(): every range in one place


@pytest.mark.parametrize("override, key", [
    # train
    ("train.batch_size=0", "train.batch_size"),
    ("train.max_steps=0", "train.max_steps"),
    ("train.max_minutes=-1", "train.max_minutes"),
    ("train.max_minutes=.inf", "train.max_minutes"),
    ("train.threads=-1", "train.threads"),
    ("train.keep_every=-1", "train.keep_every"),
    ("train.log_every=0", "train.log_every"),
    ("train.ckpt_every=0", "train.ckpt_every"),
    ("train.val_every=0", "train.val_every"),
    ("train.val_batches=0", "train.val_batches"),
    ("train.table_utterances=0", "train.table_utterances"),
    ("train.crop_frames=7", "train.crop_frames"),
    ("train.crop_frames=10001", "train.crop_frames"),
    ("train.pad_value=.inf", "train.pad_value"),
    # optim
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=-1e-3", "optim.lr"),
    ("optim.lr=.inf", "optim.lr"),
    ("optim.betas=[1.0, 0.9]", "optim.betas"),
    ("optim.betas=[0.9, -0.1]", "optim.betas"),
    ("optim.weight_decay=-1", "optim.weight_decay"),
    ("optim.grad_clip=-1", "optim.grad_clip"),
    ("optim.adversary_lr_mult=-1", "optim.adversary_lr_mult"),
    ("optim.adversary_lr_mult=.inf", "optim.adversary_lr_mult"),
    # model sizes
    ("model.speaker_dim=0", "model.speaker_dim"),
    ("model.content_dim=0", "model.content_dim"),
    ("model.enc_channels=0", "model.enc_channels"),
    ("model.dec_channels=0", "model.dec_channels"),
    ("model.n_speakers=-1", "model.n_speakers"),
    ("model.enc_conv_layers=-1", "model.enc_conv_layers"),
    ("model.enc_lstm_hidden=-1", "model.enc_lstm_hidden"),
    ("model.enc_lstm_layers=-1", "model.enc_lstm_layers"),
    ("model.dec_pre_lstm=-1", "model.dec_pre_lstm"),
    ("model.dec_conv_layers=-1", "model.dec_conv_layers"),
    ("model.dec_lstm_hidden=-1", "model.dec_lstm_hidden"),
    ("model.dec_lstm_layers=-1", "model.dec_lstm_layers"),
    ("model.postnet_channels=-1", "model.postnet_channels"),
    ("model.postnet_layers=-1", "model.postnet_layers"),
    ("model.adversary_hidden=-1", "model.adversary_hidden"),
    ("model.adversary_layers=-1", "model.adversary_layers"),
    ("model.kernel_size=4", "model.kernel_size"),
    ("model.kernel_size=-1", "model.kernel_size"),
    ("model.cosine_scale=0", "model.cosine_scale"),
    # mel
    ("mel.n_mels=0", "mel.n_mels"),
    ("mel.sample_rate=0", "mel.sample_rate"),
    ("mel.n_fft=0", "mel.n_fft"),
    ("mel.hop_length=0", "mel.hop_length"),
    ("mel.win_length=0", "mel.win_length"),
    ("mel.win_length=2048", "mel.win_length"),
    ("mel.fmin=0", "mel.fmin"),
    ("mel.fmax=9000", "mel.fmax"),
    ("mel.amp_floor=0", "mel.amp_floor"),
    ("mel.min_level_db=0", "mel.min_level_db"),
    ("mel.highpass_hz=-1", "mel.highpass_hz"),
    ("mel.ref_level_db=.inf", "mel.ref_level_db"),
    # loss weights
    ("loss.alpha=-0.1", "loss.alpha"),
    ("loss.beta=-0.1", "loss.beta"),
    ("loss.lambda_adv=-0.1", "loss.lambda_adv"),
    ("loss.lambda_adv=.inf", "loss.lambda_adv"),
    ("loss.convert_code=-1", "loss.convert_code"),
    ("loss.convert_cls=-1", "loss.convert_cls"),
    # baselines (the checks their constructors repeat)
    ("autovc.bottleneck_dim=3", "autovc.bottleneck_dim"),
    ("autovc.bottleneck_dim=0", "autovc.bottleneck_dim"),
    ("autovc.downsample=0", "autovc.downsample"),
    ("autovc.lambda_code=-1", "autovc.lambda_code"),
    ("vqvc.channels=0", "vqvc.channels"),
    ("vqvc.levels=0", "vqvc.levels"),
    ("vqvc.code_dim=0", "vqvc.code_dim"),
    ("vqvc.codebook_size=1", "vqvc.codebook_size"),
    ("vqvc.commitment=-1", "vqvc.commitment"),
    ("vqvc.vq_weight=-1", "vqvc.vq_weight"),
    ("vqvc.codebook_ema=1", "vqvc.codebook_ema"),
    ("vqvc.codebook_ema=-0.1", "vqvc.codebook_ema"),
    ("vae.latent_dim=0", "vae.latent_dim"),
    ("vae.speaker_emb_dim=0", "vae.speaker_emb_dim"),
    ("vae.channels=0", "vae.channels"),
    ("vae.kl_weight=-1", "vae.kl_weight"),
    ("vae.kl_anneal_steps=-1", "vae.kl_anneal_steps"),
    ("stargan.gen_channels=7", "stargan.gen_channels"),
    ("stargan.gen_channels=0", "stargan.gen_channels"),
    ("stargan.disc_channels=7", "stargan.disc_channels"),
    ("stargan.res_channels=0", "stargan.res_channels"),
    ("stargan.res_blocks=-1", "stargan.res_blocks"),
    ("stargan.lambda_cyc=-1", "stargan.lambda_cyc"),
    ("stargan.lambda_id=-1", "stargan.lambda_id"),
    ("stargan.id_steps=-1", "stargan.id_steps"),
    ("stargan.disc_lr_scale=0", "stargan.disc_lr_scale"),
])
def test_range_checks_name_the_key(override, key):
    msg = _one_line_error([override], f"{key} must ")
    assert msg.startswith("config ") and "(got " in msg


@pytest.mark.parametrize("overrides, words, fine", [
    (["model.system=autovc", "model.enc_lstm_layers=0"], "model.enc_lstm_layers must be >= 1 for autovc",
     ["model.enc_lstm_layers=0"]),
    (["model.system=stargan", "mel.n_mels=82"], "mel.n_mels must be a multiple of 4 for stargan", ["mel.n_mels=82"]),
    (["model.postnet_layers=3", "model.postnet_channels=0"], "model.postnet_channels must be >= 1",
     ["model.postnet_layers=1", "model.postnet_channels=0"]),
    (["model.adversary_layers=1", "model.adversary_hidden=0"], "model.adversary_hidden must be >= 1",
     ["model.adversary_layers=0", "model.adversary_hidden=0"]),
])
def test_cross_field_checks(overrides, words, fine):
    _one_line_error(overrides, words)
    load_config("cpu", fine)  # the same value is fine for the other systems / settings


def test_edge_values_are_allowed():
    cfg = load_config("cpu", ["train.crop_frames=8", "train.max_minutes=0", "optim.betas=[0, 0.999]",
                              "vqvc.codebook_ema=0", "model.enc_lstm_layers=0", "loss.alpha=0",
                              "model.postnet_layers=1", "model.postnet_channels=0"])
    assert cfg.train.crop_frames == 8 and cfg.optim.betas == (0.0, 0.999)


@pytest.mark.parametrize("lr", [".nan", "nan", "NaN"])
def test_nan_lr_refused(lr):
    _one_line_error([f"optim.lr={lr}"], "optim.lr: expected a number")


def test_validate_catches_what_code_sets():
    from clsvc.config import validate

    cfg = Config()
    cfg.optim.lr = float("nan")
    with pytest.raises(ClsvcError, match=r"^cfg: optim.lr must be a finite number \(got nan\)$"):
        validate(cfg, "cfg")
    cfg = Config()
    cfg.model.norm = "foo"  # type: ignore[assignment]
    with pytest.raises(ClsvcError, match="^config: model.norm: 'foo' is not one of batch, group, none$"):
        validate(cfg)
    cfg = Config()
    cfg.train.max_steps, cfg.train.log_every = 0, 0
    with pytest.raises(ClsvcError) as e:
        validate(cfg)
    assert "train.max_steps must be" in str(e.value) and "; train.log_every must be" in str(e.value)
    assert "\n" not in str(e.value)
    validate(Config())


# ----------------------------------------------------------------------------------------------
# command-line flags from a dataclass

@dataclass
class Toy:
    steps: int = 10
    rate: float = field(default=0.5, metadata={"help": "how fast"})
    name: str = "x"
    mode: Literal["fast", "slow"] = "fast"
    x: bool = True
    verbose: bool = False
    pair: tuple[int, int] = (1, 2)
    hidden_thing: int = 3


def _toy_parser(skip=()):
    import argparse

    from clsvc.config import add_dataclass_arguments

    parser = argparse.ArgumentParser(prog="toy")
    add_dataclass_arguments(parser, Toy, skip=skip)
    return parser


def test_dataclass_arguments_defaults_and_flags():
    from clsvc.config import dataclass_from_namespace

    parser = _toy_parser()
    flags = {o for a in parser._actions for o in a.option_strings}
    assert {"--steps", "--rate", "--name", "--mode", "--no-x", "--verbose", "--pair", "--hidden-thing"} <= flags
    assert "--x" not in flags and "--no-verbose" not in flags
    assert "how fast" in parser.format_help()
    ns = parser.parse_args([])
    assert dataclass_from_namespace(Toy, ns) == Toy()
    ns = parser.parse_args(["--steps", "4", "--rate", "2", "--mode", "slow", "--no-x", "--verbose",
                            "--pair", "3", "4", "--hidden-thing", "5", "--name", "y"])
    assert ns.x is False and ns.verbose is True and ns.hidden_thing == 5
    toy = dataclass_from_namespace(Toy, ns)
    assert toy == Toy(steps=4, rate=2.0, name="y", mode="slow", x=False, verbose=True, pair=(3, 4), hidden_thing=5)


def test_dataclass_arguments_skip_and_group():
    import argparse

    from clsvc.config import add_dataclass_arguments, dataclass_from_namespace

    parser = _toy_parser(skip=("hidden_thing",))
    assert "--hidden-thing" not in parser.format_help()
    assert dataclass_from_namespace(Toy, parser.parse_args(["--steps", "7"]), skip=("hidden_thing",)) == Toy(steps=7)
    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser.add_argument_group("toy"), Toy)
    assert parser.parse_args(["--mode", "slow"]).mode == "slow"


@pytest.mark.parametrize("argv", [["--mode", "medium"], ["--steps", "abc"], ["--pair", "1"]])
def test_dataclass_arguments_refused_by_argparse(argv, capsys):
    with pytest.raises(SystemExit) as e:
        _toy_parser().parse_args(argv)
    assert e.value.code == 2
    if argv[0] == "--mode":
        assert "invalid choice" in capsys.readouterr().err


def test_dataclass_from_namespace_checks_types():
    import argparse

    from clsvc.config import dataclass_from_namespace

    ns = argparse.Namespace(**{**vars(_toy_parser().parse_args([])), "mode": "medium"})
    with pytest.raises(ClsvcError, match="^command line: mode: 'medium' is not one of fast, slow$"):
        dataclass_from_namespace(Toy, ns)


def test_mel_differences_name_feature_fields_only():
    from dataclasses import replace

    from clsvc.config import MelConfig

    mel = MelConfig()
    assert mel.differences(replace(mel, griffin_lim_iters=5)) == []  # shapes no feature
    assert mel.differences(replace(mel, n_fft=512, fmax=8000.0)) == ["mel.n_fft", "mel.fmax"]
