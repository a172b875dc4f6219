"""Voice parts: how a system turns reference speech into the vector it conditions on.

Every system holds one voice part (``system.voice``), injected when it is built:

* :class:`EncoderVoice` — the system's own speaker encoder on mels (ClsVC's S_x, VQVC+'s
  residual vectors); one-shot capable.
* :class:`DVectorVoice` — a pretrained Resemblyzer d-vector of the reference *audio* (AutoVC);
  one-shot capable. It also keeps the training speakers' mean d-vectors, which the system
  trains on, as a buffer saved with the weights.
* :class:`TableVoice` — a training speaker's row of a table the system learns or defines
  (VAE-VC's embeddings, StarGAN-VC2's one-hot codes); seen speakers only.

The converter, the trainer's speaker table, evaluation and the probes all ask the same thing:
:meth:`VoicePart.voice` (one voice from reference utterances) or :meth:`VoicePart.table` (one
row per training speaker). Nothing outside ``models/`` needs to know which part a system has.

A reference is a :class:`Reference`: its mel (T, n_mels) in [0, 1], and its 16 kHz waveform or a
loader for it (only parts that hear audio ask for it). Vectors are float32 CPU tensors: one
utterance (N, dim), a voice (dim,), a table (K, dim); each is unit length.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ClsvcError

Cache = MutableMapping[str, np.ndarray]


@dataclass
class Reference:
    """One utterance of a voice.

    ``mel`` (T, n_mels) in [0, 1]; ``wav`` the 16 kHz float32 waveform, or ``load_wav`` that
    reads it on demand; ``key`` a stable id of the utterance for caches (``speaker/utt_id``).
    """

    mel: np.ndarray
    wav: np.ndarray | None = None
    load_wav: Callable[[], np.ndarray] | None = None
    key: str | None = None

    def audio(self) -> np.ndarray:
        """The 16 kHz waveform (loaded once)."""
        if self.wav is None:
            if self.load_wav is None:
                raise ClsvcError(f"reference {self.key or ''}: this model's voice is made from audio; "
                                 "pass the waveform or a file, not only a mel")
            self.wav = self.load_wav()
        return self.wav


class NotOneShot(ClsvcError):
    """Raised when a voice is asked for from audio of a system that knows only its speakers."""


def unit(x: torch.Tensor) -> torch.Tensor:
    """Rows (or one vector) scaled to unit length."""
    return F.normalize(x.float(), dim=-1)


class VoicePart(nn.Module):
    """Base class. ``dim`` is the vector size; ``one_shot`` whether voices can come from
    reference audio of any speaker (else only training speakers' rows exist)."""

    one_shot: ClassVar[bool] = True
    _anchor: torch.Tensor

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        # Follows the owner's .to(device), so the part knows where to run (not saved).
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    @property
    def device(self) -> torch.device:
        """Where the part runs (its owner's device)."""
        return self._anchor.device

    def vectors(self, refs: Sequence[Reference], cache: Cache | None = None) -> torch.Tensor:
        """Unit vectors (N, dim) of N reference utterances."""
        raise NotImplementedError

    def voice(self, refs: Sequence[Reference], cache: Cache | None = None) -> torch.Tensor:
        """One voice (dim,) from one or more utterances: the re-normalised mean of their unit
        vectors."""
        if len(refs) == 0:
            raise ClsvcError("no reference utterances given; pass at least one --target file")
        return unit(self.vectors(refs, cache).mean(0))

    def fit(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None) -> None:
        """Called once before training with each training speaker's utterances (a part whose
        vectors the system trains on stores them here). Default: nothing to do."""

    def table(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None) -> torch.Tensor:
        """(K, dim) unit vectors of the K training speakers, from their utterances."""
        return torch.stack([self.voice(refs, cache) if refs else torch.zeros(self.dim) for refs in speakers])


class EncoderVoice(VoicePart):
    """The system's own speaker encoder on mels: ``embed`` maps (1, T, n_mels) to (1, dim).

    Utterances longer than ``chunk_frames`` are embedded chunk by chunk and averaged weighted by
    length (a trailing chunk shorter than ``min_frames`` is dropped), so memory stays bounded.
    """

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor], dim: int, chunk_frames: int = 1024,
                 min_frames: int = 32):
        super().__init__(dim)
        self._embed = embed
        self.chunk_frames = chunk_frames
        self.min_frames = min_frames

    def _one(self, mel: np.ndarray) -> torch.Tensor:
        embs: list[torch.Tensor] = []
        weights: list[float] = []
        for start in range(0, len(mel), self.chunk_frames):
            piece = mel[start:start + self.chunk_frames]
            if len(piece) < self.min_frames and embs:
                break
            x = torch.from_numpy(np.ascontiguousarray(piece, dtype=np.float32)).unsqueeze(0).to(self.device)
            embs.append(self._embed(x)[0].float().cpu())
            weights.append(float(len(piece)))
        w = torch.tensor(weights)[:, None]
        return unit((torch.stack(embs) * w).sum(0) / w.sum())

    @torch.inference_mode()
    def vectors(self, refs: Sequence[Reference], cache: Cache | None = None) -> torch.Tensor:
        return torch.stack([self._one(r.mel) for r in refs])


class DVectorVoice(VoicePart):
    """Resemblyzer d-vectors (256-d) of the reference audio (see :mod:`clsvc.dvector`).

    ``dvectors`` (K, 256) is the buffer of the training speakers' mean d-vectors (zeros until
    :meth:`fit`); the system trains on its rows and it is saved with the weights.
    ``cache`` (when given) keeps each utterance's d-vector under its ``key``.
    """

    dvectors: torch.Tensor  # (K, 256)

    def __init__(self, n_speakers: int):
        from ..dvector import DIM

        super().__init__(DIM)
        self.register_buffer("dvectors", torch.zeros(n_speakers, DIM))

    def vectors(self, refs: Sequence[Reference], cache: Cache | None = None) -> torch.Tensor:
        from ..dvector import embed_wav

        out = []
        for r in refs:
            if cache is not None and r.key is not None and r.key in cache:
                v = cache[r.key]
            else:
                v = embed_wav(r.audio())
                if cache is not None and r.key is not None:
                    cache[r.key] = v
            out.append(torch.from_numpy(np.asarray(v, dtype=np.float32)))
        return unit(torch.stack(out))

    @property
    def fitted(self) -> bool:
        """Whether every training speaker has its mean d-vector."""
        return bool((self.dvectors.abs().sum(-1) > 0).all())

    def set_table(self, vectors: torch.Tensor) -> None:
        """Store (K, 256) training-speaker vectors (rows re-normalised)."""
        if tuple(vectors.shape) != tuple(self.dvectors.shape):
            raise ClsvcError(f"the voice table must be {tuple(self.dvectors.shape)} (speakers x d-vector), "
                             f"got {tuple(vectors.shape)}")
        with torch.no_grad():
            self.dvectors.copy_(unit(vectors.to(self.dvectors)))

    def fit(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None) -> None:
        self.set_table(super().table(speakers, cache))

    def table(self, speakers: Sequence[Sequence[Reference]], cache: Cache | None = None) -> torch.Tensor:
        return self.dvectors.detach().float().cpu().clone() if self.fitted else super().table(speakers, cache)


class TableVoice(VoicePart):
    """Rows of a table of the training speakers that the system defines (``rows()`` gives
    (K, dim)); no vectors from audio."""

    one_shot = False

    def __init__(self, rows: Callable[[], torch.Tensor], dim: int):
        super().__init__(dim)
        self._rows = rows

    def vectors(self, refs: Sequence[Reference], cache: Cache | None = None) -> torch.Tensor:
        raise NotOneShot("this model converts only into its training speakers (no one-shot); "
                         "use --target-speaker NAME")

    def table(self, speakers: Sequence[Sequence[Reference]] = (), cache: Cache | None = None) -> torch.Tensor:
        return unit(self._rows().detach()).cpu()
