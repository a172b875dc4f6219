"""Frame-level phone labels of an utterance, by forced alignment with PocketSphinx, or by its
phone-loop decoding where there is no transcript.

PocketSphinx (>= 5) ships a US-English acoustic model, the CMU pronouncing dictionary and a phone
n-gram model inside its wheel, so nothing is downloaded. Given the words, its aligner finds where
each phone of their pronunciation lies (10 ms frames); without words, its phone loop
(:func:`loop_phones`) says which phones it hears, a noisier answer (on 150 held-out ARCTIC
utterances 62% of its frames agree with forced alignment; BENCHMARKS.md, stop 31).
:func:`phone_labels` puts either on the mel's frame grid: one index into :data:`PHONES` per mel
frame, or :data:`UNKNOWN` where nothing is known (no transcript and no loop, a word outside the
dictionary, an alignment that failed, frames past its end). The labels supervise a content code
(``loss.phone``): they say which sound a frame is, never whose voice.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..config import MelConfig
from .manifest import norm_text

# The 39 phones of the CMU dictionary (stress dropped, as PocketSphinx's acoustic model has them)
# and silence; PocketSphinx's fillers (+NSN+, +SPN+, ...) count as silence.
PHONES: tuple[str, ...] = (
    "SIL", "AA", "AE", "AH", "AO", "AW", "AY", "B", "CH", "D", "DH", "EH", "ER", "EY", "F", "G", "HH", "IH",
    "IY", "JH", "K", "L", "M", "N", "NG", "OW", "OY", "P", "R", "S", "SH", "T", "TH", "UH", "UW", "V", "W",
    "Y", "Z", "ZH",
)
UNKNOWN = -1  # the label of a frame whose phone is not known (ignored by the loss)
_INDEX = {p: i for i, p in enumerate(PHONES)}
_ALIGN_RATE = 16000  # PocketSphinx's bundled model is for 16 kHz audio
_FRAMES_PER_SECOND = 100  # its frame rate


def available() -> bool:
    """True when pocketsphinx can be imported."""
    try:
        import pocketsphinx  # noqa: F401
    except ImportError:
        return False
    return True


@functools.lru_cache(maxsize=1)
def _aligner():
    """One decoder per process (loading the model takes about a second) and its initial
    cepstral mean, restored before each utterance so that none is heard through the last."""
    import pocketsphinx

    # bestpath off: its lattice rescoring can leave a phone 1 frame long, which the HMM cannot
    # be, and the phone pass then fails for the utterance (3 of the demo's 3 ARCTIC clips did).
    dec = pocketsphinx.Decoder(samprate=_ALIGN_RATE, loglevel="FATAL", bestpath=False)
    return dec, dec.get_cmn(False)


def _pcm16(wav: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] at ``sample_rate`` -> PocketSphinx's 16 kHz 16-bit PCM."""
    x = np.asarray(wav, dtype=np.float32).reshape(-1)
    if sample_rate != _ALIGN_RATE and x.size:
        import soxr

        x = soxr.resample(x, sample_rate, _ALIGN_RATE, quality="HQ").astype(np.float32)
    return (np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def _decode(dec: Any, cmn: Any, pcm: bytes) -> None:
    """One whole-utterance pass of ``dec`` over ``pcm``, from the same initial cepstral mean each
    time (so an utterance's labels do not depend on the ones decoded before it)."""
    dec.reinit_feat()
    dec.set_cmn(cmn)
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()


def align_phones(wav: np.ndarray, transcript: str, sample_rate: int = _ALIGN_RATE) -> list[tuple[str, float, float]]:
    """The phones of ``transcript`` in ``wav`` (float in [-1, 1]) as (phone, start s, end s),
    in order; [] when there are no words, one is not in the dictionary or the alignment fails."""
    words = norm_text(transcript)
    if not words or np.size(wav) == 0:
        return []
    pcm = _pcm16(wav, sample_rate)
    dec, cmn = _aligner()
    try:
        dec.set_align_text(words)  # RuntimeError for a word outside the dictionary
        # Two passes, as PocketSphinx's aligner works: the first finds the words, the second
        # (set_alignment) their phones.
        for second in (False, True):
            if second:
                dec.set_alignment()
            _decode(dec, cmn, pcm)
        alignment = dec.get_alignment()
    except RuntimeError:
        return []
    if alignment is None:
        return []
    step = 1.0 / _FRAMES_PER_SECOND
    return [(p.name, p.start * step, (p.start + p.duration) * step) for p in alignment.phones()]


@functools.lru_cache(maxsize=1)
def _phone_loop():
    """One phone-loop decoder per process and its initial cepstral mean (as :func:`_aligner`).
    The settings are PocketSphinx's own for phone decoding (its documentation: language weight
    2-10, a wide beam); lw 2 and a phone insertion penalty of 0.3 gave the best agreement with
    forced alignment on held-out ARCTIC of the few values tried."""
    import os

    import pocketsphinx

    model = os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us-phone.lm.bin")
    dec = pocketsphinx.Decoder(samprate=_ALIGN_RATE, loglevel="FATAL", allphone=model, lm=None, bestpath=False,
                               lw=2.0, pip=0.3, beam=1e-20, pbeam=1e-20)
    return dec, dec.get_cmn(False)


def loop_phones(wav: np.ndarray, sample_rate: int = _ALIGN_RATE) -> list[tuple[str, float, float]]:
    """The phones PocketSphinx hears in ``wav`` (float in [-1, 1]) without a transcript, by
    phone-loop decoding, as (phone, start s, end s) in order; silence and fillers are named
    ``SIL``/``+...+``. [] for empty audio or a failed decoding."""
    if np.size(wav) == 0:
        return []
    dec, cmn = _phone_loop()
    try:
        _decode(dec, cmn, _pcm16(wav, sample_rate))
        segs = list(dec.seg())
    except RuntimeError:
        return []
    step = 1.0 / _FRAMES_PER_SECOND
    return [(s.word, s.start_frame * step, (s.end_frame + 1) * step) for s in segs]  # end_frame is inclusive


def phone_labels(wav: np.ndarray, transcript: str, frames: int, mel: MelConfig, loop: bool = False) -> np.ndarray:
    """(frames,) int16: the index in :data:`PHONES` of the phone at each mel frame of ``wav``
    (the samples the mel was made from, at ``mel.sample_rate``; frame i centred at i * hop),
    :data:`UNKNOWN` where it is not known. By forced alignment of ``transcript``; where that gives
    nothing (no transcript, a word outside the dictionary, a failed alignment), by phone-loop
    decoding with ``loop``, else all UNKNOWN."""
    out = np.full(frames, UNKNOWN, dtype=np.int16)
    centres = np.arange(frames) * (mel.hop_length / mel.sample_rate)  # seconds
    found = align_phones(wav, transcript, mel.sample_rate)
    if not found and loop:
        found = loop_phones(wav, mel.sample_rate)
    for name, start, end in found:
        idx = _INDEX.get(name, 0 if name.startswith("+") else UNKNOWN)  # fillers are silence
        out[(centres >= start) & (centres < end)] = idx
    return out
