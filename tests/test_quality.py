"""Audio quality (DNSMOS, PESQ, STOI) and F0 error on generated speech with known degradations.

The test utterance is two of helpers' synthetic vowel chains with pauses around them: PESQ's
voice-activity detector finds no utterance in the pause-less chain alone, and real speech has
pauses. It is 2.4 s long, which DNSMOS loops to 9.6 s and scores in a single window.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest

from clsvc.errors import ClsvcError
from clsvc.evaluation import pitch, quality

from helpers import SR, synth_utterance

with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources; not ours to fix
    warnings.simplefilter("ignore", DeprecationWarning)
    HAVE_EXTRAS = quality.available() and pitch.available()

pytestmark = pytest.mark.skipif(not HAVE_EXTRAS, reason="needs the eval extras: pip install 'clsvc[eval]'")

SEMITONE = 2.0 ** (1.0 / 12.0)


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    gap = np.zeros(int(0.2 * SR), dtype=np.float32)
    parts = [gap, synth_utterance(150.0, 1.0, seed=0, seconds=0.9), gap,
             synth_utterance(150.0, 1.0, seed=1, seconds=0.9), gap]
    return np.concatenate(parts).astype(np.float64)


def add_noise(x: np.ndarray, snr_db: float, seed: int = 0) -> np.ndarray:
    """``x`` plus white noise at ``snr_db`` dB below its mean power (whole signal, pauses included)."""
    noise = np.random.default_rng(seed).standard_normal(len(x))
    return x + noise * np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10))


@pytest.fixture(scope="module")
def noisy(speech) -> np.ndarray:
    return add_noise(speech, 5.0)


# ----------------------------------------------------------------------------------------------
# PESQ and STOI


def test_pesq_stoi_identical_and_noisy(speech, noisy):
    clean_pesq, clean_stoi = quality.pesq_wb(speech, speech), quality.stoi(speech, speech)
    assert clean_pesq > 4.4  # 4.64 is the wide-band maximum
    assert clean_stoi > 0.99
    noisy_pesq, noisy_stoi = quality.pesq_wb(speech, noisy), quality.stoi(speech, noisy)
    assert 1.0 <= noisy_pesq < 2.0 and noisy_pesq < clean_pesq - 2.0
    assert 0.0 < noisy_stoi < 0.8 and noisy_stoi < clean_stoi - 0.2
    # a milder degradation lands in between
    assert noisy_pesq < quality.pesq_wb(speech, add_noise(speech, 25.0)) < clean_pesq


def test_pesq_stoi_crop_resample_and_undefined(speech):
    # lengths differ: both are cropped to the shorter
    longer = np.concatenate([speech, 0.1 * np.ones(4000)])
    assert quality.pesq_wb(speech, longer) > 4.4
    assert quality.stoi(longer, speech) > 0.99
    # another rate: resampled to 16 kHz for PESQ (pystoi resamples to 10 kHz itself)
    import soxr

    x22 = soxr.resample(speech, SR, 22050)
    assert quality.pesq_wb(x22, x22, sr=22050) > 4.4
    assert quality.stoi(x22, x22, sr=22050) > 0.99
    # no utterance for PESQ's detector / too little speech for STOI: NaN, no exception
    silence = np.zeros_like(speech)
    assert math.isnan(quality.pesq_wb(silence, silence))
    assert math.isnan(quality.pesq_wb(speech, silence))
    assert math.isnan(quality.pesq_wb(silence, speech))
    assert math.isnan(quality.stoi(silence, speech))
    short = speech[int(0.2 * SR):int(0.45 * SR)]  # 0.25 s: fewer than 30 STOI frames
    assert math.isnan(quality.stoi(short, short))
    with pytest.raises(ValueError, match="empty"):
        quality.pesq_wb(np.zeros(0), speech)


# ----------------------------------------------------------------------------------------------
# DNSMOS


def test_dnsmos_scores_and_noise(speech, noisy):
    clean = quality.dnsmos(speech)
    assert set(clean) == {"sig", "bak", "ovrl", "p808"}
    dirty = quality.dnsmos(np.clip(noisy, -1.0, 1.0))
    for scores in (clean, dirty):
        assert all(1.0 <= v <= 5.0 for v in scores.values()), scores
    # Synthetic vowels are no natural speech (the clean OVRL is only ~2), but strong noise still
    # reads as worse overall and, above all, as a much more intrusive background.
    assert dirty["ovrl"] < clean["ovrl"] - 0.5
    assert dirty["bak"] < clean["bak"] - 1.0


def test_dnsmos_short_clip_other_rate_and_errors(speech):
    # 1.2 s at 22.05 kHz: resampled to 16 kHz, looped (doubled) by speechmos up to 9.6 s, one window
    import soxr

    short = soxr.resample(speech[: int(1.2 * SR)], SR, 22050)
    scores = quality.dnsmos(short, sr=22050)
    assert all(1.0 <= v <= 5.0 for v in scores.values()), scores
    with pytest.raises(ValueError, match="empty"):
        quality.dnsmos(np.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        quality.dnsmos(np.full(100, np.nan))


# ----------------------------------------------------------------------------------------------
# F0


def test_f0_track_grid_and_value(speech):
    for method in ("harvest", "dio"):
        f0 = pitch.f0_track(speech, method=method)
        assert f0.shape == (len(speech) // 80 + 1,)  # 5 ms frames at 16 kHz
        voiced = f0[f0 > 0]
        assert 0.6 < len(voiced) / len(f0) < 0.95  # the pauses are unvoiced
        assert abs(np.median(voiced) - 150.0) < 5.0  # the synth's F0 is 150 Hz +- 5 %
    with pytest.raises(ValueError, match="method"):
        pitch.f0_track(speech, method="yin")


def test_f0_error_identical(speech):
    err = pitch.f0_error(speech, speech)
    assert err["log_f0_rmse_cents"] == 0.0
    assert err["log_f0_mean_cents"] == 0.0
    assert err["f0_corr"] > 0.99
    assert err["vuv_error"] == 0.0
    assert 0 < err["voiced_pairs"] <= err["scored_pairs"] < err["aligned_pairs"]  # pauses are not scored


def test_f0_error_pitch_shift(speech):
    import pyworld

    f0, t = pyworld.dio(speech, SR, frame_period=5.0)
    f0 = pyworld.stonemask(speech, f0, t, SR)
    sp, ap = pyworld.cheaptrick(speech, f0, t, SR), pyworld.d4c(speech, f0, t, SR)
    up = pyworld.synthesize(f0 * SEMITONE, sp, ap, SR, 5.0)[: len(speech)]
    err = pitch.f0_error(speech, up)
    assert abs(err["log_f0_rmse_cents"] - 100.0) < 15.0, err
    assert abs(err["log_f0_mean_cents"] - 100.0) < 10.0, err
    assert err["f0_corr"] > 0.8 and err["vuv_error"] < 0.05, err
    # A contour the caller already tracked is used as is: the same numbers, and it is really read.
    assert pitch.f0_error(speech, up, deg_f0=pitch.f0_track(up)) == err
    halved = pitch.f0_error(speech, up, deg_f0=pitch.f0_track(up) / 2)
    assert abs(halved["log_f0_mean_cents"] - (err["log_f0_mean_cents"] - 1200.0)) < 1e-6


def test_pitch_level_reads_the_median_f0_and_a_shift_in_cents(speech):
    import pyworld

    f0, t = pyworld.dio(speech, SR, frame_period=5.0)
    f0 = pyworld.stonemask(speech, f0, t, SR)
    sp, ap = pyworld.cheaptrick(speech, f0, t, SR), pyworld.d4c(speech, f0, t, SR)
    up = pyworld.synthesize(f0 * SEMITONE, sp, ap, SR, 5.0)[: len(speech)]
    level = pitch.pitch_level(speech)
    assert abs(pitch.level_cents(level, float(np.median(f0[f0 > 0])))) < 10.0
    assert abs(pitch.level_cents(pitch.pitch_level(up), level) - 100.0) < 15.0
    # Several utterances pool their voiced frames; silence has no level.
    assert abs(pitch.level_cents(pitch.pitch_level([speech, speech]), level)) < 1e-6
    assert pitch.pitch_level_of([pitch.f0_track(speech)]) == level
    assert math.isnan(pitch.pitch_level(np.zeros(SR, np.float32)))
    assert math.isnan(pitch.level_cents(math.nan, level)) and math.isnan(pitch.level_cents(0.0, level))


def test_f0_error_time_stretch_is_aligned(speech):
    import librosa

    # n_fft=512 (32 ms) suits 16 kHz speech; librosa's default 2048 smears the harmonics.
    slower = librosa.effects.time_stretch(speech, rate=0.9, n_fft=512)
    err = pitch.f0_error(speech, slower)
    assert err["log_f0_rmse_cents"] < 40.0 and abs(err["log_f0_mean_cents"]) < 10.0, err
    assert err["f0_corr"] > 0.8 and err["vuv_error"] < 0.05, err
    # Without the alignment the F0 contours are out of step: frame-by-frame they differ far more.
    a = pitch.f0_track(speech)
    b = pitch.f0_track(slower)[: len(a)]
    both = (a > 0) & (b > 0)
    naive = np.sqrt(np.mean((1200 * np.log2(b[both] / a[both])) ** 2))
    assert naive > 2 * err["log_f0_rmse_cents"]


def test_f0_error_noise_filled_pauses(speech):
    # Noise in the pauses of one copy only must not pull its noise frames onto the other's speech.
    err = pitch.f0_error(speech, add_noise(speech, 20.0, seed=3))
    assert err["log_f0_rmse_cents"] < 30.0 and abs(err["log_f0_mean_cents"]) < 10.0, err


# ----------------------------------------------------------------------------------------------
# Missing packages


@pytest.mark.parametrize("module", ["speechmos.dnsmos", "pesq", "pystoi", "pyworld"])
def test_missing_package_is_one_clear_error(monkeypatch, speech, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` raise ImportError
    calls = {
        "speechmos.dnsmos": lambda: quality.dnsmos(speech),
        "pesq": lambda: quality.pesq_wb(speech, speech),
        "pystoi": lambda: quality.stoi(speech, speech),
        "pyworld": lambda: pitch.f0_track(speech),
    }
    with pytest.raises(ClsvcError, match=r"pip install 'clsvc\[eval\]'"):
        calls[module]()
    assert not (quality.available() if module != "pyworld" else pitch.available())
