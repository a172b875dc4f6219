"""The benchmark scripts' shared writer (benchmarks/_report.py): the JSON result and the Markdown
table beside it, written atomically into a folder made on demand, and the table printed; and
that every script finds it however it is started (by path from any working directory, or
loaded by file path as the tests do)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


def _load(name: str):
    """benchmarks/NAME.py loaded by file path (as a test or a tool would, not run as a script)."""
    spec = importlib.util.spec_from_file_location(f"benchmark_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_write_result_writes_both_files_creates_the_folder_and_prints(tmp_path, capsys):
    write_result = _load("_report").write_result
    out = tmp_path / "new" / "deeper" / "result.json"
    result = {"name": "x", "values": [1.5, 2], "nested": {"ok": True, "none": None}}
    write_result(out, result, ["### Title", "", "| a | b |", "|---|---|", "| 1 | 2 |"])
    assert out.read_text() == json.dumps(result, indent=2) + "\n"
    assert json.loads(out.read_text()) == result
    md = "### Title\n\n| a | b |\n|---|---|\n| 1 | 2 |"
    assert out.with_suffix(".md").read_text() == md + "\n"
    assert capsys.readouterr().out == md + "\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["result.json", "result.md"]  # no temporary files left


def test_write_result_replaces_earlier_files(tmp_path, capsys):
    write_result = _load("_report").write_result
    out = tmp_path / "r.json"
    out.write_text("old, longer than the new file " * 10)
    out.with_suffix(".md").write_text("old table " * 10)
    write_result(out, {"n": 1}, ["new"])
    assert json.loads(out.read_text()) == {"n": 1} and out.with_suffix(".md").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.md"]
    assert capsys.readouterr().out == "new\n"


@pytest.mark.parametrize("name", ["vocoder", "convert_quality", "speed", "serve_load", "paired",
                                  "mcd_gap", "robustness"])
def test_scripts_use_the_shared_writer_when_loaded_by_path(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the import must not depend on the working directory
    mod = _load(name)
    assert mod.write_result is sys.modules["_report"].write_result
    assert Path(sys.modules["_report"].__file__) == BENCHMARKS / "_report.py"


@pytest.mark.parametrize("cwd", ["repo", "benchmarks", "elsewhere"])
def test_vocoder_script_starts_from_any_working_directory(cwd, tmp_path):
    where = {"repo": REPO, "benchmarks": BENCHMARKS, "elsewhere": tmp_path}[cwd]
    done = subprocess.run([sys.executable, str(BENCHMARKS / "vocoder.py"), "--help"], cwd=where,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "--through" in done.stdout


def test_speed_steps_configs_that_need_pitch_features(tmp_path):
    """benchmarks/speed.py feeds each config what its system trains on: a pitch-conditioned ClsVC
    (model.f0_condition, as `real`) gets pitch features beside the mels, a plain one none."""
    from helpers import TINY

    configs = []
    for name, extra in (("plain", []), ("pitch", ["model.f0_condition: true"])):
        path = tmp_path / f"{name}.yaml"
        model = [t.split("=", 1) for t in TINY if t.startswith("model.")]
        lines = ["base: cpu", "model:"] + [f"  {k.split('.', 1)[1]}: {v}" for k, v in model]
        lines += [f"  {e.split('.', 1)[1]}" for e in extra]
        path.write_text("\n".join(lines) + "\n")
        configs.append(str(path))
    rows = _load("speed").train_speed(configs, batch=2, frames=32, rounds=1, warmup=0)
    assert [r["config"] for r in rows] == configs and all(r["s_per_step"] > 0 for r in rows)


def test_speed_times_the_lean_paper_network_against_autovc():
    """The default comparison of benchmarks/speed.py: AutoVC first (the ratios are to it), then
    ClsVC at the paper's width on AutoVC's layers and on the lean ones; every one of them takes a
    real training step, and the lean network is the smaller."""
    speed = _load("speed")
    rows = speed.train_speed(list(speed.TRAIN_CONFIGS), batch=2, frames=32, rounds=1, warmup=0)
    assert [r["system"] for r in rows] == ["autovc", "clsvc", "clsvc"] and rows[0]["ratio"] == 1.0
    assert all(r["s_per_step"] > 0 for r in rows) and rows[2]["weights"] < rows[1]["weights"]


def _scores(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """A minimal scores.csv: (pair, condition, kind, wer) rows."""
    lines = ["pair,condition,kind,wer"] + [",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_paired_differences_use_only_the_pairs_both_runs_scored(tmp_path, capsys):
    mod = _load("paired")
    a = _scores(tmp_path / "a.csv", [("p1", "seen", "converted", "0.5"), ("p2", "seen", "converted", "0.3"),
                                     ("p3", "seen", "converted", "0.9"), ("p1b", "seen", "bound", "0.1"),
                                     ("u1", "unseen", "converted", "0.8")])
    b = _scores(tmp_path / "b.csv", [("p1", "seen", "converted", "0.4"), ("p2", "seen", "converted", "0.1"),
                                     ("p3", "seen", "converted", ""), ("p4", "seen", "converted", "0.0")])
    mod.main([str(a), str(b), "--out", str(tmp_path / "r.json")])
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["shared_pairs"] == 3  # p1, p2, p3; bound rows, other conditions and p4 (A lacks it) are out
    (wer,) = res["metrics"]  # the only metric column present
    assert wer["n"] == 2  # p3 has no WER in B
    assert wer["a"] == pytest.approx(0.4) and wer["b"] == pytest.approx(0.25)
    assert wer["diff"] == pytest.approx(-0.15)
    assert wer["ci95"] == pytest.approx(12.706 * np.std([-0.1, -0.2], ddof=1) / np.sqrt(2), rel=1e-3)  # Student t, 1 df
    assert "| wer | 2 | 0.400 | 0.250 | -0.150" in capsys.readouterr().out


def test_paired_refuses_runs_without_shared_pairs(tmp_path):
    mod = _load("paired")
    a = _scores(tmp_path / "a.csv", [("p1", "seen", "converted", "0.5")])
    b = _scores(tmp_path / "b.csv", [("p9", "seen", "converted", "0.5")])
    with pytest.raises(SystemExit, match="share no seen pairs"):
        mod.main([str(a), str(b), "--out", str(tmp_path / "r.json")])
    assert not (tmp_path / "r.json").exists()


def _pairs_csv(eval_dir: Path, corpus: Path) -> list[tuple[str, str]]:
    """An evaluation folder whose pairs.csv holds two parallel seen pairs between the tiny corpus'
    speakers (and one non-parallel and one any-to-many pair, which the gap script skips)."""
    spk = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    eval_dir.mkdir()
    head = "name,condition,source_speaker,target_speaker,parallel,source_audio,target_audio"
    rows = [("seen_000", "seen", spk[0], spk[1], "1"), ("seen_001", "seen", spk[1], spk[0], "1"),
            ("seen_002", "seen", spk[0], spk[1], "0"), ("any2many_003", "any2many", spk[0], spk[1], "1")]
    lines = [head] + [f"{n},{c},{a},{b},{par},{corpus / a / f'{a}_006.wav'},{corpus / b / f'{b}_006.wav'}"
                      for n, c, a, b, par in rows]
    (eval_dir / "pairs.csv").write_text("\n".join(lines) + "\n")
    return [(a, b) for _, c, a, b, par in rows if c == "seen" and par == "1"]


def test_mcd_gap_scores_each_rendering_of_the_parallel_pairs(trained_run, corpus, tmp_path):
    """benchmarks/mcd_gap.py: the target sentence vocoded, reconstructed in its own voice and
    converted from the source, each scored against the recording; the steps are their per-pair
    differences, and the rendering nearest the recording is its own mel through the vocoder."""
    import clsvc
    from clsvc.audio import load_wav, trim_silence
    from clsvc.evaluation.mcd import audio_mcd

    mod = _load("mcd_gap")
    pairs = _pairs_csv(tmp_path / "eval", corpus)
    ckpt = trained_run / "checkpoints" / "last.pt"
    mod.main(["--eval", str(tmp_path / "eval"), "--checkpoint", str(ckpt), "--vocoder", "griffin-lim",
              "--threads", "1", "--out", str(tmp_path / "gap.json")])
    res = json.loads((tmp_path / "gap.json").read_text())
    assert res["pairs"] == 2 and res["vocoder"] == "griffin-lim"
    per = res["per_pair"]
    assert all(len(per[k]) == 2 for k in ("vocoded", "reconstructed", "converted"))
    gap = res["steps"]["voice change (converted − reconstructed)"]["mean"]
    assert gap == pytest.approx(np.mean(np.subtract(per["converted"], per["reconstructed"])))
    # The first pair's conversion, made here the same way, scores the same.
    vc = clsvc.load(str(ckpt), vocoder="griffin-lim")
    src, tgt = pairs[0]
    real = load_wav(corpus / tgt / f"{tgt}_006.wav", vc.mel_cfg)
    wav = vc.convert(trim_silence(load_wav(corpus / src / f"{src}_006.wav", vc.mel_cfg), 40.0, vc.mel_cfg),
                     target_speaker=tgt)
    assert per["converted"][0] == pytest.approx(audio_mcd(real, wav, vc.sample_rate), rel=1e-6)
    assert np.mean(per["vocoded"]) < np.mean(per["converted"])


def test_mcd_gap_target_code_decodes_the_aligned_code_through_the_conversion_path(trained_run, corpus, tmp_path):
    """--target-code: the model's own conversion path decodes the code it is given, and only while
    asked; a recording's code aligned onto itself is its own code (DTW on identical frames is the
    diagonal), so the rendering with it is the conversion; another code changes the output."""
    import torch

    import clsvc

    mod = _load("mcd_gap")
    pairs = _pairs_csv(tmp_path / "eval", corpus)
    ckpt = str(trained_run / "checkpoints" / "last.pt")
    vc = clsvc.load(ckpt, vocoder="griffin-lim")
    src, tgt = pairs[0]
    ref = vc.reference(corpus / src / f"{src}_006.wav")
    own = vc.model.content(torch.from_numpy(ref.mel).unsqueeze(0))
    code = mod.target_code(vc, ref.mel, ref.mel)
    assert torch.equal(code, own)
    spk = vc.speaker_embedding(tgt)
    plain = vc.convert_mel(ref, spk)
    with mod.content_replaced(vc.model, code):
        assert np.allclose(vc.convert_mel(ref, spk), plain, atol=1e-6)
    with mod.content_replaced(vc.model, torch.zeros_like(own)):
        assert np.abs(vc.convert_mel(ref, spk) - plain).max() > 1e-3
    assert "encode" not in vars(vc.model)  # the class's method again
    assert np.array_equal(vc.convert_mel(ref, spk), plain)
    mod.main(["--eval", str(tmp_path / "eval"), "--checkpoint", ckpt, "--vocoder", "griffin-lim", "--target-code",
              "--threads", "1", "--out", str(tmp_path / "gap.json")])
    res = json.loads((tmp_path / "gap.json").read_text())
    per = res["per_pair"]
    assert len(per["target code"]) == 2
    step = res["steps"]["the source's code (converted − target code)"]["mean"]
    assert step == pytest.approx(np.mean(np.subtract(per["converted"], per["target code"])))


def test_mcd_gap_target_code_refuses_a_model_without_a_content_code(system_run, corpus, tmp_path):
    mod = _load("mcd_gap")
    _pairs_csv(tmp_path / "eval", corpus)
    with pytest.raises(SystemExit, match=r"--target-code: .* is not a ClsVC model \(system autovc\)"):
        mod.main(["--eval", str(tmp_path / "eval"), "--checkpoint", str(system_run("autovc").ckpt), "--vocoder",
                  "griffin-lim", "--target-code", "--threads", "1", "--out", str(tmp_path / "gap.json")])
    assert not (tmp_path / "gap.json").exists()


def test_mcd_gap_refuses_a_folder_without_pairs(tmp_path):
    mod = _load("mcd_gap")
    with pytest.raises(SystemExit, match="pairs.csv: not found"):
        mod.main(["--eval", str(tmp_path), "--checkpoint", "x.pt", "--out", str(tmp_path / "gap.json")])
    assert not (tmp_path / "gap.json").exists()


def test_robustness_degrades_the_source_and_scores_each_model_on_the_same_audio(trained_run, corpus, tmp_path):
    """benchmarks/robustness.py: each condition's source is made once per pair (seeded), every
    model converts that same audio, and the scores are the conversion's against the real target."""
    import clsvc
    from clsvc.audio import load_wav
    from clsvc.evaluation.mcd import audio_mcd

    mod = _load("robustness")
    pairs = _pairs_csv(tmp_path / "eval", corpus)
    ckpt = str(trained_run / "checkpoints" / "last.pt")
    mod.main(["--eval", str(tmp_path / "eval"), "--checkpoint", ckpt, ckpt, "--vocoder", "griffin-lim",
              "--conditions", "clean,pink10,reverb0.6", "--no-asr", "--threads", "1",
              "--out", str(tmp_path / "r.json")])
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["pairs"] == 2 and res["conditions"] == ["clean", "pink10", "reverb0.6"]
    per = res["models"][ckpt]
    assert set(per) == {"clean", "pink10", "reverb0.6"}
    assert per["clean"]["vs_clean"]["mcd_audio"]["diff"] == 0.0
    assert per["pink10"]["vs_reference"]["mcd_audio"]["diff"] == 0.0      # the same model on the same audio
    assert per["pink10"]["mcd_audio"] != per["clean"]["mcd_audio"]          # the noise changed the conversion
    # The noisy conversions, remade here from the same seeds, score the same.
    vc = clsvc.load(ckpt, vocoder="griffin-lim")
    mcds = []
    for src, tgt in pairs:
        path = str(corpus / src / f"{src}_006.wav")
        noisy = mod.degrade(load_wav(path, vc.mel_cfg), "pink10", vc.sample_rate,
                            np.random.default_rng(mod._seed(path, "pink10")), None)
        wav = vc.convert(noisy, target_speaker=tgt)
        mcds.append(audio_mcd(load_wav(corpus / tgt / f"{tgt}_006.wav", vc.mel_cfg), wav, vc.sample_rate))
    assert per["pink10"]["mcd_audio"] == pytest.approx(np.mean(mcds), rel=1e-6)
    assert np.isfinite(per["pink10"]["cos_tgt"]) and np.isnan(per["pink10"]["wer"])
    assert (tmp_path / "r.md").read_text().count("| pink10 |") == 2


def test_robustness_degrades_the_reference_clips_of_one_shot_pairs(trained_run, corpus, tmp_path):
    """--degrade references: the source stays clean, each reference clip is degraded (seeded by its
    file), and the conversion is the model's one-shot conversion from those clips; a non-parallel
    pair has no MCD, and an evaluation without one-shot pairs is refused."""
    import clsvc
    from clsvc.audio import load_wav
    from clsvc.dvector import embed_wav
    from clsvc.evaluation.similarity import cosine

    mod = _load("robustness")
    spk = sorted(p.name for p in corpus.iterdir() if p.is_dir())
    (tmp_path / "eval").mkdir()
    src, refs = corpus / spk[0] / f"{spk[0]}_006.wav", [corpus / spk[1] / f"{spk[1]}_00{i}.wav" for i in (1, 2)]
    (tmp_path / "eval" / "pairs.csv").write_text(
        "name,condition,source_speaker,target_speaker,parallel,source_audio,target_audio,ref_audio,transcript\n"
        f"unseen_000,unseen,{spk[0]},{spk[1]},0,{src},{corpus / spk[1] / f'{spk[1]}_006.wav'},"
        f"{refs[0]};{refs[1]},\n")
    ckpt = str(trained_run / "checkpoints" / "last.pt")
    args = ["--eval", str(tmp_path / "eval"), "--checkpoint", ckpt, "--vocoder", "griffin-lim", "--no-asr",
            "--threads", "1", "--degrade", "references", "--condition", "unseen", "--conditions", "clean,white10"]
    mod.main(args + ["--out", str(tmp_path / "r.json")])
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["degrade"] == "references" and res["pairs"] == 1
    per = res["models"][ckpt]
    assert np.isnan(per["white10"]["mcd_audio"]) and np.isnan(per["white10"]["wer"])
    vc = clsvc.load(ckpt, vocoder="griffin-lim")
    sr = vc.sample_rate
    noisy = [mod.degrade(load_wav(r, vc.mel_cfg), "white10", sr, np.random.default_rng(mod._seed(str(r), "white10")),
                         None) for r in refs]
    out = vc.convert(load_wav(src, vc.mel_cfg), targets=noisy)
    target = mod.voice_centroid(corpus / spk[1], vc.mel_cfg, frozenset(map(str, refs)))
    assert per["white10"]["cos_tgt"] == pytest.approx(cosine(embed_wav(out, sr), target), abs=1e-5)
    assert per["white10"]["cos_tgt"] != per["clean"]["cos_tgt"]                 # the noise reached the voice
    with pytest.raises(SystemExit, match="no one-shot"):
        mod.main(args[:-4] + ["--condition", "seen", "--out", str(tmp_path / "s.json")])
    assert not (tmp_path / "s.json").exists()
    # --max-refs 1: the conversion from the first clip alone, judged against the same centroid.
    mod.main(args[:-1] + ["clean", "--max-refs", "1", "--out", str(tmp_path / "one.json")])
    one = json.loads((tmp_path / "one.json").read_text())
    assert one["max_refs"] == 1
    assert one["per_pair"]["names"] == ["unseen_000"]
    assert one["per_pair"]["scores"][ckpt]["clean"]["cos_tgt"] == [one["models"][ckpt]["clean"]["cos_tgt"]]
    out1 = vc.convert(load_wav(src, vc.mel_cfg), targets=[load_wav(refs[0], vc.mel_cfg)])
    assert one["models"][ckpt]["clean"]["cos_tgt"] == pytest.approx(cosine(embed_wav(out1, sr), target), abs=1e-5)
    for bad in (["--max-refs", "0"], ["--max-refs", "1", "--degrade", "source"]):
        with pytest.raises(SystemExit, match="--max-refs"):
            mod.main(args + bad + ["--out", str(tmp_path / "bad.json")])
    assert not (tmp_path / "bad.json").exists()


def test_robustness_degradations_have_the_stated_levels():
    mod = _load("robustness")
    rng = np.random.default_rng(0)
    speech = np.sin(np.linspace(0, 2000, 16000)) * 0.3
    noisy = mod.mix_at_snr(speech, rng.standard_normal(8000), 10.0)      # shorter noise is repeated
    added = noisy - speech
    assert 10 * np.log10(np.mean(speech**2) / np.mean(added**2)) == pytest.approx(10.0, abs=1e-6)
    h = mod.room_response(0.5, 16000, rng)
    assert h[0] == 1.0 and len(h) == 8000
    assert 10 * np.log10(1.0 / np.sum(h[1:] ** 2)) == pytest.approx(mod.DRR_DB)   # direct-to-reverberant ratio
    late, early = np.sum(h[4000:] ** 2), np.sum(h[1:4000] ** 2)
    assert late < early / 100                                              # -30 dB halfway to RT60, roughly
    pink = mod.coloured_noise(1 << 14, 1.0, rng)
    spec = np.abs(np.fft.rfft(pink)) ** 2
    assert spec[100:200].mean() > 5 * spec[2000:4000].mean()               # 1/f: the low band is louder
    assert mod.parse_condition("pink20") == ("pink", 20.0) and mod.parse_condition("clean") == ("clean", 0.0)
    assert mod.parse_condition("reverb0.4") == ("reverb", 0.4)
    for bad in ("pink", "reverb0", "loud20", "clean3"):
        with pytest.raises(SystemExit, match="--conditions"):
            mod.parse_condition(bad)
