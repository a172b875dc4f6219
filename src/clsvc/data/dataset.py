"""In-memory features and the fixed-length crop sampler used for training.

All features of a split are loaded once (VCTK at 16 kHz is about 1 GB of float32 mels); batches
are then drawn in the training process from a ``torch.Generator`` that is part of the training
state, so a resumed run draws exactly the batches an uninterrupted run would have drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import torch

from ..audio import cepstral_basis
from ..errors import ClsvcError
from ..pitch import f0_features
from .align import PHONES, UNKNOWN
from .manifest import (
    Entry,
    features_n_mels,
    load_aligned_wav,
    load_f0,
    load_feature,
    load_phones,
    norm_text,
    read_manifest,
)


@dataclass
class ParallelBatch:
    """Parallel pairs for a supervised conversion term: ``mel`` (B, T, n_mels) crops of the
    source utterances and ``lengths`` (B,) their valid frames; ``target`` (B, T, n_mels) the
    target speakers' utterances of the same transcripts, time-aligned to the source crops frame
    by frame (DTW; padding copies the source's pad value); ``speaker`` / ``target_speaker`` (B,)
    their speaker indices; ``f0`` (B, T, 2) the source crops' pitch features when the set has
    them."""

    mel: torch.Tensor
    lengths: torch.Tensor
    target: torch.Tensor
    speaker: torch.Tensor
    target_speaker: torch.Tensor
    f0: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ParallelBatch:
        """The batch on ``device``."""
        f0 = self.f0.to(device) if self.f0 is not None else None
        return ParallelBatch(self.mel.to(device), self.lengths.to(device), self.target.to(device),
                             self.speaker.to(device), self.target_speaker.to(device), f0)


def _cepstra(mel: np.ndarray, order: int = 24) -> np.ndarray:
    """(T, n_mels) [0, 1] log-mel -> (T, order) cepstra without c0 (the loudness), for DTW."""
    return mel.astype(np.float64) @ cepstral_basis(mel.shape[1], order)


def align_frames(src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
    """For two mels (Ta, M), (Tb, M) of the same words: (Ta,) int indices into ``tgt``, the
    target frame DTW matches to each source frame (the first of several). DTW runs on the
    mel-cepstra without c0, so the two voices' loudness does not steer the path."""
    _, path = librosa.sequence.dtw(_cepstra(src).T, _cepstra(tgt).T, metric="euclidean")
    out = np.zeros(len(src), dtype=np.int64)
    seen = np.zeros(len(src), dtype=bool)
    for i, j in path[::-1]:  # librosa gives the path from the end; keep each i's first j
        if not seen[i]:
            out[i], seen[i] = j, True
    return out


@dataclass
class Batch:
    """``mel`` (B, T, n_mels) float32 in [0, 1]; ``lengths`` (B,) valid frames per row (the rest
    is padding); ``speaker`` (B,) speaker indices into the training speaker list; ``wav``
    (B, T * hop) float32 in [-1, 1], the waveform the crops were made from (zero past each row's
    valid samples), only when the set was loaded ``with_wav``; ``f0`` (B, T, 2) float32, the pitch
    features of the crops' frames (:func:`clsvc.pitch.f0_features` of each *whole* utterance's
    contour, then cropped like the mels; 0 = unvoiced on padded frames), only when the set was
    loaded ``with_f0``; ``phones`` (B, T) int64, each frame's index into
    :data:`clsvc.data.align.PHONES` (-1 = unknown, and on padded frames), only when the set was
    loaded ``with_phones``."""

    mel: torch.Tensor
    lengths: torch.Tensor
    speaker: torch.Tensor
    wav: torch.Tensor | None = None
    f0: torch.Tensor | None = None
    parallel: ParallelBatch | None = None
    phones: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``."""
        wav = self.wav.to(device) if self.wav is not None else None
        f0 = self.f0.to(device) if self.f0 is not None else None
        par = self.parallel.to(device) if self.parallel is not None else None
        phones = self.phones.to(device) if self.phones is not None else None
        return Batch(self.mel.to(device), self.lengths.to(device), self.speaker.to(device), wav, f0, par, phones)

    def extra(self) -> dict[str, torch.Tensor]:
        """Keyword inputs beyond (mel, lengths, speaker) for a system's forward (``wav``, ``f0``,
        ``phones``; with parallel pairs ``par_mel``, ``par_lengths``, ``par_target`` and ``par_f0``)."""
        out: dict[str, torch.Tensor] = {}
        if self.wav is not None:
            out["wav"] = self.wav
        if self.f0 is not None:
            out["f0"] = self.f0
        if self.phones is not None:
            out["phones"] = self.phones
        if self.parallel is not None:
            p = self.parallel
            out.update(par_mel=p.mel, par_lengths=p.lengths, par_target=p.target)
            if p.f0 is not None:
                out["par_f0"] = p.f0
        return out


class FeatureSet:
    """Features of the manifest rows whose split is in ``splits``.

    Each file is validated on load (:func:`clsvc.data.manifest.load_feature`): 2-D float with the
    features' mel bands, the manifest's frame count, finite values in [0, 1]; a bad one is a
    one-line ClsvcError naming it.

    ``speakers`` fixes the speaker -> index map (the training speaker list); rows of other
    speakers get index -1 (usable for embedding, not for classification).

    ``with_wav``: also load the aligned waveforms (``clsvc preprocess --keep-wav``);
    ``with_f0``: also load the F0 contours (``clsvc preprocess --f0``) and keep each utterance's
    pitch features (T, 2); ``with_phones``: also load the phone labels (``clsvc preprocess
    --phones``). A missing file is a one-line ClsvcError saying how to make it.
    """

    def __init__(self, folder: str | Path, splits: tuple[str, ...], speakers: list[str] | None = None,
                 entries: list[Entry] | None = None, with_wav: bool = False, hop: int = 256,
                 with_f0: bool = False, with_phones: bool = False):
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
        # Pitch features (T, 2) per utterance. They are z-scored over the whole utterance, as the
        # converter does at inference, not over each crop: a short crop's spread is its jitter.
        self.f0s: list[np.ndarray] | None = (
            [f0_features(load_f0(self.folder, e)) for e in self.entries] if with_f0 else None)
        # Phone labels (T,) per utterance, -1 where unknown.
        self.phones: list[np.ndarray] | None = (
            [load_phones(self.folder, e, len(PHONES)) for e in self.entries] if with_phones else None)
        # Utterance indices per speaker, for speaker-balanced sampling.
        self.by_speaker = [np.flatnonzero(self.labels == i) for i in range(len(self.speakers))]
        # Ordered pairs (i, j) of utterances with the same transcript by two labelled speakers,
        # for the parallel conversion term; their DTW paths are made the first time a pair is drawn.
        groups: dict[str, list[int]] = {}
        for i, e in enumerate(self.entries):
            text = norm_text(e.transcript)
            if text and self.labels[i] >= 0:
                groups.setdefault(text, []).append(i)
        self.pairs: list[tuple[int, int]] = [
            (i, j) for g in groups.values() for i in g for j in g if self.entries[i].speaker != self.entries[j].speaker]
        self._aligned: dict[tuple[int, int], np.ndarray] = {}

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
        """A batch of random T-frame crops (shorter utterances padded with ``pad_value``).
        ``sampling`` (see ``TrainConfig.sampling``): "speaker", "utterance" or "sqrt"."""
        if sampling in ("speaker", "sqrt"):
            usable = [i for i, b in enumerate(self.by_speaker) if len(b)]
            if sampling == "speaker":
                spk = torch.randint(len(usable), (batch_size,), generator=gen).tolist()
            else:
                weights = torch.tensor([len(self.by_speaker[i]) for i in usable], dtype=torch.float64).sqrt()
                spk = torch.multinomial(weights, batch_size, replacement=True, generator=gen).tolist()
            pick = torch.rand(batch_size, generator=gen).tolist()
            idx = []
            for s, p in zip(spk, pick, strict=True):
                pool = self.by_speaker[usable[s]]
                idx.append(int(pool[min(int(p * len(pool)), len(pool) - 1)]))
        else:
            idx = torch.randint(len(self), (batch_size,), generator=gen).tolist()
        offs = torch.rand(batch_size, generator=gen).tolist()
        mels, lengths, wavs, f0s, phones = [], [], [], [], []
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
            if self.f0s is not None:
                f = np.zeros((crop_frames, self.f0s[i].shape[1]), dtype=np.float32)  # padding: unvoiced
                f[:length] = self.f0s[i][start:start + length]
                f0s.append(f)
            if self.phones is not None:
                p = np.full(crop_frames, UNKNOWN, dtype=np.int64)  # padding: unknown
                p[:length] = self.phones[i][start:start + length]
                phones.append(p)
        return Batch(
            torch.from_numpy(np.stack(mels)),
            torch.tensor(lengths, dtype=torch.long),
            torch.from_numpy(self.labels[idx]),
            torch.from_numpy(np.stack(wavs)) if wavs else None,
            torch.from_numpy(np.stack(f0s)) if f0s else None,
            phones=torch.from_numpy(np.stack(phones)) if phones else None,
        )

    def sample_parallel(self, n_pairs: int, crop_frames: int, gen: torch.Generator,
                        pad_value: float = 0.0) -> ParallelBatch:
        """``n_pairs`` random ordered pairs (uniform over :attr:`pairs`), each a random crop of the
        source with the target's DTW-aligned frames. No pairs is a one-line ClsvcError."""
        if not self.pairs:
            raise ClsvcError("loss.parallel needs parallel utterances (two training speakers with the same transcript "
                             "in manifest.tsv, as ARCTIC's prompts.txt gives) and these features have none: "
                             "set loss.parallel=0 or preprocess a parallel corpus")
        picks = torch.randint(len(self.pairs), (n_pairs,), generator=gen).tolist()
        offs = torch.rand(n_pairs, generator=gen).tolist()
        mels, targets, lengths, f0s = [], [], [], []
        for p, o in zip(picks, offs, strict=True):
            i, j = self.pairs[p]
            if (i, j) not in self._aligned:
                self._aligned[(i, j)] = align_frames(self.mels[i], self.mels[j])
            n = len(self.mels[i])
            start = int(o * (n - crop_frames + 1)) if n > crop_frames else 0
            m, length = self.crop(i, start, crop_frames, pad_value)
            tgt = np.full_like(m, pad_value)
            tgt[:length] = self.mels[j][self._aligned[(i, j)][start:start + length]]
            mels.append(m)
            targets.append(tgt)
            lengths.append(length)
            if self.f0s is not None:
                f = np.zeros((crop_frames, self.f0s[i].shape[1]), dtype=np.float32)
                f[:length] = self.f0s[i][start:start + length]
                f0s.append(f)
        src = [self.pairs[p][0] for p in picks]
        dst = [self.pairs[p][1] for p in picks]
        return ParallelBatch(
            torch.from_numpy(np.stack(mels)), torch.tensor(lengths, dtype=torch.long),
            torch.from_numpy(np.stack(targets)), torch.from_numpy(self.labels[src]),
            torch.from_numpy(self.labels[dst]), torch.from_numpy(np.stack(f0s)) if f0s else None)

    def fixed_batches(self, n_batches: int, batch_size: int, crop_frames: int,
                      pad_value: float = 0.0, seed: int = 0, parallel_pairs: int = 0) -> list[Batch]:
        """Deterministic batches for validation: the same crops at every evaluation; with
        ``parallel_pairs`` each also carries that many parallel pairs (when the set has any)."""
        gen = torch.Generator().manual_seed(seed)
        # The pairs come from a generator of their own, so the batches are the same with or
        # without them and validation figures of runs with and without the term compare.
        par_gen = torch.Generator().manual_seed(seed + 1)
        n_batches = min(n_batches, max(1, (len(self) + batch_size - 1) // batch_size))
        out = []
        for _ in range(n_batches):
            b = self.sample(batch_size, crop_frames, gen, "utterance", pad_value)
            if parallel_pairs and self.pairs:
                b.parallel = self.sample_parallel(parallel_pairs, crop_frames, par_gen, pad_value)
            out.append(b)
        return out
