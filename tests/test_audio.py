import os
import struct
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from clsvc import audio
from clsvc.audio import AudioScaleWarning, check_waveform, load_wav, mel_to_linear, norm_to_amp, save_wav, wav_to_mel
from clsvc.config import MelConfig
from clsvc.errors import ClsvcError
from clsvc.vocoder import GriffinLim

from helpers import SR, synth_utterance

CFG = MelConfig()


def test_mel_shape_and_range():
    wav = synth_utterance(120, 1.0, seed=0, seconds=1.0)
    mel = wav_to_mel(wav, CFG)
    assert mel.dtype == np.float32
    assert mel.shape == (1 + len(wav) // CFG.hop_length, 80)
    assert mel.min() >= 0.0 and mel.max() <= 1.0
    assert 0.2 < mel.mean() < 0.9  # speech-like level, neither floor nor clipped


def test_mel_scale_matches_the_recipe():
    # A full-scale 1 kHz sine: its band sits near 0 dB - 16 dB ref + gain, i.e. high in [0, 1];
    # digital silence sits at the floor (0 after clipping).
    t = np.arange(SR) / SR
    mel = wav_to_mel(0.5 * np.sin(2 * np.pi * 1000 * t).astype(np.float32), CFG)
    band = np.argmax(mel[20])
    assert mel[20, band] > 0.8
    assert wav_to_mel(np.zeros(SR, np.float32), CFG).max() == 0.0


def test_cepstral_basis_is_scipys_orthonormal_dct_without_c0():
    """The one cepstrum of the mel bands (DTW of parallel pairs, ``loss.envelope``): c1..cK of the
    orthonormal DCT-II, and an orthonormal set, so distances between cepstra are distances between
    the envelopes they keep."""
    import scipy.fft

    from clsvc.data.dataset import _cepstra

    mel = np.random.default_rng(0).random((7, 80))
    basis = audio.cepstral_basis(80, 24)
    assert basis.shape == (80, 24)
    want = scipy.fft.dct(mel, type=2, norm="ortho", axis=1)[:, 1:25]
    assert np.allclose(mel @ basis, want) and np.allclose(_cepstra(mel), want)
    assert np.allclose(basis.T @ basis, np.eye(24))


def test_griffin_lim_round_trip():
    wav = synth_utterance(150, 1.0, seed=1, seconds=1.0)
    mel = wav_to_mel(wav, CFG)
    back = GriffinLim(CFG, n_iter=32)(mel)
    assert abs(len(back) - len(wav)) < CFG.hop_length
    mel2 = wav_to_mel(back, CFG)
    n = min(len(mel), len(mel2))
    assert np.abs(mel[:n] - mel2[:n]).mean() < 0.03
    assert mel_to_linear(mel, CFG).shape == (CFG.n_fft // 2 + 1, len(mel))


def test_mel_to_linear_is_librosas_nonnegative_least_squares():
    """The cached pseudo-inverse, clipped, gives what librosa's NNLS gives for these mels (it
    starts there and stops there), real-like and noisy alike, in a fraction of the time."""
    import librosa

    wav = synth_utterance(120, 1.0, seed=3, seconds=1.0)
    clean = wav_to_mel(wav, CFG)
    noisy = np.clip(clean + 0.05 * np.random.default_rng(0).standard_normal(clean.shape), 0, 1)
    for mel in (clean, noisy):
        amp = norm_to_amp(mel.astype(np.float32), CFG).T
        nnls = librosa.feature.inverse.mel_to_stft(amp, sr=CFG.sample_rate, n_fft=CFG.n_fft, power=1.0,
                                                   fmin=CFG.fmin, fmax=CFG.fmax)
        ours = mel_to_linear(mel, CFG)
        assert ours.dtype == np.float32 and (ours >= 0).all()
        assert np.abs(ours - nnls).max() <= 1e-5 * max(1.0, float(nnls.max()))


def test_resample_and_downmix(tmp_path):
    wav = synth_utterance(150, 1.0, seed=2, seconds=1.0)
    import soxr

    stereo44 = np.stack([soxr.resample(wav, SR, 44100)] * 2, axis=1)
    sf.write(tmp_path / "s.wav", stereo44, 44100)
    got = load_wav(tmp_path / "s.wav", CFG)
    assert abs(len(got) - len(wav)) <= 2
    m1, m2 = wav_to_mel(wav, CFG), wav_to_mel(got[: len(wav)], CFG)
    n = min(len(m1), len(m2))
    assert np.abs(m1[:n] - m2[:n]).mean() < 0.01


def test_save_wav_is_atomic_and_readable(tmp_path):
    wav = synth_utterance(150, 1.0, seed=3, seconds=0.5)
    save_wav(tmp_path / "o.wav", wav, SR)
    assert [p.name for p in tmp_path.iterdir()] == ["o.wav"]
    back, sr = sf.read(tmp_path / "o.wav")
    assert sr == SR and len(back) == len(wav)


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b"RIFF1234WAVEjunkjunkjunk"), "cannot read audio"),
    (lambda p: p.write_bytes(b""), "cannot read audio"),  # 0 bytes
    (lambda p: sf.write(p, np.zeros(0, np.float32), SR), "no audio samples"),
    (lambda p: sf.write(p, np.zeros(SR, np.float32), SR), "silent"),
    (lambda p: sf.write(p, np.ones(400, np.float32) * 0.1, 4000), "too low"),
])
def test_load_errors_name_file_and_fix(tmp_path, make, words):
    p = tmp_path / "x.wav"
    make(p)
    with pytest.raises(ClsvcError, match=words) as e:
        load_wav(p, CFG)
    assert str(p) in str(e.value)


def test_min_seconds(tmp_path):
    sf.write(tmp_path / "short.wav", synth_utterance(150, 1.0, 0, 0.2), SR)
    with pytest.raises(ClsvcError, match="at least"):
        load_wav(tmp_path / "short.wav", CFG, min_seconds=0.5)


# ------------------------------------------------------------------------------------------------
# Validation of damaged, extreme and non-regular inputs (no model needed)


def _one_line_error(path, fn=None, **kw) -> str:
    """``load_wav(path)`` must raise ClsvcError: one line naming the file."""
    with pytest.raises(ClsvcError) as e:
        (fn or load_wav)(path, CFG, **kw)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg, msg
    return msg


def _pcm_wav(path: Path, seconds: float = 0.6) -> bytes:
    sf.write(path, synth_utterance(150, 1.0, seed=4, seconds=seconds), SR, subtype="PCM_16")
    return path.read_bytes()


@pytest.mark.parametrize("channels", [1, 2])
def test_extreme_float_wav_is_normalised_with_a_note(tmp_path, channels):
    # Finite float32 samples at +-3e38: used to give inf in the STFT (librosa traceback) and NaN
    # embeddings. Policy: scaled to a peak of 0.99, one AudioScaleWarning naming the file.
    wav = synth_utterance(150, 1.0, seed=5, seconds=0.6)
    big = (np.sign(wav) * 3e38).astype(np.float32)
    p = tmp_path / "loud.wav"
    sf.write(p, np.stack([big] * channels, axis=1), SR, subtype="FLOAT")
    with pytest.warns(AudioScaleWarning, match="loud.wav.*normalised to a peak of 0.99") as rec:
        got = load_wav(p, CFG)
    assert len([w for w in rec if issubclass(w.category, AudioScaleWarning)]) == 1
    assert got.dtype == np.float32 and got.shape == wav.shape
    assert np.all(np.isfinite(got)) and np.max(np.abs(got)) == pytest.approx(0.99, rel=1e-6)
    assert np.all(np.isfinite(wav_to_mel(got, CFG)))


def test_in_range_audio_is_untouched_and_silent(tmp_path):
    wav = synth_utterance(150, 1.0, seed=6, seconds=0.6)
    sf.write(tmp_path / "ok.wav", wav, SR, subtype="FLOAT")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_wav(tmp_path / "ok.wav", CFG), wav)
        np.testing.assert_array_equal(check_waveform(wav, SR, "w"), wav)
        # A full-scale PCM square resampled from 44.1 kHz rings past 1.0: clipped, no note.
        sf.write(tmp_path / "fs.wav", np.sign(wav) * 0.999, 44100, subtype="PCM_16")
        got = load_wav(tmp_path / "fs.wav", CFG)
    assert np.max(np.abs(got)) <= 1.0


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_wav_is_refused(tmp_path, bad):
    wav = synth_utterance(150, 1.0, seed=7, seconds=0.6)
    wav[100] = bad
    p = tmp_path / "bad.wav"
    sf.write(p, wav, SR, subtype="FLOAT")
    assert "NaN or infinite" in _one_line_error(p)


def test_beyond_float32_wav_is_refused(tmp_path):
    p = tmp_path / "huge64.wav"
    sf.write(p, synth_utterance(150, 1.0, seed=8, seconds=0.6).astype(np.float64) * 1e300, SR, subtype="DOUBLE")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # libsndfile's double -> float cast
        assert "float32 range" in _one_line_error(p)


def test_huge_sample_rate_header_is_refused(tmp_path):
    p = tmp_path / "rate.wav"
    data = bytearray(_pcm_wav(p))
    data[24:28] = struct.pack("<I", 0x7FFFFFFF)
    p.write_bytes(bytes(data))
    msg = _one_line_error(p)
    assert "sample rate 2147483647 Hz" in msg and "re-export" in msg


def _call_with_deadline(fn, seconds: float):
    """Run ``fn()`` in a daemon thread; return ("ok", value) / ("err", exception) / ("hung", None)."""
    out: list = []

    def run():
        try:
            out.append(("ok", fn()))
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            out.append(("err", e))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else ("hung", None)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    kind, value = _call_with_deadline(lambda: load_wav(fifo, CFG), 10.0)
    if kind == "hung":  # unblock the reader before failing, so the thread ends
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("load_wav blocked on a FIFO")
    assert kind == "err" and isinstance(value, ClsvcError), value
    assert str(fifo) in str(value) and "FIFO" in str(value) and "regular file" in str(value)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_device_and_folder_are_refused(tmp_path):
    assert "regular file" in _one_line_error(Path("/dev/null"))
    assert "is a folder" in _one_line_error(tmp_path)


def test_truncated_header_is_refused(tmp_path):
    p = tmp_path / "cut.wav"
    data = _pcm_wav(p)
    for n in (4, 12, 30, 43, 44, 45):  # cut inside the header, in the data chunk header, in the first sample
        p.write_bytes(data[:n])
        msg = _one_line_error(p)
        assert "cannot read audio" in msg or "no audio samples" in msg, msg


def test_header_claiming_more_data_than_present(tmp_path):
    # data and RIFF chunk sizes say ~4 GB; the file holds 0.6 s: read what is there, allocate no more.
    p = tmp_path / "lie.wav"
    data = bytearray(_pcm_wav(p))
    assert data[36:40] == b"data"
    data[4:8] = struct.pack("<I", 0xFFFFFFF0)
    data[40:44] = struct.pack("<I", 0xFFFFFFF0)
    p.write_bytes(bytes(data))
    got = load_wav(p, CFG)
    assert got.shape == (int(0.6 * SR),) and np.all(np.isfinite(got))


def test_too_long_audio_is_refused_before_decoding(tmp_path, monkeypatch):
    p = tmp_path / "long.wav"
    _pcm_wav(p, seconds=0.6)
    monkeypatch.setattr(audio, "MAX_SECONDS", 0.5)
    assert "split the recording" in _one_line_error(p)


def test_nothing_left_after_resampling(tmp_path):
    p = tmp_path / "blip.wav"
    sf.write(p, np.full(20, 0.5, np.float32), 768000)
    assert "after resampling" in _one_line_error(p)


@pytest.mark.parametrize("wav, rate, words", [
    (np.zeros((SR, 2), np.float32), SR, "1-D"),
    (np.zeros(0, np.float32), SR, "no audio samples"),
    (np.ones(SR, np.complex64), SR, "not audio"),
    (np.array(["a", "b"]), SR, "not audio"),
    (np.full(SR, np.nan, np.float32), SR, "NaN or infinite"),
    (np.full(SR, 1e300), SR, "float32 range"),
    (np.ones(SR, np.float32), 0x7FFFFFFF, "sample rate"),
    (np.ones(SR, np.float32), 0, "sample rate"),
    (np.ones(SR, np.float32), float("nan"), "sample rate"),
    (np.broadcast_to(np.float32(0.1), (3601 * 8000,)), 8000, "split the recording"),  # no memory
])
def test_check_waveform_refuses(wav, rate, words):
    with pytest.raises(ClsvcError, match=words) as e:
        check_waveform(wav, rate, "the given waveform")
    assert str(e.value).startswith("the given waveform: ") and "\n" not in str(e.value)


def test_check_waveform_normalises_integer_and_loud_arrays():
    pcm = np.array([0, 1000, -32768, 32767], np.int16)
    with pytest.warns(AudioScaleWarning, match="w: peak amplitude 3.28e\\+04"):
        got = check_waveform(pcm, SR, "w")
    assert got.dtype == np.float32 and np.max(np.abs(got)) == pytest.approx(0.99)
    with pytest.warns(AudioScaleWarning):
        got = check_waveform(np.array([3e38, -3e38, 1.0], np.float32), SR, "w")
    np.testing.assert_allclose(got, [0.99, -0.99, 0.99 / 3e38], rtol=1e-6)


def test_embed_wav_never_returns_nan():
    from clsvc.dvector import embed_wav

    wav = synth_utterance(150, 1.0, seed=9, seconds=1.0)
    with pytest.warns(AudioScaleWarning):
        loud = embed_wav((np.sign(wav) * 3e38).astype(np.float32))
    assert loud.shape == (256,) and np.all(np.isfinite(loud))
    bad = wav.copy()
    bad[10] = np.nan
    with pytest.raises(ClsvcError, match="the given waveform: .*NaN"):
        embed_wav(bad)


def test_compensate_variance_spreads_each_band_as_the_reconstruction_flattens_it():
    from clsvc.audio import compensate_variance

    rng = np.random.default_rng(0)
    src = (0.5 + 0.05 * rng.standard_normal((400, 80))).astype(np.float32)
    recon = 0.5 + (src - 0.5) * 0.5          # the model halves every band's spread ...
    recon[:, :10] = src[:, :10]              # ... but these bands' (ratio 1: left alone)
    recon[:, 10:20] = 0.5 + (src[:, 10:20] - 0.5) * 0.1  # ten times flatter: capped at 3
    recon[:, 20:30] = 0.5 + (src[:, 20:30] - 0.5) * 2.0  # spread more than the source: never flattened
    conv = (0.4 + (src[::-1] - 0.5) * 0.5).astype(np.float32)
    out = compensate_variance(conv, src, recon, 3.0)
    ratio = out.std(0) / conv.std(0)
    np.testing.assert_allclose(ratio[:10], 1.0, rtol=1e-3)
    np.testing.assert_allclose(ratio[10:20], 3.0, rtol=1e-3)
    np.testing.assert_allclose(ratio[20:30], 1.0, rtol=1e-3)
    np.testing.assert_allclose(ratio[30:], 2.0, rtol=1e-3)
    np.testing.assert_allclose(out.mean(0), conv.mean(0), atol=1e-5)  # each band's level is kept
    assert out.dtype == np.float32 and out.shape == conv.shape
    assert compensate_variance(conv, src, recon, 1.0) is conv  # off
    loud = compensate_variance(np.clip(conv + 0.55, 0, 1), src, recon, 3.0)
    assert loud.min() >= 0.0 and loud.max() <= 1.0  # stays a valid normalised mel


def test_follow_level_contour_carries_the_sources_loudness_movement_and_nothing_else():
    from clsvc.audio import follow_level_contour

    rng = np.random.default_rng(0)
    t = np.arange(300)
    # The source rises and falls four times a second (syllables); the conversion, another
    # voice (another spectral shape, a lower mean level), moves half as much.
    envelope = 0.1 * np.sin(2 * np.pi * 4 * t * 256 / 16000)
    src = np.clip(0.5 + envelope[:, None] + 0.02 * rng.standard_normal((300, 80)), 0, 1).astype(np.float32)
    shape = np.linspace(-0.1, 0.1, 80)[None, :]
    conv = (0.4 + shape + 0.5 * envelope[:, None]).astype(np.float32)
    out = follow_level_contour(conv, src, 1.0)
    contour = lambda m: m.mean(1) - m.mean()  # noqa: E731
    np.testing.assert_allclose(contour(out), contour(src), atol=1e-5)  # the source's movement ...
    np.testing.assert_allclose(out.mean(0) - out.mean(), conv.mean(0) - conv.mean(), atol=1e-5)  # ... its shape
    np.testing.assert_allclose(out.mean(), conv.mean(), atol=1e-5)  # ... and its level
    half = follow_level_contour(conv, src, 0.5)
    np.testing.assert_allclose(contour(half), 0.5 * (contour(src) + contour(conv)), atol=1e-5)
    assert out.dtype == np.float32 and out.shape == conv.shape
    assert follow_level_contour(conv, src, 0.0) is conv  # off
    assert follow_level_contour(conv, conv, 1.0).tolist() == conv.tolist()  # its own contour: unchanged
    loud = follow_level_contour(np.clip(conv + 0.55, 0, 1), src * 0 + np.repeat([[0.0], [1.0]], 150, 0), 1.0)
    assert loud.min() >= 0.0 and loud.max() <= 1.0  # stays a valid normalised mel
    with pytest.raises(ClsvcError, match="same frames"):
        follow_level_contour(conv, src[:-1], 1.0)
