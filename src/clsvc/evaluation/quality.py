"""Audio quality and intelligibility: DNSMOS P.835 (no reference), wide-band PESQ and STOI.

* :func:`dnsmos` -- Microsoft's DNSMOS P.835 (Reddy et al., ICASSP 2022) via the ``speechmos``
  package, which ships the ONNX models (nothing is downloaded). It predicts, without a reference,
  the P.835 ratings of a 16 kHz clip: speech signal quality (SIG), background-noise
  intrusiveness (BAK, higher = less intrusive) and overall quality (OVRL), plus the P.808 overall
  MOS of the companion model. All are on the 1..5 MOS scale (the polynomial mapping can land a
  little outside it on extreme input). Trained on real noisy and enhanced speech: use it to compare
  systems on the same utterances, not as a calibrated absolute score for toy or synthetic audio.
* :func:`pesq_wb` -- ITU-T P.862.2 wide-band PESQ (``pesq`` package), MOS-LQO 1.04..4.64.
* :func:`stoi` -- short-time objective intelligibility (``pystoi``), 0..1 (classic STOI by
  default, extended STOI on request).

PESQ and STOI are *intrusive*: they compare a degraded signal with a clean reference of the same
speech **with the same timing** (copy-synthesis through a vocoder, denoising, codecs, added noise).
PESQ compensates constant and piecewise delays, STOI compensates none; neither is meaningful for a
voice-converted utterance against a different recording of the same text (use
:mod:`clsvc.evaluation.mcd` or :mod:`clsvc.evaluation.pitch`, which align with DTW, for that).

All three need the ``eval`` extras; a missing package raises :class:`~clsvc.errors.ClsvcError`
naming the fix (``pip install 'clsvc[eval]'``). Check first with :func:`available`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from ..errors import ClsvcError
from .inputs import mono, require

QUALITY_RATE = 16000  # Hz: the rate of the DNSMOS models and of wide-band PESQ
DNSMOS_WINDOW_S = 9.01  # seconds: the DNSMOS input window (speechmos ``INPUT_LENGTH``); hop 1 s



def available() -> bool:
    """True when speechmos (with onnxruntime), pesq and pystoi can all be imported."""
    try:
        require("speechmos.dnsmos", "dnsmos")
        require("pesq", "pesq_wb")
        require("pystoi", "stoi")
    except ClsvcError:
        return False
    return True






def _to_rate(x: np.ndarray, sr: int, target: int) -> np.ndarray:
    if sr == target:
        return x
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    import soxr

    return np.asarray(soxr.resample(x, sr, target, quality="HQ"), dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# DNSMOS (no reference)


def dnsmos(wav: np.ndarray, sr: int = QUALITY_RATE) -> dict[str, float]:
    """DNSMOS P.835 of one utterance: ``{"sig", "bak", "ovrl", "p808"}``, MOS on a 1..5 scale.

    ``wav`` is a mono float waveform at ``sr`` Hz, full scale = 1.0. It is resampled to 16 kHz
    with soxr (HQ) when ``sr`` differs, and clipped to [-1, 1] (the models expect float audio as
    read from a 16-bit wav file, and speechmos rejects anything outside that range).

    Scoring is speechmos's port of Microsoft's ``dnsmos_local.py``: the models read
    ``DNSMOS_WINDOW_S`` = 9.01 s windows taken every 1 s; each window gets SIG/BAK/OVRL (the
    P.835 model's raw outputs mapped by the published polynomials) and a P.808 MOS, and the clip's
    scores are the means over its windows (a final part shorter than a full window past the last
    1 s hop is not scored).

    **Short clips** (under 9.01 s) are *looped*, not zero-padded: the clip is repeated and cut
    to exactly one 9.01 s window, which is scored once. (speechmos alone doubles a short clip
    until it reaches 9.01 s, so a 1 s clip became 16 s and 7 nearly identical windows — 7x the
    cost for the same content.) The joins are abrupt, so a clip that does not start and end
    quietly gets a click at each seam. The cost is about 0.2 s of CPU per window on an idle core.

    The two ONNX sessions are created once per process: ``speechmos.dnsmos.run`` keeps its model
    object in a module-level global and builds a new one only when the model type changes (this
    function always asks for the standard, non-personalised model). The first call therefore also
    pays about 1 s of session creation.

    Raises ValueError on an empty or non-finite waveform (speechmos would loop forever on an
    empty one), ClsvcError when speechmos / onnxruntime is not installed.
    """
    mod = require("speechmos.dnsmos", "dnsmos")
    x = _to_rate(mono(wav, "wav", "dnsmos"), sr, QUALITY_RATE)
    if x.size == 0:
        raise ValueError("dnsmos: wav is empty after resampling to 16 kHz")
    x32 = np.clip(x, -1.0, 1.0).astype(np.float32)
    window = int(np.ceil(DNSMOS_WINDOW_S * QUALITY_RATE))
    if len(x32) < window:  # loop to exactly one window (see above)
        x32 = np.tile(x32, -(-window // len(x32)))[:window]
    out = mod.run(x32, sr=QUALITY_RATE)
    return {
        "sig": float(out["sig_mos"]),
        "bak": float(out["bak_mos"]),
        "ovrl": float(out["ovrl_mos"]),
        "p808": float(out["p808_mos"]),
    }


# ----------------------------------------------------------------------------------------------
# Intrusive metrics (reference + degraded, same timing)


def _pair(ref: np.ndarray, deg: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Both signals as 1-D float64, cropped to the shorter length."""
    r = mono(ref, "ref", what)
    d = mono(deg, "deg", what)
    n = min(r.size, d.size)
    return r[:n], d[:n]


def pesq_wb(ref: np.ndarray, deg: np.ndarray, sr: int = QUALITY_RATE) -> float:
    """Wide-band PESQ (ITU-T P.862.2) of ``deg`` against ``ref``: MOS-LQO, 1.04 (bad) .. 4.64.

    Both are mono float waveforms at ``sr`` Hz; they are resampled to 16 kHz (soxr HQ) when ``sr``
    differs (a signal band-limited below 8 kHz, e.g. upsampled 8 kHz audio, is then scored as
    wide-band audio missing its upper band) and cropped to the shorter of the two lengths. Level
    does not matter: the ``pesq`` package scales both by their common peak and PESQ aligns levels
    itself. Identical signals score 4.64.

    Returns NaN, without an exception, when PESQ gives no score:

    * its voice-activity detector finds no utterance (``pesq.NoUtterancesError``): a silent or
      near-silent reference, and also *stationary* sound without pauses -- PESQ finds utterances
      as frames louder than a threshold set from the signal's own quieter frames, so a
      continuous synthetic vowel chain with no silence failed where the same audio with pauses
      scored 4.64 against itself;
    * the degraded signal is all zeros (PESQ's result is then NaN; a faint noise instead scores
      about 1.02), or both signals are.

    A silent output is a failure of the system under test rather than a missing value: count the
    NaNs when averaging over a corpus. Other PESQ errors (e.g. ``pesq.BufferTooShortError`` for
    clips under about 0.25 s) propagate.
    """
    mod = require("pesq", "pesq_wb")
    r, d = _pair(ref, deg, "pesq_wb")
    r = _to_rate(r, sr, QUALITY_RATE)
    d = _to_rate(d, sr, QUALITY_RATE)
    if not (np.any(r) or np.any(d)):  # pesq would divide by a zero peak
        return math.nan
    # RETURN_VALUES: a score, a negative PesqError code, or NaN (PESQ's own result for an all-zero
    # degraded signal, which the raising mode turns into a confusing "cannot convert NaN" error).
    score = float(mod.pesq(QUALITY_RATE, r, d, "wb", on_error=mod.PesqError.RETURN_VALUES))
    if math.isnan(score) or score == mod.PesqError.NO_UTTERANCES_DETECTED:
        return math.nan
    if score < 0:  # another PESQ error: run again in raising mode for its own exception type
        mod.pesq(QUALITY_RATE, r, d, "wb")
        raise RuntimeError(f"pesq_wb: PESQ failed with error code {score:g}")
    return score


def stoi(ref: np.ndarray, deg: np.ndarray, sr: int = QUALITY_RATE, extended: bool = False) -> float:
    """STOI (Taal et al. 2011) of ``deg`` against ``ref``, 0..1 (higher = more intelligible).

    Both are mono float waveforms at ``sr`` Hz (pystoi resamples them to its 10 kHz internally),
    cropped to the shorter length; they must be time-aligned, as STOI compares 384 ms segments
    frame by frame with no delay compensation. ``extended=True`` gives extended STOI (Jensen &
    Taal 2016), which also suits modulated noise maskers. pystoi first drops frames more than
    40 dB below the reference's loudest.

    Returns NaN when the score is undefined: an all-zero reference, or fewer than 30 non-silent
    frames (about 0.4 s of speech) -- where pystoi itself would warn and return 1e-5, a value that
    would drag averages down as if it were a measurement.
    """
    mod = require("pystoi", "stoi")
    r, d = _pair(ref, deg, "stoi")
    if not np.any(r):
        return math.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(mod.stoi(r, d, sr, extended=extended))
    too_short = False
    for w in caught:
        if "Not enough STFT frames" in str(w.message):
            too_short = True
        else:  # pass on anything else pystoi (or numpy under it) warned about
            warnings.warn(w.message, w.category, stacklevel=2)
    return math.nan if too_short else value
