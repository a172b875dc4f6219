"""Audio I/O and the one mel-spectrogram definition used everywhere.

Preprocessing, training, conversion, the Griffin-Lim vocoder and the evaluation all call
:func:`wav_to_mel` / :func:`mel_to_linear` with a :class:`~clsvc.config.MelConfig`; nothing else
in the package computes a spectrogram.

Conventions: waveforms are float32 numpy arrays in [-1, 1] at ``cfg.sample_rate`` (16 kHz);
mel-spectrograms are float32 arrays of shape ``(frames, n_mels)`` with values in [0, 1]
(0 = the -100 dB floor, 1 = 0 dB after the 16 dB reference shift).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from scipy import signal

from .config import MelConfig
from .errors import ClsvcError
from .files import atomic_path

# Below this peak amplitude a file is treated as silent (about -80 dBFS).
SILENCE_PEAK = 1e-4
MIN_SOURCE_RATE = 8000


def load_wav(path: str | Path, cfg: MelConfig, min_seconds: float = 0.0) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 at ``cfg.sample_rate``.

    Multi-channel audio is down-mixed by averaging; other rates are resampled with soxr (VHQ).
    Raises ClsvcError (naming the file and the fix) for missing, unreadable, empty, silent,
    too-low-rate or shorter-than-``min_seconds`` audio.
    """
    path = Path(path)
    if not path.exists():
        raise ClsvcError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise ClsvcError(f"{path}: is a folder, expected an audio file (wav, flac, ...)")
    try:
        wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for bad files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClsvcError(
            f"{path}: cannot read audio ({reason}); give a wav/flac/ogg file, "
            "or convert it first (e.g. with sox or ffmpeg)"
        ) from None
    if wav.shape[0] == 0:
        raise ClsvcError(f"{path}: the file holds no audio samples; use a non-empty recording")
    if sr < MIN_SOURCE_RATE:
        raise ClsvcError(
            f"{path}: sample rate {sr} Hz is too low for 80 mel bands up to "
            f"{cfg.fmax:.0f} Hz; record or export at {cfg.sample_rate} Hz or more"
        )
    wav = wav.mean(axis=1)
    if sr != cfg.sample_rate:
        wav = soxr.resample(wav, sr, cfg.sample_rate, quality="VHQ").astype(np.float32)
    if not np.all(np.isfinite(wav)):
        raise ClsvcError(f"{path}: audio contains NaN or infinite samples; re-export the file")
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        raise ClsvcError(f"{path}: the audio is silent (peak below -80 dBFS); use a recording with speech")
    if min_seconds > 0 and len(wav) < min_seconds * cfg.sample_rate:
        raise ClsvcError(
            f"{path}: only {len(wav) / cfg.sample_rate:.2f} s of audio, at least "
            f"{min_seconds:.2f} s are needed; use a longer recording"
        )
    return wav


def save_wav(path: str | Path, wav: np.ndarray, sample_rate: int) -> None:
    """Write 16-bit PCM atomically (see :mod:`clsvc.files`)."""
    wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    with atomic_path(path, suffix=".tmp.wav") as tmp:
        sf.write(tmp, wav, sample_rate, subtype="PCM_16", format="WAV")


@functools.lru_cache(maxsize=8)
def _highpass(sample_rate: int, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    # 5th-order Butterworth as in AutoVC's recipe; applied forward-backward (zero phase).
    return signal.butter(5, cutoff / (sample_rate / 2), btype="high")


@functools.lru_cache(maxsize=8)
def mel_basis(cfg: MelConfig) -> np.ndarray:
    """Slaney-normalised mel filterbank, shape ``(n_mels, n_fft // 2 + 1)``."""
    import librosa

    return librosa.filters.mel(
        sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels, fmin=cfg.fmin, fmax=cfg.fmax
    ).astype(np.float32)


def stft_magnitude(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """|STFT| with a centred, reflect-padded Hann window; shape ``(frames, n_fft//2 + 1)``."""
    import librosa

    spec = librosa.stft(
        wav, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="reflect",
    )
    return np.abs(spec).T.astype(np.float32)


def amp_to_norm(mel_amp: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Mel magnitudes -> the [0, 1] log scale."""
    db = 20.0 * np.log10(np.maximum(cfg.amp_floor, mel_amp)) - cfg.ref_level_db
    return np.clip((db - cfg.min_level_db) / -cfg.min_level_db, 0.0, 1.0).astype(np.float32)


def norm_to_amp(mel: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """The [0, 1] log scale -> mel magnitudes (inverse of :func:`amp_to_norm` inside the clip)."""
    db = np.clip(mel, 0.0, 1.0) * -cfg.min_level_db + cfg.min_level_db + cfg.ref_level_db
    return np.power(10.0, db / 20.0).astype(np.float32)


def wav_to_mel(wav: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """16 kHz waveform (samples,) -> normalised log-mel (frames, n_mels) in [0, 1].

    frames = 1 + samples // hop_length (centred frames).
    """
    wav = np.asarray(wav, dtype=np.float64)
    if cfg.highpass_hz > 0 and len(wav) > 33:  # filtfilt needs a few samples of padding
        b, a = _highpass(cfg.sample_rate, cfg.highpass_hz)
        wav = signal.filtfilt(b, a, wav)
    mag = stft_magnitude(wav.astype(np.float32), cfg)
    return amp_to_norm(mag @ mel_basis(cfg).T, cfg)


def mel_to_linear(mel: np.ndarray, cfg: MelConfig) -> np.ndarray:
    """Normalised log-mel (frames, n_mels) -> non-negative STFT magnitude (n_fft//2+1, frames).

    Uses librosa's non-negative least-squares inversion of the same filterbank.
    """
    import librosa

    amp = norm_to_amp(mel, cfg).T  # (n_mels, frames)
    return librosa.feature.inverse.mel_to_stft(
        amp, sr=cfg.sample_rate, n_fft=cfg.n_fft, power=1.0, fmin=cfg.fmin, fmax=cfg.fmax
    )


def trim_silence(wav: np.ndarray, top_db: float, cfg: MelConfig) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``top_db`` below the peak (keeps the middle)."""
    import librosa

    if top_db <= 0:
        return wav
    _, (start, end) = librosa.effects.trim(
        wav, top_db=top_db, frame_length=cfg.win_length, hop_length=cfg.hop_length
    )
    return wav[start:end]
