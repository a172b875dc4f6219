"""The pitch condition of ClsVC's decoder (``model.f0_condition``, AutoVC-F0's remedy):
clsvc.pitch's F0 tracking and features, ``clsvc preprocess --f0``, training, resuming and
converting with it, and checkpoints made without it."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.audio import load_wav, trim_silence, wav_to_mel
from clsvc.checkpoint import load_checkpoint, save_checkpoint
from clsvc.cli import main as cli_main
from clsvc.config import MelConfig, load_config
from clsvc.data import FeatureSet, preprocess, read_manifest
from clsvc.data.manifest import f0_path, feature_path, read_features_info
from clsvc.errors import ClsvcError
from clsvc.models import Reference, build_system
from clsvc.pitch import F0_DIM, f0_features, frame_f0
from clsvc.training import train

from helpers import SPEAKERS, SR, full_and_resumed, synth_utterance, tiny_config

F0_ON = "model.f0_condition=true"
MEL = MelConfig()


@pytest.fixture(scope="module")
def f0_feats(corpus, tmp_path_factory):
    """The shared corpus preprocessed with ``--f0`` through the CLI (same split as ``features``)."""
    out = tmp_path_factory.mktemp("features-f0")
    assert cli_main(["preprocess", str(corpus), "--out", str(out), "--f0", "--jobs", "1", "--quiet",
                     "--holdout-regex", "_006$"]) == 0
    return out


@pytest.fixture(scope="module")
def f0_run(f0_feats, tmp_path_factory):
    """A tiny f0-conditioned ClsVC (with the conversion-code loss) trained in one go and stopped
    half-way and resumed: 8 steps each."""
    return full_and_resumed(f0_feats, tmp_path_factory.mktemp("f0-runs"), F0_ON, "loss.convert_code=0.5")


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2 s source utterance of spk_a (not in the corpus)."""
    path = tmp_path_factory.mktemp("f0-audio") / "src.wav"
    sf.write(path, synth_utterance(*SPEAKERS["spk_a"], seed=911, seconds=2.0), SR)
    return path


# ---------------------------------------------------------------------------------------- pitch


def test_frame_f0_reads_a_tone_and_silence_on_the_mel_grid():
    t = np.arange(int(1.2 * SR)) / SR
    phase = 2 * np.pi * 200.0 * t
    wav = (0.3 * sum(np.sin(k * phase) / k for k in range(1, 6))).astype(np.float32)
    wav[: int(0.4 * SR)] = 0.0  # 0.4 s of silence, then 0.8 s of a 200 Hz harmonic tone
    n = len(wav_to_mel(wav, MEL))
    f0 = frame_f0(wav, n, MEL)
    assert f0.shape == (n,) and f0.dtype == np.float32 and n == 1 + len(wav) // MEL.hop_length
    hop_s = MEL.hop_length / SR
    silence = f0[: int(0.4 / hop_s) - 3]  # frames whose analysis window is all silence
    tone = f0[int(0.4 / hop_s) + 3: -3]
    assert (silence == 0).all()
    assert (tone > 0).all() and np.abs(tone - 200.0).max() < 5.0, tone
    # Cut or padded (unvoiced) to the frames it is asked for.
    assert np.array_equal(frame_f0(wav, n + 7, MEL)[:n], f0) and (frame_f0(wav, n + 7, MEL)[n:] == 0).all()
    assert np.array_equal(frame_f0(wav, 10, MEL), f0[:10])
    assert frame_f0(np.zeros(0, np.float32), 5, MEL).tolist() == [0.0] * 5
    with pytest.raises(ClsvcError, match="NaN"):
        frame_f0(np.full(4000, np.nan, np.float32), 16, MEL)


def test_f0_features_drop_the_speakers_level_and_range_and_zero_unvoiced():
    rng = np.random.default_rng(0)
    f0 = 120.0 * np.exp(0.15 * rng.standard_normal(50))
    f0[[0, 1, 10, 49]] = 0.0  # unvoiced frames
    feats = f0_features(f0)
    assert feats.shape == (50, F0_DIM) and feats.dtype == np.float32
    voiced = f0 > 0
    assert np.array_equal(feats[:, 1], voiced.astype(np.float32))
    assert (feats[~voiced] == 0).all()
    z = feats[voiced, 0]
    assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, abs=1e-4)
    # Another speaker's pitch level (F0 times a constant) and range (log F0 spread) change nothing.
    np.testing.assert_allclose(f0_features(f0 * 1.8), feats, atol=1e-5)
    wider = np.where(voiced, 200.0 * (f0 / 120.0) ** 1.5, 0.0)
    np.testing.assert_allclose(f0_features(wider), feats, atol=1e-5)
    # Leading dims are independent utterances; unvoiced padding changes nothing of the rest.
    both = f0_features(np.stack([f0, f0 * 0.5]))
    assert both.shape == (2, 50, F0_DIM) and np.allclose(both[0], both[1], atol=1e-5)
    np.testing.assert_allclose(f0_features(np.concatenate([f0, np.zeros(20)]))[:50], feats, atol=1e-6)
    # Fewer than 2 voiced frames: nothing to normalise by, zeros in both channels.
    assert (f0_features(np.array([0.0, 150.0, 0.0])) == 0).all()
    assert (f0_features(np.zeros(8)) == 0).all()


# ---------------------------------------------------------------------------------------- preprocess


def test_preprocess_f0_writes_aligned_contours(f0_feats):
    entries = read_manifest(f0_feats)
    assert read_features_info(f0_feats)["preprocess"]["f0"] is True
    assert len(entries) == 18
    for e in entries:
        f0 = np.load(f0_path(feature_path(f0_feats, e)))
        mel = np.load(feature_path(f0_feats, e))
        assert f0.dtype == np.float32 and f0.shape == (e.frames,) == (len(mel),)
        true_f0 = SPEAKERS[e.speaker][0]
        assert abs(np.median(f0[f0 > 0]) / true_f0 - 1) < 0.1, (e.speaker, np.median(f0[f0 > 0]))
    # Exactly the contour of the (trimmed) samples the mel was made from.
    e = entries[0]
    wav = trim_silence(load_wav(e.source, MEL), 40.0, MEL)
    assert np.array_equal(np.load(f0_path(feature_path(f0_feats, e))), frame_f0(wav, e.frames, MEL))


def test_preprocess_f0_resumes_a_folder_made_without_or_interrupted(corpus, tmp_path):
    out = tmp_path / "feats"
    some = ["spk_a", "spk_b"]
    preprocess(corpus, out, MEL, jobs=1, progress=False, speakers=some)  # no --f0 yet
    entries = read_manifest(out)
    assert not any(f0_path(feature_path(out, e)).exists() for e in entries)
    assert read_features_info(out)["preprocess"]["f0"] is False

    preprocess(corpus, out, MEL, jobs=1, progress=False, speakers=some, f0=True)  # adds every contour
    assert all(f0_path(feature_path(out, e)).is_file() for e in entries)
    assert read_features_info(out)["preprocess"]["f0"] is True

    # An interrupted run: one contour missing. Only that utterance is made again.
    lost, kept = feature_path(out, entries[0]), feature_path(out, entries[1])
    f0_path(lost).unlink()
    before = kept.stat().st_mtime_ns, f0_path(kept).stat().st_mtime_ns
    preprocess(corpus, out, MEL, jobs=1, progress=False, speakers=some, f0=True)
    assert f0_path(lost).is_file() and np.load(f0_path(lost)).shape == (entries[0].frames,)
    assert (kept.stat().st_mtime_ns, f0_path(kept).stat().st_mtime_ns) == before


def test_training_without_f0_files_is_one_line_naming_the_fix(features, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ClsvcError) as err:
        train(tiny_config(F0_ON, "train.max_steps=2"), features, run, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and ".f0.npy" in msg and "clsvc preprocess` with --f0" in msg and "same --out" in msg
    assert not run.exists()  # refused before the run folder was made


def test_config_refuses_f0_condition_outside_clsvc():
    with pytest.raises(ClsvcError, match="model.f0_condition"):
        load_config("cpu", ["model.system=autovc", F0_ON])
    assert load_config("cpu").model.f0_condition is False  # off unless asked for


# ---------------------------------------------------------------------------------------- model


def test_the_batch_carries_pitch_features_aligned_with_the_crops(f0_feats):
    data = FeatureSet(f0_feats, ("train",), with_f0=True)
    assert FeatureSet(f0_feats, ("train",)).f0s is None  # only when asked for
    batch = data.sample(6, 200, torch.Generator().manual_seed(0))  # longer than every utterance: padded
    assert batch.f0 is not None and batch.f0.shape == (6, 200, F0_DIM)
    assert set(batch.extra()) == {"f0"} and batch.to("cpu").f0 is not None
    for row, length in enumerate(batch.lengths.tolist()):
        assert (batch.f0[row, length:] == 0).all()  # padding is unvoiced
        assert batch.f0[row, :length, 1].sum() > 0.5 * length
    # A crop is the whole utterance's features (z-scored over the utterance), cut like the mel.
    batch = data.sample(4, 32, torch.Generator().manual_seed(1))
    for row in range(4):
        crop = batch.mel[row].numpy()
        i, s = next((i, s) for i, m in enumerate(data.mels) for s in range(len(m) - 31)
                    if np.array_equal(m[s:s + 32], crop))
        assert np.array_equal(batch.f0[row].numpy(), data.f0s[i][s:s + 32])


def test_a_tiny_f0_model_trains_on_a_fixed_batch_with_the_sources_own_pitch(f0_feats):
    cfg = tiny_config(F0_ON, "loss.convert_code=0.5", "model.voice_warp=1.2")
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    model = build_system(cfg)
    assert model.batch_inputs(cfg) == ("mel", "f0")
    # The decoder reads [C_x, pitch features, S_x / |S_x|].
    assert model.decoder.pre.input_size == cfg.model.content_dim + F0_DIM + cfg.model.speaker_dim
    batch = FeatureSet(f0_feats, ("train",), with_f0=True).sample(4, 32, torch.Generator().manual_seed(0))
    seen = []
    decode = model.decode

    def spy(content, speaker, f0=None):
        seen.append(f0)
        return decode(content, speaker, f0)

    model.decode = spy
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    losses = []
    for _ in range(6):
        loss, terms = model(batch.mel, batch.lengths, batch.speaker, **batch.extra())
        assert torch.isfinite(loss) and "conv_code" in terms
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(terms["recon"].detach()))
    assert losses[-1] < losses[0], losses
    # Every decoding, the conversions included, got the batch's own (unperturbed) pitch.
    assert len(seen) == 12 and all(f is batch.f0 for f in seen)
    with pytest.raises(ClsvcError, match="f0_condition"):
        model(batch.mel, batch.lengths, batch.speaker)
    # The pitch channels are wired: another contour gives another output.
    model.decode = decode
    model.eval()
    with torch.no_grad():
        s = torch.nn.functional.normalize(model.encode(batch.mel)[0], dim=-1)
        c = model.encode(batch.mel)[1]
        a = model.decode(c, s, batch.f0)[1]
        b = model.decode(c, s, torch.flip(batch.f0, dims=[1]))[1]
    assert not torch.allclose(a, b)


def test_f0_training_resumes_exactly(f0_run):
    full, part = f0_run.full, f0_run.part
    assert [r["step"] for r in full.rows] == [r["step"] for r in part.rows] == list(range(1, 9))
    for a, b in zip(full.rows, part.rows, strict=True):
        for k in sorted(set(a) - {"kind", "step", "minutes"}):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    assert all(np.isfinite(r["total"]) for r in full.rows) and full.val
    wa, wb = full.weights(), part.weights()
    assert set(wa) == set(wb) and all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
    assert load_checkpoint(full.ckpt)["config"]["model"]["f0_condition"] is True


# ---------------------------------------------------------------------------------------- conversion


def test_an_f0_checkpoint_converts_with_the_sources_pitch_in_chunks(f0_run, source, corpus):
    vc = clsvc.load(f0_run.full.ckpt)
    assert vc.cfg.model.f0_condition
    ref = vc.reference(source)
    cond = vc.model.source_condition(ref)
    assert cond.shape == (len(ref.mel), F0_DIM)
    np.testing.assert_array_equal(cond.numpy(), f0_features(frame_f0(ref.audio(), len(ref.mel), vc.mel_cfg)))
    target = corpus / "spk_b" / "spk_b_001.wav"
    wav = vc.convert(source, [target])
    assert wav.dtype == np.float32 and np.isfinite(wav).all() and abs(len(wav) - 2.0 * SR) < 0.1 * SR

    # A long input: chunks of 48 frames overlapping by 8, each given its own frames' pitch.
    small = clsvc.load(f0_run.full.ckpt, chunk_frames=48, overlap_frames=8)
    spk = small.embed(target)
    calls = []
    convert = small.model.convert

    def spy(mel, speaker, src=None):
        calls.append((mel.shape[1], src))
        return convert(mel, speaker, src)

    small.model.convert = spy
    out = small.convert_mel(ref, spk)
    assert out.shape == ref.mel.shape and np.isfinite(out).all() and len(ref.mel) > 2 * 48
    assert len(calls) >= 3
    start = 0
    for frames, src in calls:
        assert src.shape == (frames, F0_DIM)
        assert torch.equal(src.cpu(), cond[start:start + frames])
        start += frames - 8
    # Whole, the same source converts to the same length.
    assert vc.convert_mel(ref, spk).shape == ref.mel.shape
    # A mel alone has no audio to track the pitch on: one line saying what to pass.
    with pytest.raises(ClsvcError, match="f0_condition") as err:
        vc.convert_mel(ref.mel, spk)
    assert "\n" not in str(err.value)


def test_a_checkpoint_without_f0_condition_loads_and_converts_as_before(trained_run, source, tmp_path):
    ckpt = load_checkpoint(trained_run / "checkpoints" / "last.pt")
    assert ckpt["config"]["model"]["f0_condition"] is False
    # A checkpoint written before the switch existed has no such key: it means off.
    old = dict(ckpt, config={**ckpt["config"], "model": {k: v for k, v in ckpt["config"]["model"].items()
                                                          if k != "f0_condition"}})
    save_checkpoint(tmp_path / "old.pt", old)
    new_vc, old_vc = clsvc.load(trained_run / "checkpoints" / "last.pt"), clsvc.load(tmp_path / "old.pt")
    for vc in (new_vc, old_vc):
        cfg = vc.cfg.model
        assert not cfg.f0_condition and vc.model.f0_dim == 0
        assert vc.model.decoder.pre.input_size == cfg.content_dim + cfg.speaker_dim
        assert vc.model.source_condition(Reference(np.zeros((40, 80), np.float32))) is None
    ref = new_vc.reference(source)
    spk = new_vc.embed(source)
    a = new_vc.convert_mel(ref, spk)
    assert np.array_equal(a, old_vc.convert_mel(ref, spk))
    assert np.array_equal(a, new_vc.convert_mel(ref.mel, spk))  # a mel alone still converts


# ---------------------------------------------------------------------------------------- the other users


def test_reconstruct_and_evaluation_give_the_model_the_mels_own_audio(f0_run, corpus, tmp_path):
    from types import SimpleNamespace

    from clsvc.data.manifest import load_aligned_wav
    from clsvc.evaluation.scoring import AudioCache
    from clsvc.evaluation.suite import _convert

    ckpt = f0_run.full.ckpt
    # Recordings with 0.3 s of silence on both sides, which preprocessing trims.
    quiet = tmp_path / "corpus"
    for spk in ("spk_a", "spk_b"):
        (quiet / spk).mkdir(parents=True)
        for f in sorted((corpus / spk).glob("*.wav"))[:3]:
            pad = np.zeros(int(0.3 * SR), np.float32)
            sf.write(quiet / spk / f.name, np.concatenate([pad, sf.read(f, dtype="float32")[0], pad]), SR)
    feats = tmp_path / "feats"
    preprocess(quiet, feats, MEL, jobs=1, progress=False, keep_wav=True)
    e = read_manifest(feats)[0]
    mel = np.load(feature_path(feats, e))
    vc = clsvc.load(ckpt)
    # `clsvc reconstruct`: each mel decoded with its own voice and the pitch of its aligned waveform.
    assert cli_main(["reconstruct", "--data", str(feats), "--checkpoint", str(ckpt), "--out", str(tmp_path / "rec"),
                     "--quiet"]) == 0
    wav = load_aligned_wav(feats, e, MEL.hop_length).astype(np.float32) / 32767.0
    ref = Reference(mel, wav=wav)
    np.testing.assert_allclose(np.load(tmp_path / "rec" / e.feature), vc.convert_mel(ref, vc.voice([ref])), atol=1e-6)
    # Evaluation: the source's waveform is the trimmed recording its stored mel was made from.
    audio = AudioCache(feats, MEL)
    voice = vc.speaker_embedding("spk_b")
    pair = SimpleNamespace(refs=[], target=SimpleNamespace(speaker="spk_b"), source=e)
    got = _convert(vc, pair, audio.mel(e), audio)
    trimmed = trim_silence(load_wav(e.source, MEL), 40.0, MEL)
    assert len(trimmed) < len(load_wav(e.source, MEL)) - SR // 2
    want = vc.convert_mel(Reference(mel, wav=trimmed), voice)
    assert got.shape == mel.shape and np.array_equal(got, want)
    assert not np.allclose(want, vc.convert_mel(Reference(mel, wav=load_wav(e.source, MEL)), voice))


def test_an_experiment_preprocesses_the_contours_its_systems_need(corpus, tmp_path):
    import yaml

    from clsvc.experiment import _features, load_experiment

    exp = {"name": "f0", "data": {"corpus": str(corpus), "holdout_regex": "_006$"},
           "systems": {"ClsVC": {"config": "cpu"}, "ClsVC-F0": {"config": "cpu", "overrides": [F0_ON]}}}
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(exp))
    feats = _features(load_experiment(tmp_path / "a.yaml"), tmp_path / "work", progress=False)
    assert all(f0_path(feature_path(feats, e)).is_file() for e in read_manifest(feats))
