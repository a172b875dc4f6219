"""Conversion from files or arrays: ``clsvc.load(checkpoint).convert(source, targets)``.

:class:`Converter` wraps a trained :class:`~clsvc.models.ClsVC` (rebuilt from the checkpoint
alone) with the checkpoint's mel definition and a vocoder. Waveforms in and out are float32 numpy
arrays at the config's sample rate (16 kHz); paths are read with :func:`clsvc.audio.load_wav`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
import torch

from .audio import load_wav, wav_to_mel
from .errors import ClsvcError
from .training.checkpoint import load_checkpoint
from .training.state import model_from_checkpoint
from .vocoder import get_vocoder

Audio = Union[str, Path, np.ndarray]

# Shortest usable source or reference: 32 frames = 0.51 s (half a CPU training crop).
MIN_FRAMES = 32


class Converter:
    """A trained model ready for one-shot conversion.

    ``chunk_frames`` bounds the frames converted at once (long inputs are split into overlapping
    chunks, cross-faded over ``overlap_frames`` in the mel domain and vocoded as one, so there
    are no seams).
    """

    def __init__(self, model, cfg, speakers: list[str], speaker_table: torch.Tensor | None,
                 device: str | torch.device = "cpu", vocoder: str = "griffin-lim",
                 chunk_frames: int = 1024, overlap_frames: int = 64, source: str = "model"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.mel_cfg = cfg.mel
        self.speakers = list(speakers)
        self.speaker_table = speaker_table
        self.vocoder = get_vocoder(vocoder, cfg.mel)
        self.chunk_frames = chunk_frames
        self.overlap_frames = overlap_frames
        self.source = source
        self.step = 0

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kw) -> "Converter":
        ckpt = load_checkpoint(path, map_location="cpu")
        model, cfg = model_from_checkpoint(ckpt, str(path))
        vc = cls(model, cfg, ckpt.get("speakers", []), ckpt.get("speaker_table"), device,
                 source=str(path), **kw)
        vc.step = int(ckpt.get("step", 0))  # training steps behind the weights (for reports)
        return vc

    # ------------------------------------------------------------------ features

    @property
    def sample_rate(self) -> int:
        return self.mel_cfg.sample_rate

    def mel(self, audio: Audio) -> np.ndarray:
        """Path or 16 kHz waveform -> mel (frames, n_mels); too-short audio is an error."""
        if isinstance(audio, (str, Path)):
            wav = load_wav(audio, self.mel_cfg)
            name = str(audio)
        else:
            wav = np.asarray(audio, dtype=np.float32)
            name = "the given waveform"
            if wav.ndim != 1 or wav.size == 0:
                raise ClsvcError(f"{name}: expected a non-empty 1-D waveform at {self.sample_rate} Hz")
        mel = wav_to_mel(wav, self.mel_cfg)
        if len(mel) < MIN_FRAMES:
            sec = MIN_FRAMES * self.mel_cfg.hop_length / self.sample_rate
            raise ClsvcError(
                f"{name}: only {len(wav) / self.sample_rate:.2f} s of audio, at least {sec:.2f} s "
                "are needed; use a longer recording"
            )
        return mel

    def _tensor(self, mel: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).unsqueeze(0).to(self.device)

    # ------------------------------------------------------------------ speakers

    @property
    def system(self) -> str:
        return self.cfg.model.system

    def embed(self, audios: Audio | Sequence[Audio]) -> np.ndarray:
        """Target voice vector (speaker_dim,) from one or more utterances: the re-normalised
        mean of each utterance's unit vector — S_x for ClsVC (and other systems with their own
        speaker encoder), the Resemblyzer d-vector for AutoVC. Systems with only a speaker table
        (VAE-VC, StarGAN-VC2) cannot do this: use a training speaker's name."""
        if isinstance(audios, (str, Path, np.ndarray)):
            audios = [audios]
        if len(audios) == 0:
            raise ClsvcError("no target utterances given; pass at least one --target file")
        kind = self.model.embedding
        if kind == "table":
            some = ", ".join(self.speakers[:10]) + (" ..." if len(self.speakers) > 10 else "")
            raise ClsvcError(
                f"{self.source}: a {self.system} model converts only into its training speakers "
                f"(no one-shot); use --target-speaker NAME, one of: {some}"
            )
        if kind == "dvector":
            from .evaluation.similarity import embed_wav

            embs = []
            for a in audios:
                self.mel(a)  # the same length and readability checks as for every input
                wav = load_wav(a, self.mel_cfg) if isinstance(a, (str, Path)) else np.asarray(a, np.float32)
                embs.append(embed_wav(wav, self.sample_rate))
        else:
            embs = [self.embed_mel(self.mel(a)) for a in audios]
        mean = np.mean(embs, axis=0)
        return (mean / max(np.linalg.norm(mean), 1e-8)).astype(np.float32)

    def embed_mel(self, mel: np.ndarray) -> np.ndarray:
        """Unit speaker embedding of one mel (frames, n_mels), computed chunk-wise when long."""
        step = self.chunk_frames
        embs, weights = [], []
        for start in range(0, len(mel), step):
            piece = mel[start:start + step]
            if len(piece) < MIN_FRAMES and embs:
                break
            embs.append(self.model.embed(self._tensor(piece))[0].cpu().numpy())
            weights.append(len(piece))
        mean = np.average(embs, axis=0, weights=weights)
        return (mean / max(np.linalg.norm(mean), 1e-8)).astype(np.float32)

    def speaker_embedding(self, name: str) -> np.ndarray:
        """Stored embedding of training speaker ``name``."""
        if name not in self.speakers or self.speaker_table is None:
            some = ", ".join(self.speakers[:10]) + (" ..." if len(self.speakers) > 10 else "")
            raise ClsvcError(
                f"unknown speaker {name!r} for {self.source}; training speakers are: {some} "
                "(or give reference audio with --target)"
            )
        return self.speaker_table[self.speakers.index(name)].numpy().astype(np.float32)

    # ------------------------------------------------------------------ conversion

    def convert_mel(self, mel: np.ndarray, speaker: np.ndarray, source: np.ndarray | None = None) -> np.ndarray:
        """Source mel (frames, n_mels) + target vector (speaker_dim,) -> converted mel.
        ``source``: the source speaker's vector (AutoVC needs it; see :meth:`source_vector`)."""
        spk = torch.from_numpy(np.asarray(speaker, dtype=np.float32)).to(self.device)
        src = None
        if self.model.needs_source_vector:
            if source is None:
                raise ClsvcError(f"{self.source}: a {self.system} model needs the source speaker's vector")
            src = torch.from_numpy(np.asarray(source, dtype=np.float32)).to(self.device)
        n, size, ov = len(mel), self.chunk_frames, self.overlap_frames
        if n <= size:
            return self.model.convert(self._tensor(mel), spk, src)[0].cpu().numpy()
        out = np.zeros_like(mel, dtype=np.float32)
        weight = np.zeros((n, 1), dtype=np.float32)
        hop = size - ov
        starts = list(range(0, n - ov, hop))
        for s in starts:
            e = min(s + size, n)
            piece = self.model.convert(self._tensor(mel[s:e]), spk, src)[0].cpu().numpy()
            w = np.ones((e - s, 1), dtype=np.float32)
            if s > 0:  # fade in over the overlap with the previous chunk
                k = min(ov, e - s)
                w[:k, 0] = np.linspace(0.0, 1.0, k + 2)[1:-1]
            if e < n:  # fade out over the overlap with the next chunk
                k = min(ov, e - s)
                w[-k:, 0] = np.minimum(w[-k:, 0], np.linspace(1.0, 0.0, k + 2)[1:-1])
            out[s:e] += piece * w
            weight[s:e] += w
        return out / np.maximum(weight, 1e-8)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        return self.vocoder(mel)

    def target_embedding(self, targets: Audio | Sequence[Audio] | None = None,
                         target_speaker: str | None = None) -> np.ndarray:
        if (targets is None) == (target_speaker is None):
            raise ClsvcError("give either target audio or a target speaker name (not both)")
        if target_speaker is not None:
            return self.speaker_embedding(target_speaker)
        return self.embed(targets)

    def convert(self, source: Audio, targets: Audio | Sequence[Audio] | None = None,
                target_speaker: str | None = None) -> np.ndarray:
        """Convert ``source`` into the voice of ``targets`` (one-shot: one or more reference
        utterances) or of training speaker ``target_speaker``. Returns a 16 kHz waveform."""
        spk = self.target_embedding(targets, target_speaker)
        return self.vocode(self.convert_mel(self.mel(source), spk, self.source_vector(source)))

    def source_vector(self, source: Audio) -> np.ndarray | None:
        """The source utterance's own speaker vector when the system needs it, else None."""
        return self.embed(source) if self.model.needs_source_vector else None

    def reconstruct(self, source: Audio, speaker: str | None = None) -> np.ndarray:
        """Self-reconstruction: the source converted to its own voice — its own vector, or
        training speaker ``speaker``'s (required by systems without one-shot embeddings)."""
        mel = self.mel(source)
        own = self.speaker_embedding(speaker) if speaker is not None else self.embed(source)
        return self.vocode(self.convert_mel(mel, own, own if self.model.needs_source_vector else None))


def load(checkpoint: str | Path, device: str | torch.device = "cpu", **kw) -> Converter:
    """Rebuild a :class:`Converter` from a checkpoint file alone."""
    return Converter.from_checkpoint(checkpoint, device=device, **kw)


def iter_pairs(path: str | Path) -> Iterable[dict[str, str]]:
    """Rows of a conversion list (CSV with header ``source,target,out``; ``target`` may hold
    several files separated by ``;`` or be empty when ``target_speaker`` is given)."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise ClsvcError(f"{path}: pair list not found; give a CSV with columns source,target,out")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"source", "out"} <= cols or not ({"target", "target_speaker"} & cols):
            raise ClsvcError(
                f"{path}: needs a header with source, out and target (or target_speaker) columns"
            )
        for i, row in enumerate(reader, start=2):
            row = {k: (v or "").strip() for k, v in row.items() if k}
            row["line"] = str(i)
            yield row
