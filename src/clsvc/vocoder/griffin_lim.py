"""Griffin-Lim phase reconstruction from the package's mel-spectrogram."""

from __future__ import annotations

import numpy as np

from ..audio import mel_to_linear
from ..config import MelConfig


class GriffinLim:
    """mel (frames, n_mels) in [0, 1] -> waveform (samples,) float32 at ``cfg.sample_rate``.

    The mel is inverted to a linear magnitude by the least-squares inverse of the same filter
    bank, clipped at zero (:func:`clsvc.audio.mel_to_linear`), then ``cfg.griffin_lim_iters``
    iterations of fast Griffin-Lim (momentum 0.99) estimate the phase with the same STFT settings.
    Deterministic: the initial phase is seeded.
    """

    def __init__(self, cfg: MelConfig, n_iter: int | None = None, seed: int = 0):
        self.cfg = cfg
        self.n_iter = n_iter or cfg.griffin_lim_iters
        self.seed = seed

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        import librosa

        cfg = self.cfg
        mag = mel_to_linear(np.asarray(mel, dtype=np.float32), cfg)
        wav = librosa.griffinlim(
            mag, n_iter=self.n_iter, hop_length=cfg.hop_length, win_length=cfg.win_length,
            n_fft=cfg.n_fft, window="hann", center=True, momentum=0.99, init="random",
            random_state=self.seed,
        )
        peak = float(np.max(np.abs(wav))) if wav.size else 0.0
        if peak > 0.99:  # rare, but clipping sounds worse than a slightly quieter file
            wav = wav * (0.99 / peak)
        return wav.astype(np.float32)
