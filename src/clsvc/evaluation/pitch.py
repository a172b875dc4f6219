"""F0 (pitch) tracks and the F0 error between two utterances of the same text.

* :func:`f0_track` -- a WORLD F0 contour (pyworld), one value per 5 ms frame, 0 = unvoiced.
* :func:`f0_error` -- log-F0 RMSE in cents, log-F0 correlation and V/UV error of a converted (or
  otherwise degraded) utterance against a reference, after DTW alignment, so that the two need
  not have the same timing.

**Extractor.** The default is pyworld **Harvest**; ``method="dio"`` gives DIO + StoneMask. On
3 s of 16 kHz synthetic speech with a known F0 (helpers' ``synth_utterance``, on a shared, lightly
loaded 2-core machine), Harvest took about 0.44 s per call and DIO + StoneMask about 0.017 s, but
Harvest's error against the true contour was 8 cents RMS (99th percentile 40 cents) against
DIO's 19 cents (99th percentile 122, i.e. occasional gross errors), and with white noise at
5 dB SNR 19 against 40 cents. RMSE is dominated by such gross errors, so the slower, more robust
tracker is the default; :func:`f0_error` calls it twice, so a 3 s pair costs about 1 s of CPU
(about 0.2-0.4 s with DIO, the rest being envelopes and DTW). Harvest's known bias is towards
*voiced*: it extends voicing into the edges of pauses and called 44 % of the frames of a
white-noise "fricative" voiced (DIO + StoneMask: 3 %), so with Harvest the V/UV error
under-counts voiced/unvoiced confusions in noise-like segments; use ``method="dio"`` when V/UV is
the quantity of interest or speed matters.

**Protocol of** :func:`f0_error` (also in :data:`PROTOCOL` for reports): F0 of both signals
every 5 ms; WORLD mel-cepstra of both on the same 5 ms grid
(:func:`clsvc.evaluation.mcd.mcep_from_wav`: CheapTrick envelope, order 24, alpha 0.42); the
whole c1..c24 sequences aligned with DTW (librosa, Euclidean), as for MCD; then only path pairs
whose frames are both within 40 dB of their own utterance's loudest frame are scored (MCD drops
such silence *before* aligning; here that made a copy with noise-filled pauses align its noise
to the other's speech, so silence is dropped after). Over the scored pairs voiced in both: the
RMS of ``1200 log2(f0_deg / f0_ref)`` (cents) and the Pearson correlation of log F0; over all
scored pairs: the share where one is voiced and the other is not. The envelope is (by design of
CheapTrick) nearly independent of F0, so a transposed copy aligns as well as the original.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from ..errors import ClsvcError
from .inputs import mono, require
from .mcd import DEFAULT_SILENCE_DB, MIN_FRAMES, mcep_from_wav

DEFAULT_FRAME_PERIOD_MS = 5.0
F0_FLOOR = 71.0  # Hz, pyworld's default search range (covers low male to high female/child voices)
F0_CEIL = 800.0  # Hz
CENTS_PER_OCTAVE = 1200.0

Method = Literal["harvest", "dio"]

PROTOCOL = (
    "**F0 error.** F0 is tracked every 5 ms with WORLD Harvest (pyworld). The reference and the "
    "converted utterance are aligned with dynamic time warping (librosa, Euclidean distance) on "
    "their order-24 WORLD mel-cepstra c1–c24 (CheapTrick envelope, α = 0.42); aligned frame pairs "
    "are scored when both frames are within 40 dB of their own utterance's loudest frame. Over "
    "scored pairs voiced in both, the log-F0 RMSE is √mean((1200 · log2(F0_conv / F0_ref))²) in "
    "cents (100 cents = one semitone; 0 = identical) and the F0 correlation is Pearson's r of "
    "log F0; the V/UV error is the share of scored pairs where exactly one of the two frames is "
    "voiced."
)



def available() -> bool:
    """True when pyworld and pysptk (both needed by :func:`f0_error`) can be imported."""
    try:
        require("pyworld", "f0_track")
        require("pysptk", "f0_error")
    except ClsvcError:
        return False
    return True


def f0_track(
    wav: np.ndarray,
    sr: int = 16000,
    frame_period_ms: float = DEFAULT_FRAME_PERIOD_MS,
    method: Method = "harvest",
    f0_floor: float = F0_FLOOR,
    f0_ceil: float = F0_CEIL,
) -> np.ndarray:
    """F0 contour of a mono waveform at ``sr`` Hz: ``(frames,)`` float64 in Hz, 0.0 where unvoiced.

    Frame ``i`` is centred at ``i * frame_period_ms`` milliseconds; there are
    ``floor(len(wav) / (sr * frame_period_ms / 1000)) + 1`` frames (pyworld's grid, the one
    :func:`clsvc.evaluation.mcd.mcep_from_wav` uses too). ``method`` is ``"harvest"`` (default:
    robust, about 0.15 s of CPU per second of audio) or ``"dio"`` (DIO refined by StoneMask, about
    25 times faster, more gross errors, stricter voicing); see the module docstring for the
    measurements. F0 is searched in ``[f0_floor, f0_ceil]`` Hz. Any sample rate works (pyworld
    analyses it as is); the level does not matter.

    Raises ValueError on an empty or non-finite waveform, ClsvcError without pyworld.
    """
    pw = require("pyworld", "f0_track")
    x = mono(wav, "wav", "f0_track")
    if method == "harvest":
        f0, _ = pw.harvest(x, sr, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period_ms)
    elif method == "dio":
        f0, t = pw.dio(x, sr, f0_floor=f0_floor, f0_ceil=f0_ceil, frame_period=frame_period_ms)
        f0 = pw.stonemask(x, f0, t, sr)
    else:
        raise ValueError(f"f0_track: method must be 'harvest' or 'dio', got {method!r}")
    return np.asarray(f0, dtype=np.float64)


def _speech_mask(energy_db: np.ndarray, silence_db: float | None) -> np.ndarray:
    """Frames within ``silence_db`` of the utterance's loudest (all frames when None).

    As for MCD (:func:`clsvc.evaluation.mcd.mcd`): when fewer than ``MIN_FRAMES`` frames would
    pass, the loudest ``MIN_FRAMES`` are kept.
    """
    e = np.where(np.isfinite(energy_db), energy_db, -np.inf)
    if silence_db is None or not np.isfinite(np.max(e)):
        return np.ones(len(e), dtype=bool)
    keep = e >= np.max(e) - silence_db
    if keep.sum() < min(MIN_FRAMES, len(e)):
        keep = np.zeros(len(e), dtype=bool)
        keep[np.argsort(-e, kind="stable")[:MIN_FRAMES]] = True
    return keep


def f0_error(
    ref: np.ndarray,
    deg: np.ndarray,
    sr: int = 16000,
    frame_period_ms: float = DEFAULT_FRAME_PERIOD_MS,
    method: Method = "harvest",
    silence_db: float | None = DEFAULT_SILENCE_DB,
    deg_f0: np.ndarray | None = None,
) -> dict[str, float]:
    """F0 error of ``deg`` (e.g. converted speech) against ``ref``, both mono at ``sr`` Hz.

    Steps (see the module docstring): :func:`f0_track` of both (``method``, ``frame_period_ms``);
    WORLD mel-cepstra of both on the same grid (:func:`clsvc.evaluation.mcd.mcep_from_wav`); DTW
    of the whole c1..c24 sequences (``librosa.sequence.dtw``, Euclidean); then only the path's
    pairs whose two frames are both *speech* are scored, a frame being speech when it is within
    ``silence_db`` dB of its own utterance's loudest frame (WORLD envelope energy; ``None`` scores
    every pair; when fewer than 5 frames would pass, the loudest 5 are kept, as for MCD). Frames
    are dropped *after* the alignment, not before as for MCD, so that a signal whose pauses are
    filled with noise still aligns pause to pause: dropping first forced its noise frames onto the
    other signal's speech and gave gross errors (hundreds of cents at 20 dB SNR). Statistics are
    over path pairs, so a frame matched to several frames counts several times (as in MCD).

    Returns a dict:

    * ``log_f0_rmse_cents`` -- ``sqrt(mean((1200 log2(f0_deg / f0_ref))^2))`` over the scored
      pairs voiced in both, in cents (100 = a semitone). Includes any constant transposition: a
      copy one semitone up reads about 100. Being an RMS, it is dominated by gross (e.g. octave)
      errors, which F0 trackers make mostly at voicing onsets and offsets.
    * ``log_f0_mean_cents`` -- the signed mean of the same differences (the transposition part:
      positive = ``deg`` higher); ``rmse^2 - mean^2`` is the variance around it.
    * ``f0_corr`` -- Pearson correlation of ``log f0_ref`` and ``log f0_deg`` over the same pairs
      (blind to a constant transposition; NaN when either side has no variance).
    * ``vuv_error`` -- share (0..1) of the scored pairs where exactly one frame is voiced. Speech
      in one signal against a pause in the other is not counted (that is a timing/energy error,
      not a voicing one).
    * ``voiced_pairs`` (int) -- how many scored pairs are voiced in both (weights for a corpus
      mean of the F0 numbers), ``scored_pairs`` (int) -- how many pairs are scored (weights for
      V/UV), ``aligned_pairs`` (int) -- the DTW path length.

    The F0 numbers are NaN when fewer than 2 scored pairs are voiced in both, ``vuv_error`` when
    no pair is scored. Identical inputs give 0 cents, correlation 1 and V/UV error 0.

    ``deg_f0``: ``deg``'s contour when the caller already has it (``f0_track(deg, sr,
    frame_period_ms, method)``, e.g. from :func:`pitch_level_of`), so that it is not tracked twice.

    Raises ValueError on empty or non-finite input, ClsvcError without pyworld / pysptk.
    """
    import librosa

    require("pysptk", "f0_error")
    r = mono(ref, "ref", "f0_error")
    d = mono(deg, "deg", "f0_error")
    f0s, ceps, speech = [], [], []
    for x, known in ((r, None), (d, deg_f0)):
        f0 = f0_track(x, sr, frame_period_ms, method) if known is None else np.asarray(known, dtype=np.float64)
        mcep, energy = mcep_from_wav(x, sr, frame_period_ms=frame_period_ms)
        n = min(len(f0), len(mcep))  # the same pyworld grid: equal, cropped only as a guard
        f0s.append(f0[:n])
        ceps.append(mcep[:n, 1:])  # c1..cD: c0 (gain) does not take part in the alignment
        speech.append(_speech_mask(energy[:n], silence_db))
    _, wp = librosa.sequence.dtw(X=ceps[0].T, Y=ceps[1].T, metric="euclidean")
    i, j = wp[:, 0], wp[:, 1]
    scored = speech[0][i] & speech[1][j]
    a = f0s[0][i][scored]
    b = f0s[1][j][scored]
    va, vb = a > 0, b > 0
    both = va & vb
    out: dict[str, float] = {
        "log_f0_rmse_cents": math.nan,
        "log_f0_mean_cents": math.nan,
        "f0_corr": math.nan,
        "vuv_error": float(np.mean(va != vb)) if scored.any() else math.nan,
        "voiced_pairs": int(both.sum()),
        "scored_pairs": int(scored.sum()),
        "aligned_pairs": int(len(wp)),
    }
    if both.sum() >= 2:
        la, lb = np.log2(a[both]), np.log2(b[both])
        cents = CENTS_PER_OCTAVE * (lb - la)
        out["log_f0_rmse_cents"] = float(np.sqrt(np.mean(cents**2)))
        out["log_f0_mean_cents"] = float(np.mean(cents))
        if np.std(la) > 0 and np.std(lb) > 0:
            out["f0_corr"] = float(np.corrcoef(la, lb)[0, 1])
    return out


#: Fewer voiced frames than this (5 ms each, i.e. 0.1 s) give no pitch level.
MIN_VOICED_FRAMES = 20


def pitch_level(wavs: np.ndarray | list[np.ndarray], sr: int = 16000, method: Method = "harvest") -> float:
    """A voice's pitch level: the median F0 in Hz over the voiced frames of one or more mono
    waveforms at ``sr`` Hz (:func:`f0_track`). NaN when fewer than :data:`MIN_VOICED_FRAMES`
    frames are voiced in all of them together.

    Harvest by default: on Griffin-Lim output DIO calls much of the phasey noise voiced at a low
    F0, and even the median moves (three LibriSpeech test-other utterances, the recording by DIO /
    its Griffin-Lim copy by DIO / the copy by Harvest: 178 / 128 / 187, 235 / 147 / 232 and
    181 / 183 / 190 Hz)."""
    if isinstance(wavs, np.ndarray):
        wavs = [wavs]
    return pitch_level_of([f0_track(w, sr, method=method) for w in wavs])


def pitch_level_of(tracks: list[np.ndarray]) -> float:
    """:func:`pitch_level` from F0 contours already tracked (:func:`f0_track`; Hz, 0 = unvoiced):
    the median over their voiced frames, NaN below :data:`MIN_VOICED_FRAMES`."""
    voiced = [np.asarray(f)[np.asarray(f) > 0] for f in tracks]
    f0 = np.concatenate(voiced) if voiced else np.zeros(0)
    return float(np.median(f0)) if len(f0) >= MIN_VOICED_FRAMES else math.nan


def level_cents(f0_hz: float, ref_hz: float) -> float:
    """Signed distance of pitch level ``f0_hz`` from ``ref_hz`` in cents (1200 per octave;
    positive = higher); NaN when either is NaN or not positive."""
    if not (f0_hz > 0 and ref_hz > 0):
        return math.nan
    return CENTS_PER_OCTAVE * math.log2(f0_hz / ref_hz)

