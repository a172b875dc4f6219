"""Content preservation: transcribe with PocketSphinx, score with WER / CER (jiwer).

PocketSphinx (>= 5) ships its US-English acoustic model, language model and dictionary inside
the wheel, so nothing is downloaded. It is a small, old-fashioned recogniser: absolute error
rates on converted (or even natural) speech are high; use the numbers to compare systems on the
same utterances (e.g. source vs. converted), not as an absolute intelligibility measure.
"""

from __future__ import annotations

import functools
import re

import numpy as np

ASR_RATE = 16000


def available() -> bool:
    """True when both pocketsphinx and jiwer can be imported."""
    try:
        import jiwer  # noqa: F401
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _decoder():
    """The recogniser (loaded once) and its initial cepstral mean."""
    import pocketsphinx

    # Default model = the bundled en-us HMM, en-us.lm.bin and cmudict-en-us.dict.
    # loglevel FATAL silences the INFO/WARN chatter the C library prints to stderr.
    dec = pocketsphinx.Decoder(samprate=ASR_RATE, loglevel="FATAL")
    return dec, dec.get_cmn(False)


def transcribe(wav: np.ndarray, sample_rate: int = ASR_RATE) -> str:
    """Recognise one utterance (float waveform in [-1, 1]) -> lowercase words ("" if none)."""
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if x.size == 0:
        return ""
    if sample_rate != ASR_RATE:
        import soxr

        x = soxr.resample(x, sample_rate, ASR_RATE, quality="HQ").astype(np.float32)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
    dec, cmn = _decoder()
    # Each utterance as a fresh recogniser hears it: the front end's noise estimate and the
    # cepstral mean otherwise carry over from the utterance before, so the same audio could be
    # heard differently depending on what was transcribed first (BENCHMARKS.md, stop 28).
    dec.reinit_feat()
    dec.set_cmn(cmn)
    dec.start_utt()
    dec.process_raw(pcm.tobytes(), full_utt=True)
    dec.end_utt()
    hyp = dec.hyp()
    return normalize_text(hyp.hypstr) if hyp is not None and hyp.hypstr else ""


_APOSTROPHES = re.compile("[\u2018\u2019\u02bc`]")
_NOT_WORD = re.compile(r"[^\w\s']|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def normalize_text(s: str) -> str:
    """Lowercase, punctuation -> space (apostrophes kept only inside words), single spaces.

    ``"Don't  stop -- 'now'!"`` -> ``"don't stop now"``; hyphens split words (``"x-ray"`` ->
    ``"x ray"``).
    """
    s = _APOSTROPHES.sub("'", str(s).lower())
    s = _NOT_WORD.sub(" ", s)
    s = _LOOSE_APOSTROPHE.sub(" ", s)
    return _SPACES.sub(" ", s).strip()


def error_rates(reference: str, hypothesis: str) -> dict:
    """Word and character error rates of ``hypothesis`` against ``reference`` (normalised first).

    Returns ``{"wer", "cer", "words", "chars"}``: the rates, and the normalised reference's word
    and character counts (so a corpus-level rate is the ``words``/``chars``-weighted mean).
    CER counts characters of the normalised text including the single spaces between words.
    An empty (after normalisation) reference gives 0.0 when the hypothesis is empty too and 1.0
    otherwise (rates are undefined there; 1.0 = "everything recognised is wrong").
    """
    import jiwer

    ref = normalize_text(reference)
    hyp = normalize_text(hypothesis)
    if not ref:
        rate = 0.0 if not hyp else 1.0
        return {"wer": rate, "cer": rate, "words": 0, "chars": 0}
    if not hyp:  # jiwer rejects empty strings in some versions; all reference tokens are deleted
        return {"wer": 1.0, "cer": 1.0, "words": len(ref.split()), "chars": len(ref)}
    return {
        "wer": float(jiwer.wer(ref, hyp)),
        "cer": float(jiwer.cer(ref, hyp)),
        "words": len(ref.split()),
        "chars": len(ref),
    }
