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


# ----------------------------------------------------------------------------------------------
# --through CKPT: the vocoders are fed a VC model's own reconstructions. Fast: a generated
# ARCTIC-shaped corpus (one utterance), a tiny untrained VC model, and the scorers, speaker
# embeddings and vocoder replaced by stand-ins (the scoring itself is the slow test's).


@pytest.fixture(scope="module")
def tiny_arctic(tmp_path_factory) -> Path:
    """``arctic/{bdl,slt,cathy}`` with one 2 s generated ``arctic_b0490.flac`` for bdl."""
    import soundfile as sf

    from helpers import SPEAKERS, SR, synth_utterance

    root = tmp_path_factory.mktemp("corpus")
    for voice in ("bdl", "slt", "cathy"):
        (root / "arctic" / voice).mkdir(parents=True)
    sf.write(root / "arctic" / "bdl" / "arctic_b0490.flac", synth_utterance(*SPEAKERS["spk_a"], seed=7, seconds=2.0), SR)
    return root


def _vc_file(path: Path, *overrides: str) -> Path:
    """A tiny untrained ClsVC (``cpu`` config made tiny, plus ``overrides``) saved as an inference file."""
    import torch

    from clsvc.checkpoint import INFERENCE, save_checkpoint
    from clsvc.config import load_config
    from clsvc.models import build_system

    from helpers import SPEAKERS, TINY

    cfg = load_config("cpu", TINY + list(overrides))
    cfg.model.n_speakers = len(SPEAKERS)
    torch.manual_seed(0)
    model = build_system(cfg)
    table = torch.nn.functional.normalize(torch.randn(len(SPEAKERS), model.speaker_dim), dim=1)
    return save_checkpoint(path, {"kind": INFERENCE, "config": cfg.to_dict(), "speakers": list(SPEAKERS),
                                  "speaker_table": table, "model": model.inference_state_dict(), "step": 1234,
                                  "elapsed": 60.0})


@pytest.fixture(scope="module")
def tiny_vc(tmp_path_factory) -> Path:
    return _vc_file(tmp_path_factory.mktemp("vc") / "tiny-vc.pt")


def _stand_ins(mod, monkeypatch) -> list:
    """Scorers, embeddings, thread limits and the vocoders of ``mod`` replaced by fast stand-ins;
    returns the list the stand-in vocoder ``fake`` appends every mel it is fed to."""
    import numpy as np

    fed: list = []

    class Embeddings:
        def __init__(self, cfg):
            pass

        def centroid(self, paths):
            return np.zeros(256, dtype=np.float32)

    def score_output(u, out, cent, cfg, f0_method="harvest"):
        assert len(out) == len(u.ref)  # scored against the original recording's length
        row = {key: 0.5 for key, _, _, _ in mod.METRICS if key != "rtf"}
        return {**row, "accepted": True, "log_f0_mean_cents": 0.0, "voiced_pairs": 10, "dnsmos_p808": 3.0}

    def fake(mel):
        fed.append(np.array(mel))
        return np.zeros(len(mel) * 256, dtype=np.float32)

    monkeypatch.setattr(mod, "limit_threads", lambda n: None)
    monkeypatch.setattr(mod, "Embeddings", Embeddings)
    monkeypatch.setattr(mod, "score_original", lambda u, emb, cent: {
        "dnsmos_sig": 3.0, "dnsmos_bak": 3.5, "dnsmos_ovrl": 2.8, "dnsmos_p808": 3.2, "cos": 0.9, "accepted": True})
    monkeypatch.setattr(mod, "score_output", score_output)
    monkeypatch.setattr(mod, "load_vocoders", lambda specs, cfg, device: [("fake", {"kind": "fake"}, fake)])
    return fed


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return ["--corpus", str(corpus), "--set", "arctic", "--speakers", "bdl", "--per-speaker", "1",
            "--threads", "1", "--out", str(out), *extra]


def test_through_feeds_the_vocoders_the_models_reconstruction(tiny_arctic, tiny_vc, tmp_path, monkeypatch, capsys):
    import numpy as np

    import clsvc
    from clsvc.audio import load_wav, trim_silence, wav_to_mel
    from clsvc.config import MelConfig
    from clsvc.models import Reference

    mod = _module()
    fed = _stand_ins(mod, monkeypatch)
    out = tmp_path / "res" / "through.json"
    assert mod.main(_args(tiny_arctic, out, "--through", str(tiny_vc))) == 0

    # What the vocoder got: the model's own-voice reconstruction of the trimmed utterance's mel.
    cfg = MelConfig()
    wav = trim_silence(load_wav(tiny_arctic / "arctic" / "bdl" / "arctic_b0490.flac", cfg), mod.TRIM_DB, cfg)
    mel = wav_to_mel(wav, cfg)
    conv = clsvc.load(tiny_vc, vocoder="griffin-lim")
    ref = Reference(mel, wav=mod.fit(wav, len(mel) * cfg.hop_length))
    want = np.clip(conv.convert_mel(ref, conv.voice([ref])), 0.0, 1.0)
    got = fed[-1]
    assert got.shape == mel.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - mel).mean() > 0.01  # not the original mel

    result = json.loads(out.read_text())
    through = result["through"]
    assert through["name"] == "tiny-vc.pt (step 1234)" and through["checkpoint"] == str(tiny_vc)
    assert through["system"] == "clsvc" and through["step"] == 1234 and len(through["weights_sha256"]) == 64
    assert through["path"] == str(tiny_vc.resolve()) and through["reconstruct_seconds"] >= 0
    dist = float(np.mean(np.abs(want - mel)) * 100)
    assert through["logmel_db"]["arctic"]["n"] == 1
    assert through["logmel_db"]["arctic"]["mean"] == pytest.approx(dist, abs=1e-3)
    assert [r["through"] for r in result["rows"]] == [through["name"]]
    assert list(result)[list(result).index("vocoders") + 1] == "through"

    md = out.with_suffix(".md").read_text()
    assert md.startswith("### Vocoder copy-synthesis through tiny-vc.pt (step 1234) (")
    assert "| vocoder | through | set | n | DNSMOS OVRL |" in md and "|---|---|---|---|---|" in md
    assert "| fake | tiny-vc.pt (step 1234) | arctic | 1 | 0.50 ± " in md
    assert "| original recording | – | arctic | 1 | 2.80 ± " in md
    assert (f"mel → its reconstruction by the clsvc model {tiny_vc} (step 1234; the utterance converted to its own "
            f"voice; log-mel dist to the original mel: arctic {dist:.2f} ± ") in md
    assert md.endswith(").\n") and "reconstructions by tiny-vc.pt (step 1234)" in md
    printed = capsys.readouterr().out
    assert "| fake | tiny-vc.pt (step 1234) | arctic | 1 |" in printed
    assert printed.rstrip().endswith(f"wrote {out} and {out.with_suffix('.md')}")


def test_without_through_the_report_is_unchanged(tiny_arctic, tmp_path, monkeypatch):
    mod = _module()
    fed = _stand_ins(mod, monkeypatch)
    out = tmp_path / "plain.json"
    assert mod.main(_args(tiny_arctic, out)) == 0
    result = json.loads(out.read_text())
    assert "through" not in result and all("through" not in r for r in result["rows"])
    md = out.with_suffix(".md").read_text()
    assert md.startswith("### Vocoder copy-synthesis (") and "through" not in md
    assert "| vocoder | set | n | DNSMOS OVRL |" in md and "| fake | arctic | 1 | 0.50 ± " in md
    assert ", mel → vocoder, scored against the trimmed original." in md
    import numpy as np

    from clsvc.audio import load_wav, trim_silence, wav_to_mel
    from clsvc.config import MelConfig

    cfg = MelConfig()
    mel = wav_to_mel(trim_silence(load_wav(tiny_arctic / "arctic" / "bdl" / "arctic_b0490.flac", cfg), mod.TRIM_DB,
                                  cfg), cfg)
    np.testing.assert_array_equal(fed[-1], mel)  # the original mel itself


@pytest.mark.parametrize("case", ["unknown name", "another mel definition"])
def test_through_refusals_are_one_line_and_exit_2(case, tiny_arctic, tmp_path, monkeypatch, capsys):
    mod = _module()
    _stand_ins(mod, monkeypatch)
    if case == "unknown name":
        spec, words = "no-such-model", ["error: no-such-model"]
    else:
        spec, words = str(_vc_file(tmp_path / "fmin80.pt", "mel.fmin=80")), ["another mel definition", "mel.fmin"]
    out = tmp_path / "v.json"
    assert mod.main(_args(tiny_arctic, out, "--through", spec)) == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and all(w in lines[0] for w in words), lines
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_reconstruct_takes_a_table_models_own_row_and_fits_the_frames():
    import numpy as np

    from clsvc.errors import ClsvcError

    mod = _module()

    class TableModel:  # a model that makes no voice from audio: only its training speakers' rows
        one_shot, speakers, checkpoint, system = False, ["bdl"], "table.pt", "vae"

        def speaker_embedding(self, name):
            return np.full(4, 7.0, dtype=np.float32)

        def convert_mel(self, ref, voice):
            assert (voice == 7.0).all()
            return ref.mel[:-3] + 2.0  # 3 frames short and beyond [0, 1]

    def utt(speaker):
        return mod.Utt("arctic", speaker, "u", Path("u.flac"), [], ref=np.zeros(10 * 256, dtype=np.float32),
                       mel=np.full((10, 80), 0.25, dtype=np.float32))

    rec = mod.reconstruct(TableModel(), utt("bdl"))
    assert rec.shape == (10, 80) and (rec[:7] == 1.0).all() and (rec[7:] == 0.0).all()
    with pytest.raises(ClsvcError, match="slt is not one of its training speakers"):
        mod.reconstruct(TableModel(), utt("slt"))
    assert mod.fit_frames(np.ones((12, 80), dtype=np.float32), 10).shape == (10, 80)
