"""Mel-cepstral distortion and the ASR content scorers on generated audio (seconds, CPU only)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import SR, synth_utterance

pytest.importorskip("librosa")

from clsvc.audio import wav_to_mel  # noqa: E402
from clsvc.config import MelConfig  # noqa: E402

CFG = MelConfig()


@pytest.fixture(scope="module")
def utt():
    """One 1.2 s utterance of speaker "a" (f0 110 Hz, tract 0.95)."""
    return synth_utterance(110.0, 0.95, seed=1)


@pytest.fixture(scope="module")
def mcd_mod():
    pytest.importorskip("pyworld")
    pytest.importorskip("pysptk")
    from clsvc.evaluation import mcd

    return mcd


def both(m, ref: np.ndarray, test: np.ndarray, **kw) -> tuple[float, float]:
    """(audio MCD, feature MCD) of the same pair."""
    return (m.audio_mcd(ref, test, SR, **kw),
            m.feature_mcd(wav_to_mel(ref, CFG), wav_to_mel(test, CFG), CFG, **kw))


def pad(wav: np.ndarray, seconds: float, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    side = lambda: (noise * rng.standard_normal(n)).astype(np.float32)  # noqa: E731
    return np.concatenate([side(), wav, side()])


# ----------------------------------------------------------------------------------------------
# MCD


def test_identical_is_zero(mcd_mod, utt):
    audio, feature = both(mcd_mod, utt, utt)
    assert audio == 0.0 and feature == 0.0


def test_shapes_and_protocol(mcd_mod, utt):
    c, e = mcd_mod.mcep_from_wav(utt, SR)
    assert c.shape == (len(e), 25) and len(e) == pytest.approx(len(utt) / SR / 0.005, abs=2)
    c, e = mcd_mod.mcep_from_mel(wav_to_mel(utt, CFG), CFG, order=12)
    assert c.shape == (1 + len(utt) // CFG.hop_length, 13) and e.shape == (c.shape[0],)
    p = mcd_mod.PROTOCOL
    assert isinstance(p, str) and "\n" not in p
    for word in ("dynamic time warping", "c0", "40 dB", "order-24", "α = 0.42", "5 ms"):
        assert word in p, word


def test_mcd_constant():
    from clsvc.evaluation.mcd import mcd

    ref = np.zeros((20, 25))
    test = ref.copy()
    test[:, 1] = 1.0
    test[:, 0] = 5.0  # c0 is excluded
    assert mcd(ref, test) == pytest.approx(10 / math.log(10) * math.sqrt(2), rel=1e-9)


def test_mel_cepstrum_scale(mcd_mod):
    """ln amp = a + b cos(pi (n + 1/2) / N) over the mel bins -> c0 = a, c1 = b (SPTK scale)."""
    n = CFG.n_mels
    ln_amp = -3.0 + 0.7 * np.cos(np.pi * (np.arange(n) + 0.5) / n)
    from clsvc.audio import amp_to_norm

    mel = amp_to_norm(np.exp(ln_amp)[None, :].repeat(4, axis=0), CFG)
    c, e = mcd_mod.mcep_from_mel(mel, CFG)
    assert c[0, 0] == pytest.approx(-3.0, abs=1e-3)
    assert c[0, 1] == pytest.approx(0.7, abs=1e-3)
    assert np.abs(c[0, 2:]).max() < 1e-3
    assert e[0] == pytest.approx(10 * np.log10(np.mean(np.exp(2 * ln_amp))), abs=1e-3)


def test_grows_with_formant_shift(mcd_mod, utt):
    """Same vowels and pitch contour, increasingly scaled vocal tract."""
    scores = [both(mcd_mod, utt, synth_utterance(110.0, tract, seed=1)) for tract in (0.97, 1.0, 1.05, 1.15)]
    for flavour in (0, 1):
        s = [x[flavour] for x in scores]
        assert 0.3 < s[0] and all(b > a + 0.5 for a, b in zip(s, s[1:], strict=False)), s


def test_grows_with_noise(mcd_mod, utt):
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(len(utt)).astype(np.float32)
    scores = [both(mcd_mod, utt, utt + level * noise) for level in (1e-4, 1e-3, 1e-2)]
    for flavour in (0, 1):
        s = [x[flavour] for x in scores]
        assert all(b > a + 1.0 for a, b in zip(s, s[1:], strict=False)), s


def test_time_stretch_is_forgiven_by_dtw(mcd_mod, utt):
    import librosa

    stretched = librosa.effects.time_stretch(utt, rate=0.85)
    other = synth_utterance(110.0, 0.95, seed=2)  # same speaker, other vowel sequence
    for s, o in zip(both(mcd_mod, utt, stretched), both(mcd_mod, utt, other), strict=False):
        assert s < 0.8 * o, (s, o)


@pytest.mark.parametrize("noise", [0.0, 1e-4], ids=["digital-silence", "noise-floor"])
def test_silence_padding_is_dropped(mcd_mod, utt, noise):
    padded = pad(utt, 0.5, noise, seed=3)
    kept = both(mcd_mod, utt, padded)
    assert kept[0] < 0.5 and kept[1] < 1.0, kept
    # Without silence dropping the padding costs several dB.
    raw = both(mcd_mod, utt, padded, silence_db=1e9)
    assert raw[0] > kept[0] + 3 and raw[1] > kept[1] + 3, (raw, kept)


def test_silence_dropping_keeps_a_few_frames():
    from clsvc.evaluation.mcd import MIN_FRAMES, mcd

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((30, 25))
    energy = np.full(30, -300.0)
    energy[7] = 0.0  # one loud frame: the loudest MIN_FRAMES are kept instead
    assert MIN_FRAMES >= 2
    assert np.isfinite(mcd(ref, ref, energy, energy))
    assert mcd(ref, ref, energy, energy) == 0.0


def test_bad_input_raises(mcd_mod, utt):
    ok = np.zeros((10, 25))
    with pytest.raises(ValueError, match="no frames"):
        mcd_mod.mcd(np.zeros((0, 25)), ok)
    with pytest.raises(ValueError, match="no frames"):
        mcd_mod.mcd(ok, np.zeros((0, 25)), np.zeros(10), np.zeros(0))
    with pytest.raises(ValueError, match="orders differ"):
        mcd_mod.mcd(ok, np.zeros((10, 13)))
    with pytest.raises(ValueError, match="energy values"):
        mcd_mod.mcd(ok, ok, np.zeros(9))
    with pytest.raises(ValueError, match="empty"):
        mcd_mod.mcep_from_wav(np.zeros(0, np.float32), SR)


# ----------------------------------------------------------------------------------------------
# ASR content scorers


@pytest.fixture(scope="module")
def asr():
    pytest.importorskip("jiwer")
    pytest.importorskip("pocketsphinx")
    from clsvc.evaluation import asr

    assert asr.available()
    return asr


def test_normalize_text(asr):
    assert asr.normalize_text("  Don't STOP -- 'now'!\n") == "don't stop now"
    assert asr.normalize_text("Please call Stella.") == "please call stella"
    assert asr.normalize_text("It\u2019s a x-ray, o'clock_time") == "it's a x ray o'clock time"
    assert asr.normalize_text("?!") == ""


def test_error_rates(asr):
    r = asr.error_rates("Please call Stella now.", "please call stella now")
    assert r["wer"] == 0.0 and r["cer"] == 0.0 and r["words"] == 4
    r = asr.error_rates("please call stella now", "please call bella now")
    assert r["wer"] == pytest.approx(0.25)
    assert r["cer"] == pytest.approx(2 / len("please call stella now"))
    assert asr.error_rates("please call", "")["wer"] == 1.0
    assert asr.error_rates("", "")["wer"] == 0.0
    assert asr.error_rates("...", "hello")["wer"] == 1.0


@pytest.fixture(scope="module")
def speech():
    """4 s of read speech (CMU ARCTIC arctic_a0007, shipped with pysptk) and its transcript."""
    pytest.importorskip("pysptk")
    import soundfile as sf
    from pysptk.util import example_audio_file

    wav, sr = sf.read(example_audio_file(), dtype="float32")
    assert sr == SR and wav.ndim == 1
    return wav, "And you always want to see it in the superlative degree."


def test_transcribe_recognises_read_speech(asr, speech):
    wav, text = speech
    out = asr.transcribe(wav)
    assert out == asr.normalize_text(out)
    assert asr.error_rates(text, out)["wer"] <= 0.2, out
    # Another rate is resampled to 16 kHz first: the same speech at 8 kHz is still recognised.
    import soxr

    low = asr.transcribe(soxr.resample(wav, SR, 8000), sample_rate=8000)
    assert asr.error_rates(text, low)["wer"] <= 0.2, low
    # The score follows intelligibility: noise at -20 dB of full scale costs most of the words.
    noisy = wav + 0.05 * np.random.default_rng(0).standard_normal(len(wav)).astype(np.float32)
    assert asr.error_rates(text, asr.transcribe(noisy))["wer"] >= 0.5
    assert asr.transcribe(np.zeros(0, np.float32)) == ""


def test_transcribe_hears_each_utterance_afresh(asr, speech):
    """What was transcribed before changes nothing: the same (degraded, so borderline) audio gives
    the same words after silence, after loud noise and after other speech, and the same words as
    a recogniser that never heard anything else."""
    import pocketsphinx

    wav, _ = speech
    rng = np.random.default_rng(1)
    hard = wav + 0.02 * rng.standard_normal(len(wav)).astype(np.float32)
    before = [np.zeros(8000, np.float32), (0.5 * rng.standard_normal(48000)).astype(np.float32),
              0.1 * wav[::-1].copy(), np.clip(wav * 8, -1, 1)]
    heard = []
    for other in before:
        asr.transcribe(other)
        heard.append(asr.transcribe(hard))
    fresh = pocketsphinx.Decoder(samprate=asr.ASR_RATE, loglevel="FATAL")
    fresh.start_utt()
    fresh.process_raw((np.clip(hard, -1, 1) * 32767).astype("<i2").tobytes(), full_utt=True)
    fresh.end_utt()
    assert heard == [asr.normalize_text(fresh.hyp().hypstr)] * len(before), heard
