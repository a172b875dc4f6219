"""Conversion from files or arrays: ``clsvc.load(checkpoint).convert(source, targets)``.

:class:`Converter` wraps a trained system (:class:`~clsvc.models.VCSystem`, rebuilt from the
checkpoint alone) with the checkpoint's mel definition and a vocoder. Waveforms in and out are float32 numpy
arrays at the config's sample rate (16 kHz); paths are read with :func:`clsvc.audio.load_wav`.
Checkpoints and vocoders are given as files or as the names of models shipped with clsvc
(:mod:`clsvc.pretrained`: ``clsvc models`` lists them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .audio import check_waveform, compensate_variance, follow_level_contour, load_wav, wav_to_mel
from .checkpoint import HASH_KEY, model_from_checkpoint, weights_sha256
from .config import Config
from .devices import pick_device
from .errors import ClsvcError
from .files import read_utf8
from .models import NotOneShot, Reference, VCSystem
from .pretrained import DEFAULT_VOCODER, vocoder_for
from .pretrained import load_checkpoint as load_named
from .vocoder import get_vocoder

Audio = str | Path | np.ndarray

# Shortest usable source or reference: 32 frames = 0.51 s (half a CPU training crop).
MIN_FRAMES = 32


class Converter:
    """A trained model ready for conversion.

    The model's voice part (``model.voice``) makes every voice vector: from reference audio
    (one-shot) or, for a training speaker's name, the stored speaker table. ``chunk_frames``
    bounds the frames converted at once (long inputs are split into overlapping chunks,
    cross-faded over ``overlap_frames`` in the mel domain and vocoded as one, so there are no
    seams). ``checkpoint`` names the file (or shipped model) the model came from (for messages
    and reports). ``vocoder``: ``griffin-lim``, a vocoder file, a shipped vocoder's name, or
    ``auto``: the model's own (:func:`clsvc.pretrained.vocoder_for`: the vocoder a shipped model's
    card names, resolved by :meth:`from_checkpoint`; a model built directly gets Griffin-Lim);
    :attr:`vocoder_name` says which.
    ``gv_max``: global-variance compensation of conversions (see
    :class:`~clsvc.config.ConvertConfig`; None = the model's ``convert.gv_max``). ``contrast``:
    speaker contrast of conversions (the same class; None = the model's ``convert.contrast``).
    ``contour``: the weight of the source's level contour in conversions (likewise;
    ``convert.contour``).
    """

    def __init__(self, model: VCSystem, cfg: Config, speakers: list[str], speaker_table: torch.Tensor | None,
                 device: str | torch.device = "cpu", vocoder: str | Path = DEFAULT_VOCODER,
                 chunk_frames: int = 1024, overlap_frames: int = 64, checkpoint: str = "model",
                 gv_max: float | None = None, contrast: float | None = None, contour: float | None = None):
        self.device = pick_device(str(device))
        self.model = model.to(self.device).eval()
        self.cfg = cfg
        self.mel_cfg = cfg.mel
        self.speakers = list(speakers)
        self.speaker_table = speaker_table
        #: The vocoder in use, as given or as ``auto`` resolved to (a name or a path).
        self.vocoder_name = str(vocoder_for(vocoder, None))
        self.vocoder = get_vocoder(self.vocoder_name, cfg.mel, self.device)
        self.chunk_frames = chunk_frames
        self.overlap_frames = overlap_frames
        self.checkpoint = checkpoint
        #: The finishing steps of conversions (``cfg.convert``'s value of each unless given):
        #: global-variance compensation, speaker contrast, weight of the source's level contour.
        self.gv_max = _finishing("gv_max", gv_max, cfg.convert.gv_max)
        self.contrast = _finishing("contrast", contrast, cfg.convert.contrast)
        self.contour = _finishing("contour", contour, cfg.convert.contour)
        self.step = 0
        # Where the weights came from (set by from_checkpoint): the name given, the file, the
        # system, its training step and the weights' SHA-256, for reports that must say which model.
        self.origin: dict[str, Any] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu", **kw) -> Converter:
        """Rebuild from a training checkpoint, an exported model file or a shipped model's name
        (:func:`clsvc.pretrained.resolve`: an existing file wins) alone."""
        ckpt, file = load_named(path, "vc", map_location="cpu")
        model, cfg = model_from_checkpoint(ckpt, str(file))
        if not isinstance(model, VCSystem):
            raise ClsvcError(f"{path}: a {cfg.model.system} checkpoint, not a voice-conversion model; "
                             "pass a VC model's checkpoint (a vocoder goes to --vocoder)")
        kw["vocoder"] = vocoder_for(kw.get("vocoder", DEFAULT_VOCODER), path)  # "auto": the model's own
        vc = cls(model, cfg, ckpt.get("speakers", []), ckpt.get("speaker_table"), device,
                 checkpoint=str(path), **kw)
        vc.step = int(ckpt.get("step", 0))  # training steps behind the weights (for reports)
        vc.origin = {"checkpoint": str(path), "path": str(Path(file).resolve()), "system": cfg.model.system,
                     "step": vc.step, "weights_sha256": ckpt.get(HASH_KEY) or weights_sha256(ckpt["model"])}
        return vc

    # ------------------------------------------------------------------ features

    @property
    def sample_rate(self) -> int:
        """Sample rate of audio in and out (Hz)."""
        return self.mel_cfg.sample_rate

    @property
    def system(self) -> str:
        """The system name (``model.system`` of the config)."""
        return self.cfg.model.system

    @property
    def one_shot(self) -> bool:
        """Whether voices can come from reference audio (else only training speakers' names)."""
        return self.model.voice.one_shot

    def reference(self, audio: Audio) -> Reference:
        """Path or 16 kHz waveform -> a :class:`Reference` (waveform + mel); unreadable, non-finite
        or too short audio is an error naming the file (arrays are validated like files, see
        :func:`clsvc.audio.check_waveform`: a peak above 1.0 is normalised to 0.99 with a warning)."""
        if isinstance(audio, (str, Path)):
            wav = load_wav(audio, self.mel_cfg)
            name = str(audio)
        else:
            name = "the given waveform"
            wav = check_waveform(audio, self.sample_rate, name)
        mel = wav_to_mel(wav, self.mel_cfg)
        if len(mel) < MIN_FRAMES:
            sec = MIN_FRAMES * self.mel_cfg.hop_length / self.sample_rate
            raise ClsvcError(
                f"{name}: only {len(wav) / self.sample_rate:.2f} s of audio, at least {sec:.2f} s "
                "are needed; use a longer recording"
            )
        return Reference(mel, wav=wav, key=None)

    def mel(self, audio: Audio) -> np.ndarray:
        """Path or 16 kHz waveform -> mel (frames, n_mels); too-short audio is an error."""
        return self.reference(audio).mel

    def _tensor(self, mel: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)).unsqueeze(0).to(self.device)

    def _names(self) -> str:
        return ", ".join(self.speakers[:10]) + (" ..." if len(self.speakers) > 10 else "")

    # ------------------------------------------------------------------ voices

    def voice(self, refs: Sequence[Reference]) -> np.ndarray:
        """Voice vector (speaker_dim,) of reference utterances, made by the model's voice part."""
        try:
            return self.model.voice.voice(refs).numpy().astype(np.float32)
        except NotOneShot:
            raise ClsvcError(
                f"{self.checkpoint}: a {self.system} model converts only into its training speakers "
                f"(no one-shot); use --target-speaker NAME, one of: {self._names()}"
            ) from None

    def embed(self, audios: Audio | Sequence[Audio]) -> np.ndarray:
        """Target voice vector (speaker_dim,) from one or more utterances: the re-normalised mean
        of each utterance's unit vector (S_x for ClsVC, a Resemblyzer d-vector for AutoVC).
        Systems with only a speaker table (VAE-VC, StarGAN-VC2) refuse: use a speaker's name."""
        if isinstance(audios, (str, Path, np.ndarray)):
            audios = [audios]
        if len(audios) == 0:
            raise ClsvcError("no target utterances given; pass at least one --target file")
        return self.voice([self.reference(a) for a in audios])

    def speaker_embedding(self, name: str) -> np.ndarray:
        """Stored vector (speaker_dim,) of training speaker ``name``."""
        if name not in self.speakers or self.speaker_table is None:
            raise ClsvcError(
                f"unknown speaker {name!r} for {self.checkpoint}; training speakers are: {self._names()} "
                "(or give reference audio with --target)"
            )
        return self.speaker_table[self.speakers.index(name)].numpy().astype(np.float32)

    def target_embedding(self, targets: Audio | Sequence[Audio] | None = None,
                         target_speaker: str | None = None) -> np.ndarray:
        """The target voice: from reference audio or a training speaker's name (exactly one)."""
        if (targets is None) == (target_speaker is None):
            raise ClsvcError("give either target audio or a target speaker name (not both)")
        if target_speaker is not None:
            return self.speaker_embedding(target_speaker)
        assert targets is not None
        return self.embed(targets)

    # ------------------------------------------------------------------ conversion

    def convert_mel(self, source: Reference | np.ndarray, speaker: np.ndarray) -> np.ndarray:
        """Source (a :class:`Reference`, or a mel (frames, n_mels) for systems that need nothing
        else of the source) + target vector (speaker_dim,) -> converted mel (frames, n_mels).

        The system's condition on the source (:meth:`~clsvc.models.VCSystem.source_condition`)
        is made once from the whole utterance; a frame-level one (T, c) is cut with the mel's
        chunks, an utterance-level one goes whole to every chunk. A Reference's waveform must be
        the audio its mel was made from (frame t of both at sample t * hop).

        With :attr:`contrast` above 0 the target vector is pushed away from the source's own
        (:func:`contrast_voice`). With :attr:`gv_max` above 1 the conversion's bands are spread as
        the model flattens them (:func:`clsvc.audio.compensate_variance`, measured on its
        reconstruction of the source in the source's own voice: a second decoding). Neither is
        done for systems that cannot make the source's voice (VAE-VC, StarGAN-VC2) or a mel-only
        source of a system that needs its audio. Last, with :attr:`contour` above 0, the result
        follows the source's level contour (:func:`clsvc.audio.follow_level_contour`; any system)."""
        ref = source if isinstance(source, Reference) else Reference(np.asarray(source))
        src = self.model.source_condition(ref)  # once: both decodings share it (pitch tracking is slow)
        own = None  # the source's own voice vector, which both finishing steps need
        if (self.gv_max > 1.0 or self.contrast > 0.0) and self.one_shot:
            try:
                own = self.voice([ref])
            except ClsvcError:  # the voice part needs the audio and only a mel was given
                own = None
        target = speaker if own is None else contrast_voice(speaker, own, self.contrast)
        out = self._decode(ref, target, src)
        if self.gv_max > 1.0 and own is not None:
            out = compensate_variance(out, ref.mel, self._decode(ref, own, src), self.gv_max)
        return follow_level_contour(out, ref.mel, self.contour)

    def _decode(self, ref: Reference, speaker: np.ndarray, src: torch.Tensor | None) -> np.ndarray:
        """The model's conversion of ``ref`` into ``speaker`` (frames, n_mels), chunk by chunk,
        with the system's condition ``src`` on the source (:meth:`VCSystem.source_condition`)."""
        mel = ref.mel
        spk = torch.from_numpy(np.asarray(speaker, dtype=np.float32)).to(self.device)
        if src is not None:
            src = src.to(self.device)
        if src is not None and src.dim() == 2 and src.shape[0] != len(mel):
            raise ClsvcError(f"{self.checkpoint}: the {self.system} model's source condition has {src.shape[0]} "
                             f"frames, the source mel {len(mel)} (a bug in the model's source_condition)")

        def cond(s: int, e: int) -> torch.Tensor | None:
            """The source condition of frames [s, e): a frame-level one's rows, else all of it."""
            return src[s:e] if src is not None and src.dim() == 2 else src

        n, size, ov = len(mel), self.chunk_frames, self.overlap_frames
        if n <= size:
            return self.model.convert(self._tensor(mel), spk, src)[0].cpu().numpy()
        out = np.zeros_like(mel, dtype=np.float32)
        weight = np.zeros((n, 1), dtype=np.float32)
        hop = size - ov
        for s in range(0, n - ov, hop):
            e = min(s + size, n)
            piece = self.model.convert(self._tensor(mel[s:e]), spk, cond(s, e))[0].cpu().numpy()
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
        """Mel (frames, n_mels) -> waveform at :attr:`sample_rate`."""
        return self.vocoder(mel)

    def convert(self, source: Audio, targets: Audio | Sequence[Audio] | None = None,
                target_speaker: str | None = None) -> np.ndarray:
        """Convert ``source`` into the voice of ``targets`` (one-shot: one or more reference
        utterances) or of training speaker ``target_speaker``. Returns a 16 kHz waveform."""
        spk = self.target_embedding(targets, target_speaker)
        return self.vocode(self.convert_mel(self.reference(source), spk))

    def reconstruct(self, source: Audio, speaker: str | None = None) -> np.ndarray:
        """Self-reconstruction: the source converted to its own voice — its own vector, or
        training speaker ``speaker``'s (required by systems without one-shot voices)."""
        ref = self.reference(source)
        own = self.speaker_embedding(speaker) if speaker is not None else self.voice([ref])
        return self.vocode(self.convert_mel(ref, own))


def _finishing(name: str, given: float | None, stored: float) -> float:
    """A finishing setting of :class:`Converter`: ``given`` unless None, else the model's
    ``stored`` value; a finite number >= 0 (0 = off), else a one-line ClsvcError."""
    value = stored if given is None else given
    try:
        out = float(value)
    except (TypeError, ValueError):
        out = float("nan")
    if not (np.isfinite(out) and out >= 0):
        raise ClsvcError(f"{name} must be a finite number >= 0 (0 = off), not {value}")
    return out


def contrast_voice(target: np.ndarray, source: np.ndarray, contrast: float) -> np.ndarray:
    """Target voice vector (d,) pushed away from the source's own vector (d,) by ``contrast``:
    (t + c·(t − s)) re-normalised, with t and s the unit vectors (float32, unit norm). ``contrast``
    0 returns t; a source equal to the target returns t at any ``contrast``. See
    :class:`~clsvc.config.ConvertConfig`."""
    t = np.asarray(target, dtype=np.float32)
    t = t / max(float(np.linalg.norm(t)), 1e-8)
    if contrast <= 0.0:
        return t
    s = np.asarray(source, dtype=np.float32)
    s = s / max(float(np.linalg.norm(s)), 1e-8)
    v = t + np.float32(contrast) * (t - s)
    return (v / max(float(np.linalg.norm(v)), 1e-8)).astype(np.float32)


def load(checkpoint: str | Path, device: str | torch.device = "cpu", **kw) -> Converter:
    """Rebuild a :class:`Converter` from a checkpoint (or exported model) file, or a shipped
    model's name, alone; ``vocoder=`` likewise takes a file or a shipped vocoder's name."""
    return Converter.from_checkpoint(checkpoint, device=device, **kw)


def iter_pairs(path: str | Path) -> Iterator[dict[str, str]]:
    """Rows of a conversion list (CSV with header ``source,target,out``; ``target`` may hold
    several files separated by ``;`` or be empty when ``target_speaker`` is given). The file
    must be UTF-8 (a leading BOM is allowed); an unreadable, non-UTF-8 or malformed file is one
    ClsvcError line naming the file and the line."""
    import csv
    import io

    path = Path(path)
    if not path.is_file():
        raise ClsvcError(f"{path}: pair list not found; give a CSV with columns source,target,out")
    text = read_utf8(path, "pair list", save_as="UTF-8 CSV")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows: list[dict[str, str]] = []
    try:
        cols = set(reader.fieldnames or [])
        if not {"source", "out"} <= cols or not ({"target", "target_speaker"} & cols):
            raise ClsvcError(
                f"{path}: needs a header with source, out and target (or target_speaker) columns"
            )
        for row in reader:  # cells past the header's columns (key None) are ignored
            clean = {k: (v or "").strip() for k, v in row.items() if k and isinstance(v, (str, type(None)))}
            clean["line"] = str(reader.line_num)
            rows.append(clean)
    except csv.Error as e:
        # line_num counts the lines read before the row that failed
        raise ClsvcError(f"{path} line {reader.line_num + 1}: not valid CSV ({e}); fix that row") from None
    yield from rows
