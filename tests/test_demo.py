"""`clsvc demo --quick`: synthesis with espeak-ng, preprocessing, training, conversion, scoring."""

import json
import shutil

import pytest

from clsvc.cli import main

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")


def test_quick_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    wavs = sorted((out / "converted").glob("*.wav"))
    assert len(wavs) == 6
    summary = json.loads((out / "results.json").read_text())["summary"]
    assert set(summary) == {"seen", "one-shot"}
    for s in summary.values():
        assert -1 <= s["cos_target"] <= 1 and 0 <= s["closer_to_target"] <= 1
    assert "closer to the target" in (out / "results.md").read_text()
    # A second run reuses the corpus, features and model.
    assert main(["demo", "--out", str(out), "--quick"]) == 0
    assert "found a trained model" in capsys.readouterr().out
