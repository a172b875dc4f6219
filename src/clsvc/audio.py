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
import os
import stat
import warnings
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
# Source sample rates accepted (Hz): below MIN_SOURCE_RATE the mel bands up to fmax are empty; above
# MAX_SOURCE_RATE (the highest rate of real recorders/DACs) the header is taken as damaged.
MIN_SOURCE_RATE = 8000
MAX_SOURCE_RATE = 768_000
# Longest input (seconds) and most decoded samples (frames x channels: one hour of 48 kHz stereo) read.
# Files are decoded in blocks, so a header that claims more than the file holds never allocates it.
MAX_SECONDS = 3600.0
MAX_SOURCE_SAMPLES = int(MAX_SECONDS) * 48_000 * 2
# Float audio whose peak exceeds full scale (1.0) is scaled down to this peak (with a warning).
NORMALISED_PEAK = 0.99
_BLOCK_SAMPLES = 1 << 20  # frames x channels decoded per read (4 MB of float32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class AudioScaleWarning(UserWarning):
    """Audio louder than full scale was normalised (see :func:`check_waveform`)."""


def check_waveform(wav: object, sample_rate: int, name: str) -> np.ndarray:
    """Validate a waveform and return it as a contiguous float32 1-D array.

    ``sample_rate`` is the rate the samples are at; ``name`` names them in messages (a file path,
    or e.g. ``"the given waveform"``). Raises ClsvcError (one line naming ``name`` and the fix) for:
    a non-numeric or not 1-D array, no samples, a rate outside
    [``MIN_SOURCE_RATE``, ``MAX_SOURCE_RATE``], more than ``MAX_SECONDS``, and NaN, infinite or
    beyond-float32-range samples.

    Scale policy: samples are expected in [-1, 1] (full scale). Audio whose peak exceeds 1.0 (float
    files or arrays with unscaled samples, e.g. 3e38 or int16 values) is not clipped and not
    refused: it is scaled by one gain to a peak of ``NORMALISED_PEAK`` (0.99) and one
    :class:`AudioScaleWarning` naming ``name`` says so. Silence is not checked here
    (:func:`load_wav` refuses silent files).
    """
    arr = np.asarray(wav)
    if arr.dtype.kind not in "fiu":  # bool, complex, object, strings
        raise ClsvcError(f"{name}: samples of type {arr.dtype} are not audio; pass real-valued (float) samples")
    if arr.ndim != 1:
        raise ClsvcError(
            f"{name}: expected a 1-D (mono) waveform, got shape {arr.shape}; pass one channel "
            "(e.g. the mean over channels)"
        )
    if arr.size == 0:
        raise ClsvcError(f"{name}: holds no audio samples; use a non-empty recording")
    try:
        rate = float(sample_rate)
    except (TypeError, ValueError):
        raise ClsvcError(f"{name}: sample rate {sample_rate!r} is not a number; give the rate in Hz") from None
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise ClsvcError(
            f"{name}: sample rate {sample_rate} Hz is outside {MIN_SOURCE_RATE}..{MAX_SOURCE_RATE} Hz; "
            f"record or export at 16000 Hz or more (a damaged header can show this too: re-export the file)"
        )
    if arr.size > MAX_SECONDS * rate:
        raise ClsvcError(
            f"{name}: {arr.size / rate / 60:.1f} min of audio, at most {MAX_SECONDS / 60:.0f} min are read; "
            "split the recording into shorter files"
        )
    if arr.dtype.kind in "iu":  # integer samples (abs of the most negative int16 overflows in int16)
        arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ClsvcError(
            f"{name}: audio contains NaN or infinite samples (or samples beyond the float32 range); "
            "re-export the file with samples in [-1, 1]"
        )
    peak = float(np.max(np.abs(arr)))
    if peak > _FLOAT32_MAX:
        raise ClsvcError(
            f"{name}: samples up to {peak:.3g} are beyond the float32 range; re-export the file "
            "with samples in [-1, 1]"
        )
    out = np.ascontiguousarray(arr, dtype=np.float32)
    if peak > 1.0:
        gain = NORMALISED_PEAK / peak
        out = (out.astype(np.float64) * gain).astype(np.float32)
        warnings.warn(
            f"{name}: peak amplitude {peak:.3g} is above full scale (1.0); normalised to a peak of "
            f"{NORMALISED_PEAK} (export samples in [-1, 1] to avoid this)",
            AudioScaleWarning, stacklevel=2,
        )
    return out


def _stat_regular(path: Path) -> None:
    """Refuse what is not a regular file before anything opens it (a FIFO would block the open)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ClsvcError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise ClsvcError(f"{path}: cannot access the file ({e.strerror or type(e).__name__}); check the path "
                         "and its permissions") from None
    if stat.S_ISDIR(st.st_mode):
        raise ClsvcError(f"{path}: is a folder, expected an audio file (wav, flac, ...)")
    if not stat.S_ISREG(st.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device, socket or other special file"
        raise ClsvcError(f"{path}: is {kind}, not a regular file; save the audio to a wav/flac file and give that")


def _read_mono(path: Path, cfg: MelConfig) -> tuple[np.ndarray, int]:
    """Decode ``path`` in blocks to mono float32 at its own rate, bounded by the caps above."""
    unreadable = ("cannot read audio ({}); not a readable audio file, re-export it as WAV or FLAC "
                  "(e.g. with sox or ffmpeg)")
    try:
        with sf.SoundFile(str(path)) as f:
            sr, channels, claimed = int(f.samplerate), int(f.channels), int(f.frames)
            if not MIN_SOURCE_RATE <= sr <= MAX_SOURCE_RATE:
                if 0 < sr < MIN_SOURCE_RATE:
                    raise ClsvcError(
                        f"{path}: sample rate {sr} Hz is too low for {cfg.n_mels} mel bands up to "
                        f"{cfg.fmax:.0f} Hz; record or export at {cfg.sample_rate} Hz or more"
                    )
                raise ClsvcError(
                    f"{path}: the header's sample rate {sr} Hz is not a real audio rate (accepted: "
                    f"{MIN_SOURCE_RATE}..{MAX_SOURCE_RATE} Hz); the header is damaged, re-export the file"
                )
            if channels < 1:
                raise ClsvcError(f"{path}: {unreadable.format(f'{channels} channels in the header')}")
            max_frames = min(int(MAX_SECONDS * sr), MAX_SOURCE_SAMPLES // channels)
            too_long = (f"{path}: more than {max_frames / sr / 60:.3g} min of audio ({channels} channel(s) at "
                        f"{sr} Hz) or a damaged header claiming so; split the recording into shorter files "
                        "or re-export it")
            if claimed > max_frames and claimed < (1 << 62):  # (1 << 62 and up: length unknown)
                raise ClsvcError(too_long)
            block = max(1, _BLOCK_SAMPLES // channels)
            parts: list[np.ndarray] = []
            total = 0
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if len(data) == 0:
                    break
                total += len(data)
                if total > max_frames:
                    raise ClsvcError(too_long)
                # The mean is taken in float64 (3e38 + 3e38 overflows float32) and is back in float32
                # range, as |mean| <= max |sample|.
                mono = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float64).astype(np.float32)
                parts.append(mono)
                if len(data) < block:
                    break
    except ClsvcError:
        raise
    except Exception as e:  # soundfile/libsndfile raise several types (and MemoryError) for damaged files
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClsvcError(f"{path}: {unreadable.format(reason)}") from None
    wav = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return wav, sr


def load_wav(path: str | Path, cfg: MelConfig, min_seconds: float = 0.0) -> np.ndarray:
    """Read any soundfile-readable file as mono float32 in [-1, 1] at ``cfg.sample_rate``.

    Multi-channel audio is down-mixed by averaging; other rates are resampled with soxr (VHQ).
    Raises ClsvcError (naming the file and the fix) for missing or non-regular files (folders,
    FIFOs and devices are refused before opening, so nothing blocks), unreadable or damaged
    files, sample rates outside ``MIN_SOURCE_RATE``..``MAX_SOURCE_RATE``, more than
    ``MAX_SECONDS`` of audio (or a header claiming so), no samples (also after resampling),
    NaN/infinite samples, silent audio or audio shorter than ``min_seconds``. Float audio louder
    than full scale is normalised to a peak of 0.99 with an :class:`AudioScaleWarning` (see
    :func:`check_waveform`); the resampler's overshoot past +-1 is clipped.
    """
    path = Path(path)
    _stat_regular(path)
    wav, sr = _read_mono(path, cfg)
    if wav.shape[0] == 0:
        raise ClsvcError(f"{path}: the file holds no audio samples; use a non-empty recording")
    wav = check_waveform(wav, sr, str(path))
    if sr != cfg.sample_rate:
        try:
            wav = soxr.resample(wav, sr, cfg.sample_rate, quality="VHQ").astype(np.float32)
        except Exception as e:  # soxr raises ValueError/RuntimeError on what it cannot resample
            raise ClsvcError(
                f"{path}: cannot resample {sr} Hz to {cfg.sample_rate} Hz ({e}); re-export it at "
                f"{cfg.sample_rate} Hz"
            ) from None
        if wav.size == 0:
            raise ClsvcError(
                f"{path}: too short, no samples are left after resampling {sr} Hz to {cfg.sample_rate} Hz; "
                "use a longer recording"
            )
        np.clip(wav, -1.0, 1.0, out=wav)  # the resampler's ringing around a full-scale peak
        wav = check_waveform(wav, cfg.sample_rate, str(path))
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
    return _filterbank(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)


def _filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The one mel filterbank of :func:`mel_basis` and :func:`mel_to_linear`, float32."""
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)


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

    The least-squares inverse of the same filterbank, clipped at zero: the pseudo-inverse is
    computed once per mel definition. This is what librosa's non-negative least squares
    (``librosa.feature.inverse.mel_to_stft``, used before) returns for these mels: its
    L-BFGS-B starts from this very point and stops there (largest difference 4e-6 on magnitudes
    up to 144, real and noisy mels), after 0.8 s of CPU per 10 s of audio on an idle 2-core
    machine, most of what Griffin-Lim cost; this takes about a millisecond.
    """
    amp = norm_to_amp(mel, cfg).T  # (n_mels, frames)
    inverse = _mel_pinv(cfg.sample_rate, cfg.n_fft, cfg.n_mels, cfg.fmin, cfg.fmax)
    return np.maximum(inverse @ amp, 0.0).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_pinv(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Pseudo-inverse of the mel filterbank, (n_fft//2 + 1, n_mels) float32; read-only (cached)."""
    inverse = np.linalg.pinv(_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)).astype(np.float32)
    inverse.setflags(write=False)
    return inverse


@functools.lru_cache(maxsize=8)
def cepstral_basis(n_mels: int, order: int) -> np.ndarray:
    """(n_mels, order) float64 orthonormal DCT-II basis over the mel bands: ``mel @ basis`` gives
    the cepstra c1..c_order of each frame of a (..., n_mels) normalised log-mel (c0, the frame's
    level, left out): its spectral envelope at about n_mels / (2 * order) bands' resolution. The
    one definition of these cepstra: the parallel pairs' DTW aligns on them and ``loss.envelope``
    weighs them. Read-only (cached: both ask for it every training step)."""
    n = np.arange(n_mels, dtype=np.float64)[:, None]
    k = np.arange(1, order + 1, dtype=np.float64)[None, :]
    basis = np.cos(np.pi * k * (n + 0.5) / n_mels) * np.sqrt(2.0 / n_mels)
    basis.setflags(write=False)
    return basis


def compensate_variance(converted: np.ndarray, source: np.ndarray, reconstruction: np.ndarray,
                        max_ratio: float) -> np.ndarray:
    """Global-variance compensation of a converted mel (Toda et al. 2007's remedy for
    over-smoothing), calibrated on the model's own reconstruction of the source.

    All three are normalised log-mels (frames, n_mels) in [0, 1] of the same source utterance:
    ``converted`` its conversion, ``source`` the mel itself, ``reconstruction`` the model's output
    for the source in its own voice. Per band, the ratio of the source's standard deviation over
    time to the reconstruction's says how much the decoder flattens that band; each band of
    ``converted`` is spread about its mean by that ratio, clipped to [1, ``max_ratio``] (never
    flattened further, never sharpened more than ``max_ratio``; 1 or less = unchanged), then
    clipped to [0, 1]. Returns float32 (frames, n_mels).
    """
    if max_ratio <= 1.0:
        return converted
    ratio = np.clip(source.std(0) / np.maximum(reconstruction.std(0), 1e-4), 1.0, max_ratio)
    mean = converted.mean(0, keepdims=True)
    return np.clip(mean + (converted - mean) * ratio, 0.0, 1.0).astype(np.float32)


def follow_level_contour(converted: np.ndarray, source: np.ndarray, weight: float) -> np.ndarray:
    """A converted mel given its source's level contour: how loud each frame is against the
    utterance's mean, the syllable-rate rise and fall that a decoder trained on an L1/L2 loss
    smooths away (onsets, stop closures, unstressed syllables) and a recogniser relies on.

    Both are normalised log-mels (frames, n_mels) in [0, 1] of the same frames (a conversion keeps
    its source's). Per frame, the mean over all bands of each, less its mean over the utterance,
    is the contour; ``converted`` moves by ``weight`` times the difference of the two, in every
    band alike, then is clipped to [0, 1]. The conversion's own mean level and spectral shape
    (where the target voice is) stay as they were: one number per frame is carried over, and
    carrying it per band group carried the source's voice with it (BENCHMARKS.md, stop 28).
    ``weight`` 0 returns ``converted``; 1 gives it the source's contour. Returns float32 (frames,
    n_mels).
    """
    if weight <= 0.0:
        return converted
    if converted.shape != source.shape:
        raise ClsvcError(f"the level contour needs the conversion and its source on the same frames: "
                         f"{converted.shape} vs {source.shape}")
    src, out = source.mean(1), converted.mean(1)
    shift = (src - src.mean()) - (out - out.mean())
    return np.clip(converted + weight * shift[:, None], 0.0, 1.0).astype(np.float32)


def trim_silence(wav: np.ndarray, top_db: float, cfg: MelConfig) -> np.ndarray:
    """Cut leading/trailing parts quieter than ``top_db`` below the peak (keeps the middle)."""
    import librosa

    if top_db <= 0:
        return wav
    _, (start, end) = librosa.effects.trim(
        wav, top_db=top_db, frame_length=cfg.win_length, hop_length=cfg.hop_length
    )
    return wav[start:end]
