"""Smoke test of benchmarks/vocoder.py: one held-out ARCTIC utterance per voice through
Griffin-Lim, scored on everything; skipped without the shared corpus or the eval extras."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
SCRIPT = REPO / "benchmarks" / "vocoder.py"


def _module():
    spec = importlib.util.spec_from_file_location("benchmark_vocoder", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_missing_corpus_is_one_line_and_exit_2(tmp_path, capsys):
    assert _module().main(["--corpus", str(tmp_path / "nowhere"), "--out", str(tmp_path / "v.json")]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("error: corpus folder") and "--corpus" in out[0]
    assert not (tmp_path / "v.json").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (CORPUS / "arctic").is_dir(), reason=f"shared corpus not found at {CORPUS}")
def test_griffin_lim_on_arctic(tmp_path, capsys):
    from clsvc.evaluation import pitch, quality

    if not (quality.available() and pitch.available()):
        pytest.skip("needs the eval extras: pip install 'clsvc[eval]'")
    out = tmp_path / "vocoder.json"
    rc = _module().main(["--corpus", str(CORPUS), "--set", "arctic", "--per-speaker", "1",
                         "--vocoder", "griffin-lim", "--threads", "1", "--out", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert {"sets", "vocoders", "summary", "original", "rows", "original_rows", "threads", "wall_seconds"} <= set(result)
    assert list(result["sets"]) == ["arctic"] and result["sets"]["arctic"]["utterances"] == 3
    assert [v["name"] for v in result["vocoders"]] == ["griffin-lim"]
    summary = result["summary"]["griffin-lim"]["arctic"]
    for key in ("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "pesq_wb", "stoi", "log_f0_rmse_cents", "f0_corr",
                "vuv_error", "cos", "accepted", "logmel_db", "feature_mcd", "rtf"):
        assert summary[key]["n"] == 3, key
        assert set(summary[key]) == {"mean", "ci95", "low", "high", "n"}
    assert 1.0 <= summary["pesq_wb"]["mean"] <= 4.64 and 0.5 < summary["stoi"]["mean"] <= 1.0
    assert summary["rtf"]["mean"] > 0 and summary["logmel_db"]["mean"] >= 0
    assert set(result["original"]["arctic"]) == {"dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak", "cos", "accepted"}
    assert len(result["rows"]) == 3 and all(r["vocoder"] == "griffin-lim" for r in result["rows"])
    md = out.with_suffix(".md").read_text()
    assert "| griffin-lim | arctic | 3 |" in md and "| original recording | arctic | 3 |" in md
    assert "| griffin-lim | arctic | 3 |" in capsys.readouterr().out
