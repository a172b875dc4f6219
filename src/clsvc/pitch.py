"""The F0 (pitch) contour of an utterance on the mel's frame grid, and the speaker-free pitch
features a decoder may be conditioned on (``model.f0_condition``; the remedy of AutoVC-F0, Qian
et al. 2020, "F0-consistent many-to-many non-parallel voice conversion via conditional
autoencoder").

* :func:`frame_f0` -- F0 in Hz per mel frame (0 = unvoiced): WORLD DIO refined by StoneMask
  (pyworld) with one analysis frame per mel hop (16 ms at 16 kHz), frame t centred on sample
  t * hop like the mel's (:func:`clsvc.audio.wav_to_mel`), so frame t of both describe the same
  instant. DIO + StoneMask rather than Harvest (the evaluation's tracker,
  :mod:`clsvc.evaluation.pitch`, kept separate on purpose): it is about 25 times faster, which
  matters for preprocessing a corpus and for every conversion, and it is stricter about voicing.
* :func:`f0_features` -- per utterance z-scored log F0 over the voiced frames plus the voiced
  flag, (..., T, 2). The z-score removes the speaker's pitch level (mean log F0) and range (its
  spread), so what is left is the intonation of the sentence and not the voice: the target
  speaker's level and range must come from the speaker code.
"""

from __future__ import annotations

import warnings

import numpy as np

from .config import MelConfig
from .errors import ClsvcError

F0_FLOOR = 50.0  # Hz: low male voices and creak; DIO searches [F0_FLOOR, F0_CEIL]
F0_CEIL = 800.0  # Hz: high female and child voices
# Channels of f0_features: z-scored log F0, voiced flag.
F0_DIM = 2
# Smallest log-F0 spread an utterance is divided by (0.01 natural-log units = 17 cents): a
# nearly monotone utterance keeps a nearly flat contour instead of its jitter blown up to +-1.
MIN_LOG_STD = 0.01


def frame_f0(wav: np.ndarray, n_frames: int, cfg: MelConfig) -> np.ndarray:
    """F0 contour of a mono waveform (N,) at ``cfg.sample_rate`` Hz -> (n_frames,) float32 in
    Hz, 0.0 where unvoiced.

    pyworld DIO + StoneMask searching [50, 800] Hz at a frame period of ``hop_length /
    sample_rate`` (16 ms); analysis frame t is centred on sample t * hop_length, as mel frame t
    is, and there are ``1 + N // hop_length`` of them, the mel's count. The contour is cut or
    padded with unvoiced frames to ``n_frames`` (the frame count of the mel it goes with). A
    non-finite waveform is a ClsvcError.
    """
    x = np.ascontiguousarray(np.asarray(wav, dtype=np.float64).reshape(-1))
    out = np.zeros(max(int(n_frames), 0), dtype=np.float32)
    if len(x) == 0 or len(out) == 0:
        return out
    if not np.isfinite(x).all():
        raise ClsvcError("the waveform holds NaN/inf samples; its F0 cannot be tracked (check the audio file)")
    with warnings.catch_warnings():  # pyworld imports the deprecated pkg_resources; not ours to fix
        warnings.simplefilter("ignore", DeprecationWarning)
        import pyworld

    sr = cfg.sample_rate
    period_ms = 1000.0 * cfg.hop_length / sr
    f0, t = pyworld.dio(x, sr, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=period_ms)
    f0 = pyworld.stonemask(x, f0, t, sr)
    n = min(len(out), len(f0))
    out[:n] = np.nan_to_num(f0[:n], nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0)
    return out


def f0_features(f0: np.ndarray) -> np.ndarray:
    """F0 contours (..., T) in Hz (0 = unvoiced) -> features (..., T, 2) float32, each contour
    (the last axis) on its own: channel 0 is log F0 z-scored over the contour's voiced frames
    (0 on unvoiced frames), channel 1 the voiced flag (1/0).

    The z-score makes the features invariant to multiplying F0 by a constant (another speaker's
    pitch level) and to the spread of log F0 (the speaker's range; divided by at least
    :data:`MIN_LOG_STD`). A contour with fewer than 2 voiced frames has no spread to measure and
    gives zeros in both channels. Padding with unvoiced frames changes nothing of the others.
    """
    f = np.asarray(f0, dtype=np.float64)
    voiced = np.isfinite(f) & (f > 0)
    log_f0 = np.log(np.where(voiced, f, 1.0))
    n = voiced.sum(-1, keepdims=True)
    mean = np.where(voiced, log_f0, 0.0).sum(-1, keepdims=True) / np.maximum(n, 1)
    var = np.where(voiced, (log_f0 - mean) ** 2, 0.0).sum(-1, keepdims=True) / np.maximum(n, 1)
    z = (log_f0 - mean) / np.maximum(np.sqrt(var), MIN_LOG_STD)
    usable = voiced & (n >= 2)
    return np.stack([np.where(usable, z, 0.0), usable.astype(np.float64)], axis=-1).astype(np.float32)
