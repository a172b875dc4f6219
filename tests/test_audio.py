import numpy as np
import pytest
import soundfile as sf

from clsvc.audio import load_wav, mel_to_linear, save_wav, wav_to_mel
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


def test_griffin_lim_round_trip():
    wav = synth_utterance(150, 1.0, seed=1, seconds=1.0)
    mel = wav_to_mel(wav, CFG)
    back = GriffinLim(CFG, n_iter=32)(mel)
    assert abs(len(back) - len(wav)) < CFG.hop_length
    mel2 = wav_to_mel(back, CFG)
    n = min(len(mel), len(mel2))
    assert np.abs(mel[:n] - mel2[:n]).mean() < 0.03
    assert mel_to_linear(mel, CFG).shape == (CFG.n_fft // 2 + 1, len(mel))


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
