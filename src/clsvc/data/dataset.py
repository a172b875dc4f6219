"""In-memory features and the fixed-length crop sampler used for training.

All features of a split are loaded once (VCTK at 16 kHz is about 1 GB of float32 mels); batches
are then drawn in the training process from a ``torch.Generator`` that is part of the training
state, so a resumed run draws exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .manifest import Entry, features_n_mels, load_aligned_wav, load_feature, read_manifest


@dataclass
class Batch:
    """``mel`` (B, T, n_mels) float32 in [0, 1]; ``lengths`` (B,) valid frames per row (the rest
    is padding); ``speaker`` (B,) speaker indices into the training speaker list; ``wav``
    (B, T * hop) float32 in [-1, 1], the waveform the crops were made from (zero past each row's
    valid samples), only when the set was loaded ``with_wav``."""

    mel: torch.Tensor
    lengths: torch.Tensor
    speaker: torch.Tensor
    wav: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``."""
        wav = self.wav.to(device) if self.wav is not None else None
        return Batch(self.mel.to(device), self.lengths.to(device), self.speaker.to(device), wav)

    def extra(self) -> dict[str, torch.Tensor]:
        """Keyword inputs beyond (mel, lengths, speaker) for a system's forward (``wav``)."""
        return {"wav": self.wav} if self.wav is not None else {}


class FeatureSet:
    """Features of the manifest rows whose split is in ``splits``.

    Each file is validated on load (:func:`clsvc.data.manifest.load_feature`): 2-D float with the
    features' mel bands, the manifest's frame count, finite values in [0, 1]; a bad one is a
    one-line ClsvcError naming it.

    ``speakers`` fixes the speaker -> index map (the training speaker list); rows of other
    speakers get index -1 (usable for embedding, not for classification).
    """

    def __init__(self, folder: str | Path, splits: tuple[str, ...], speakers: list[str] | None = None,
                 entries: list[Entry] | None = None, with_wav: bool = False, hop: int = 256):
        self.folder = Path(folder)
        entries = entries if entries is not None else read_manifest(self.folder)
        self.entries = [e for e in entries if e.split in splits]
        if speakers is None:
            speakers = sorted({e.speaker for e in self.entries})
        self.speakers = list(speakers)
        index = {s: i for i, s in enumerate(self.speakers)}
        self.labels = np.array([index.get(e.speaker, -1) for e in self.entries], dtype=np.int64)
        # Every file is checked as it is loaded (shape, frame count, finite values in [0, 1]):
        # a bad one would otherwise crash training late or poison the speaker table silently.
        n_mels = features_n_mels(self.folder)
        self.mels: list[np.ndarray] = [load_feature(self.folder, e, n_mels) for e in self.entries]
        # Aligned 16-bit waveforms (frames * hop samples each), for systems that learn audio.
        self.hop = hop
        self.wavs: list[np.ndarray] | None = (
            [load_aligned_wav(self.folder, e, hop) for e in self.entries] if with_wav else None)
        # Utterance indices per speaker, for speaker-balanced sampling.
        self.by_speaker = [np.flatnonzero(self.labels == i) for i in range(len(self.speakers))]

    def __len__(self) -> int:
        return len(self.entries)

    def crop(self, idx: int, start: int, crop_frames: int, pad_value: float) -> tuple[np.ndarray, int]:
        """Frames [start, start + crop_frames) of utterance ``idx``, padded with ``pad_value``
        when it is shorter: ((crop_frames, n_mels), valid frames)."""
        mel = self.mels[idx]
        if len(mel) >= crop_frames:
            return mel[start:start + crop_frames], crop_frames
        out = np.full((crop_frames, mel.shape[1]), pad_value, dtype=np.float32)
        out[: len(mel)] = mel
        return out, len(mel)

    def sample(self, batch_size: int, crop_frames: int, gen: torch.Generator,
               sampling: str = "speaker", pad_value: float = 0.0) -> Batch:
        """A batch of random T-frame crops (shorter utterances padded with ``pad_value``)."""
        if sampling == "speaker":
            usable = [i for i, b in enumerate(self.by_speaker) if len(b)]
            spk = torch.randint(len(usable), (batch_size,), generator=gen).tolist()
            pick = torch.rand(batch_size, generator=gen).tolist()
            idx = []
            for s, p in zip(spk, pick, strict=True):
                pool = self.by_speaker[usable[s]]
                idx.append(int(pool[min(int(p * len(pool)), len(pool) - 1)]))
        else:
            idx = torch.randint(len(self), (batch_size,), generator=gen).tolist()
        offs = torch.rand(batch_size, generator=gen).tolist()
        mels, lengths, wavs = [], [], []
        for i, o in zip(idx, offs, strict=True):
            n = len(self.mels[i])
            start = int(o * (n - crop_frames + 1)) if n > crop_frames else 0
            m, length = self.crop(i, start, crop_frames, pad_value)
            mels.append(m)
            lengths.append(length)
            if self.wavs is not None:
                w = np.zeros(crop_frames * self.hop, dtype=np.float32)
                piece = self.wavs[i][start * self.hop:(start + length) * self.hop]
                w[: len(piece)] = piece.astype(np.float32) / 32767.0
                wavs.append(w)
        return Batch(
            torch.from_numpy(np.stack(mels)),
            torch.tensor(lengths, dtype=torch.long),
            torch.from_numpy(self.labels[idx]),
            torch.from_numpy(np.stack(wavs)) if wavs else None,
        )

    def fixed_batches(self, n_batches: int, batch_size: int, crop_frames: int,
                      pad_value: float = 0.0, seed: int = 0) -> list[Batch]:
        """Deterministic batches for validation: the same crops at every evaluation."""
        gen = torch.Generator().manual_seed(seed)
        n_batches = min(n_batches, max(1, (len(self) + batch_size - 1) // batch_size))
        return [self.sample(batch_size, crop_frames, gen, "utterance", pad_value)
                for _ in range(n_batches)]
