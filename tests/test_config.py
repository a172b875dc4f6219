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
