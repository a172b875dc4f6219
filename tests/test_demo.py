"""`clsvc demo`: the shipped real clips through a pretrained model (here a tiny untrained one
shipped as ``arctic`` in a temporary ``$CLSVC_PRETRAINED_DIR``), its refusals, the training-speed
estimate, and `clsvc demo --train` (espeak-ng synthesis, preprocessing, training, conversion,
scoring) with a step budget.

What is tested is the mechanism (files, rows, messages), not conversion quality: the model's
weights are random.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import soundfile as sf
import torch

from clsvc import demo, pretrained
from clsvc.checkpoint import INFERENCE, load_checkpoint, save_checkpoint
from clsvc.cli import main
from clsvc.config import load_config
from clsvc.errors import ClsvcError
from clsvc.models import build_system

from helpers import TINY, cli_error

ARCTIC = ["bdl", "slt", "cathy"]
SOURCES = ["ls2609", "ls1998", "bdl", "slt"]
ONE_SHOT = "ls2033"
EXPECTED = {(s, t, "seen") for s in SOURCES for t in ARCTIC if s != t} | {(s, ONE_SHOT, "one-shot") for s in SOURCES}
# A tiny neural vocoder (as in test_pretrained.py): far cheaper than Griffin-Lim's mel inversion.
TINY_VOCODER = ["model.system=vocoder", "vocoder.dim=16", "vocoder.intermediate=32", "vocoder.layers=2",
                "vocoder.mpd_periods=[2, 3]", "vocoder.mpd_channels=[4, 8, 8]", "vocoder.mrd_channels=4",
                "vocoder.mrd_resolutions=[[512, 128, 512], [256, 64, 256]]"]
CARD = {"description": "a tiny untrained model for tests",
        "data": [{"name": "generated toys", "licence": "CC0-1.0"}],
        "training": {"command": "clsvc train --config cpu", "config": "cpu"}}
espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def _model_file(path: Path, cfg, speakers: list[str]) -> Path:
    """An untrained system of ``cfg`` saved as an inference file (what `clsvc export` reads)."""
    cfg.model.n_speakers = max(len(speakers), 1)
    torch.manual_seed(0)
    model = build_system(cfg)
    table = torch.nn.functional.normalize(torch.randn(len(speakers), model.speaker_dim), dim=1) if speakers else None
    return save_checkpoint(path, {"kind": INFERENCE, "config": cfg.to_dict(), "speakers": speakers,
                                  "speaker_table": table, "model": model.inference_state_dict(), "step": 1234,
                                  "elapsed": 60.0})


@pytest.fixture(scope="module")
def arctic_dir(tmp_path_factory) -> Path:
    """A folder shipping a tiny untrained ClsVC as ``arctic`` (speakers bdl, slt, cathy and one
    LibriSpeech reader) and a tiny vocoder ``tiny-voc``, float16 with their cards, as
    `clsvc export --fp16 --card` writes them."""
    root = tmp_path_factory.mktemp("arctic")
    vc = _model_file(root / "vc32.pt", load_config("cpu", TINY), [*ARCTIC, "1034"])
    voc = _model_file(root / "voc32.pt", load_config("vocoder-cpu", TINY_VOCODER), [])
    shipped = root / "shipped"
    shipped.mkdir()
    pretrained.ship(vc, shipped / "arctic.pt", dict(CARD, speakers=ARCTIC))
    pretrained.ship(voc, shipped / "tiny-voc.pt", CARD)
    return shipped


@pytest.fixture
def fake_dnsmos(monkeypatch):
    """DNSMOS replaced by a constant (fast and deterministic; the real scorer has its own tests)."""
    monkeypatch.setattr(demo, "_dnsmos_scorer", lambda: lambda wav, sr: {"sig": 3.5, "bak": 4.0, "ovrl": 3.0,
                                                                         "p808": 3.2})




def test_the_shipped_clips_are_listed_and_credited():
    clips = demo.demo_clips()
    assert [c.speaker for c in clips if "source" in c.roles] == SOURCES
    assert [c.speaker for c in clips if "voice" in c.roles] == ARCTIC
    refs = [c for c in clips if "one-shot" in c.roles]
    assert len(refs) == 3 and {c.speaker for c in refs} == {ONE_SHOT}
    assert {c.gender for c in clips if c.corpus.startswith("LibriSpeech")} == {"M", "F"}
    for c in clips:
        info = sf.info(c.path)
        assert info.samplerate == 16000 and info.channels == 1 and 2.5 <= info.duration <= 5.0
    assert sum(c.path.stat().st_size for c in clips) < 1.5e6
    credits = (demo.CLIPS_DIR / "CREDITS.md").read_text()
    assert "CC BY 4.0" in credits and "Panayotov" in credits and "CMU ARCTIC" in credits and "CC0" in credits


def test_demo_converts_the_clips_and_scores_them(arctic_dir, monkeypatch, fake_dnsmos, tmp_path, capsys):
    monkeypatch.setenv(pretrained.ENV, str(arctic_dir))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--vocoder", "tiny-voc"]) == 0
    printed = capsys.readouterr().out
    assert str(out / "results.md") in printed and "closer to target" in printed and "LibriSpeech" in printed

    doc = json.loads((out / "results.json").read_text())
    assert doc["model"] == {"checkpoint": "arctic", "system": "clsvc", "step": 1234} and doc["dnsmos"] is True
    assert doc["vocoder"] == "tiny-voc"
    rows = doc["results"]
    assert {(r["source"], r["target"], r["kind"]) for r in rows} == EXPECTED and len(rows) == len(EXPECTED)
    for r in rows:
        assert -1 <= r["cos_target"] <= 1 and -1 <= r["cos_source"] <= 1 and r["dnsmos_ovrl"] == 3.0
        assert r["closer_to_target"] == (r["cos_target"] > r["cos_source"])
        wav, sr = sf.read(out / r["file"])
        assert sr == 16000 and len(wav) > 16000
    assert set(doc["summary"]) == {"seen", "one-shot"} and doc["summary"]["seen"]["n"] == 10
    assert len(list((out / "originals").glob("*.wav"))) == 8
    md = (out / "results.md").read_text()
    assert "| ls2609 → bdl | seen |" in md and "DNSMOS OVRL" in md and "CC BY 4.0" in md
    pytest.importorskip("matplotlib")
    assert (out / "spectrograms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_refuses_to_overwrite_and_omits_dnsmos_without_speechmos(arctic_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(pretrained.ENV, str(arctic_dir))
    monkeypatch.setattr(demo, "_dnsmos_scorer", lambda: None)
    # One source only (4 conversions are enough here): the other clips lose their source role.
    clips = [c if c.speaker == SOURCES[0] else replace(c, roles=tuple(r for r in c.roles if r != "source"))
             for c in demo.demo_clips()]
    monkeypatch.setattr(demo, "demo_clips", lambda: clips)
    out = tmp_path / "demo"
    (out / "converted").mkdir(parents=True)
    stale = out / "converted" / "old_to_gone.wav"
    stale.write_bytes(b"RIFF")
    err = cli_error(capsys, ["demo", "--out", out])
    assert "--force" in err and stale.exists()

    assert main(["demo", "--out", str(out), "--force"]) == 0
    assert not stale.exists()
    doc = json.loads((out / "results.json").read_text())
    assert [r["source"] for r in doc["results"]] == ["ls2609"] * 4
    assert doc["dnsmos"] is False and not any("dnsmos_ovrl" in r for r in doc["results"])
    md = (out / "results.md").read_text()
    assert "DNSMOS OVRL is omitted" in md and "| DNSMOS" not in md
    assert "DNSMOS skipped" in capsys.readouterr().out


def test_a_missing_model_is_one_line(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "none"
    empty.mkdir()
    monkeypatch.setenv(pretrained.ENV, str(empty))
    out = tmp_path / "demo"
    err = cli_error(capsys, ["demo", "--out", out])
    assert "'arctic'" in err and "clsvc demo --train" in err and "--checkpoint PATH" in err
    err = cli_error(capsys, ["demo", "--out", out, "--checkpoint", tmp_path / "mine.pt"])
    assert "mine.pt" in err and "clsvc demo --train" in err
    assert not out.exists()


def test_train_options_need_train(capsys):
    assert "add --train" in cli_error(capsys, ["demo", "--steps", "5"])
    assert "--voices, --quick" in cli_error(capsys, ["demo", "--voices", "5", "--quick"])
    assert "only one" in cli_error(capsys, ["demo", "--train", "--checkpoint", "arctic"])
    assert "positive" in cli_error(capsys, ["demo", "--train", "--steps", "0"])


def test_voices_a_model_offers():
    clips = demo.demo_clips()
    # Trained on the ARCTIC voices, one-shot too: by name, plus the unseen reader one-shot.
    targets, notes = demo.plan_targets(clips, ["bdl", "slt", "cathy"], by_name=True, one_shot=True)
    assert [(t.name, t.kind, len(t.refs)) for t in targets] == [
        ("bdl", "seen", 1), ("slt", "seen", 1), ("cathy", "seen", 1), (ONE_SHOT, "one-shot", 3)]
    assert notes == []
    # A one-shot model of other speakers: every voice from its clips.
    targets, notes = demo.plan_targets(clips, ["p225"], by_name=True, one_shot=True)
    assert {t.kind for t in targets} == {"one-shot"} and len(targets) == 4 and len(notes) == 3
    # A speaker-table model (no one-shot) without cathy: the others by name only.
    targets, notes = demo.plan_targets(clips, ["bdl", "slt"], by_name=True, one_shot=False)
    assert [t.name for t in targets] == ["bdl", "slt"] and len(notes) == 2
    with pytest.raises(ClsvcError, match="none of the demo's voices"):
        demo.plan_targets(clips, ["p225"], by_name=True, one_shot=False)


def test_the_step_timer_extrapolates_and_warns():
    lines: list[str] = []
    timer = demo.StepTimer(2500, expected=0.25, measure=20, write=lines.append)
    timer("train", 10, {"minutes": 0.10})  # start-up is in the first row: not counted
    timer("val", 20, {"loss": 1.0})
    timer("train", 20, {"minutes": 0.145})
    timer("train", 30, {"minutes": 0.19})  # 20 steps in 0.09 min = 0.27 s/step
    timer("train", 40, {"minutes": 0.5})  # reported once only
    assert lines == ["training 2,500 steps, about 11 min at 0.27 s/step (measured over steps 10-30; 11 min left)"]
    assert timer.s_per_step == pytest.approx(0.27)

    lines.clear()
    slow = demo.StepTimer(3000, expected=0.24, measure=20, write=lines.append)
    slow("train", 10, {"minutes": 0.0})
    slow("train", 30, {"minutes": 20 * 3.9 / 60})  # 3.9 s/step: the loaded machine of the issue
    assert lines[0].startswith("training 3,000 steps, about 3 h 15 min at 3.90 s/step")
    assert lines[1].startswith("warning: 3.90 s/step is more than twice") and "12 min" in lines[1]

    lines.clear()
    short = demo.StepTimer(12, write=lines.append)  # ends before anything is measured
    short("train", 10, {"minutes": 0.01})
    short("train", 12, {"minutes": 0.02})
    assert lines == [] and short.s_per_step is None


@pytest.mark.slow
@espeak
def test_train_demo_honours_steps_and_continues(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--train", "--out", str(out), "--quick", "--steps", "12"]) == 0
    assert load_checkpoint(out / "run" / "checkpoints" / "last.pt")["step"] == 12
    assert "training configs/cpu.yaml for 12 steps" in capsys.readouterr().out
    assert len(list((out / "converted").glob("*.wav"))) == 6
    doc = json.loads((out / "results.json").read_text())
    assert doc["training"]["steps"] == 12 and set(doc["summary"]) == {"seen", "one-shot"}
    for s in doc["summary"].values():
        assert -1 <= s["cos_target"] <= 1 and 0 <= s["closer_to_target"] <= 1
    assert "closer to the target" in (out / "results.md").read_text()

    # More steps continue the model; the same budget again reuses corpus, features and model.
    assert main(["demo", "--train", "--out", str(out), "--quick", "--steps", "16"]) == 0
    assert "continuing the model" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text())["training"]["steps"] == 16
    assert main(["demo", "--train", "--out", str(out), "--quick", "--steps", "16"]) == 0
    assert "found a trained model" in capsys.readouterr().out
