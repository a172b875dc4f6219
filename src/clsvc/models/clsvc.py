"""The ClsVC network: one encoder, a decoder with postnet, and two speaker classifiers.

Shapes: mel (B, T, n_mels) in [0, 1]; lengths (B,) valid frames; Z = E(x) is (B, T, s + c),
of which the first ``speaker_dim`` channels, averaged over valid frames, are S_x (B, s) and the
last ``content_dim`` channels are C_x (B, T, c). The decoder sees C_x and S_x / |S_x|.

With ``model.f0_condition`` (AutoVC-F0's remedy, not in the paper) the decoder also sees the
source's pitch features f0 (B, T, 2) (:func:`clsvc.pitch.f0_features`: per utterance z-scored
log F0 and the voiced flag): [C_x, f0, S_x / |S_x|] per frame. Training batches carry them
(``clsvc preprocess --f0``); a conversion gets them from the source's waveform
(:meth:`ClsVC.source_condition`). The z-score leaves the intonation and removes the voice, so
the pitch level and range of the output still come from the target's S.
"""

from __future__ import annotations

from typing import Any, cast

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from ..config import Config, LossConfig, MelConfig, ModelConfig
from ..data.align import PHONES
from ..errors import ClsvcError
from ..pitch import F0_DIM, f0_features, frame_f0
from .augment import PseudoVoices, RoomAugment, VoicePerturb
from .base import Codes, VCSystem
from .layers import (
    CosineClassifier,
    Postnet,
    conv_stack,
    grad_reverse,
    length_mask,
    lstm,
    masked_instance_norm,
    masked_mean,
    mlp,
)
from .losses import IGNORE_LABEL, ClsVCOutput, clsvc_losses, frame_ce, parallel_term, phone_term, uniform_ce
from .voices import DVectorVoice, EncoderVoice, Reference, VoicePart, unit


class Encoder(nn.Module):
    """mel (B, T, n_mels) -> Z (B, T, out_dim): ``conv_layers`` conv blocks of ``channels``,
    a BiLSTM of ``lstm_hidden`` per direction (``lstm_layers``; 0 = none), a linear map."""

    def __init__(self, n_mels: int, out_dim: int, channels: int, conv_layers: int, lstm_hidden: int,
                 lstm_layers: int, kernel: int, norm: str):
        super().__init__()
        self.convs, d = conv_stack(n_mels, channels, conv_layers, kernel, norm)
        self.lstm = lstm(d, lstm_hidden, lstm_layers, bidirectional=True)
        if self.lstm is not None:
            d = 2 * lstm_hidden
        self.proj = nn.Linear(d, out_dim)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = self.convs(mel.transpose(1, 2)).transpose(1, 2)
        if self.lstm is not None:
            h, _ = self.lstm(h)
        return self.proj(h)


class Decoder(nn.Module):
    """(content (B, T, c), speaker (B, s)) -> (mel before postnet, mel after postnet), each
    (B, T, n_mels). AutoVC's layout: LSTM(``pre_lstm``) (or a linear map when 0) ->
    ``conv_layers`` convs of ``channels`` -> LSTM(``lstm_hidden`` x ``lstm_layers``) -> linear
    to n_mels, plus the residual :class:`~.layers.Postnet`."""

    def __init__(self, n_mels: int, content_dim: int, speaker_dim: int, pre_lstm: int, channels: int,
                 conv_layers: int, lstm_hidden: int, lstm_layers: int, postnet_channels: int,
                 postnet_layers: int, kernel: int, norm: str):
        super().__init__()
        din = content_dim + speaker_dim
        self.pre: nn.Module
        if pre_lstm > 0:
            self.pre = nn.LSTM(din, pre_lstm, num_layers=1, batch_first=True)
            d = pre_lstm
        else:
            self.pre = nn.Linear(din, channels)
            d = channels
        self.convs, d = conv_stack(d, channels, conv_layers, kernel, norm)
        self.lstm = lstm(d, lstm_hidden, lstm_layers, bidirectional=False)
        if self.lstm is not None:
            d = lstm_hidden
        self.out = nn.Linear(d, n_mels)
        self.postnet = Postnet(n_mels, postnet_channels, postnet_layers, kernel, norm)

    @classmethod
    def from_model_config(cls, n_mels: int, content_dim: int, speaker_dim: int, m: ModelConfig) -> Decoder:
        """The decoder sized by the ``model`` section (ClsVC's and AutoVC's)."""
        return cls(n_mels, content_dim, speaker_dim, m.dec_pre_lstm, m.dec_channels, m.dec_conv_layers,
                   m.dec_lstm_hidden, m.dec_lstm_layers, m.postnet_channels, m.postnet_layers,
                   m.kernel_size, m.norm)

    def forward(self, content: torch.Tensor, speaker: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([content, speaker.unsqueeze(1).expand(-1, content.shape[1], -1)], dim=-1)
        h = self.pre(x)[0] if isinstance(self.pre, nn.LSTM) else self.pre(x)
        h = self.convs(h.transpose(1, 2)).transpose(1, 2)
        if self.lstm is not None:
            h, _ = self.lstm(h)
        mel = self.out(h)
        return mel, self.postnet(mel)


def _frozen_call(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` with its parameters detached: the gradient reaches ``x`` (the networks
    that made it), never the module."""
    frozen = {k: v.detach() for k, v in module.named_parameters()}
    return cast(torch.Tensor, functional_call(module, frozen, (x,)))


class PhoneReader(nn.Module):
    """mel (B, T, n_mels) -> phone logits (B, T, len(PHONES)): ``layers`` Conv1d blocks (k=5,
    ``channels``, ReLU, no norm: a frozen copy reads decoded mels, so no batch statistics may
    leak between real and decoded batches) and a linear map. With 4 layers each frame is read
    with +-8 frames (+-128 ms) of context, as a phone needs."""

    def __init__(self, n_mels: int, channels: int, layers: int, speakers: int = 0):
        super().__init__()
        self.convs, d = conv_stack(n_mels, channels, layers, 5, "none")
        self.out = nn.Linear(d, len(PHONES))
        # With loss.phone_reader_adv: a per-frame speaker classifier on the reader's features,
        # which the reader learns to leave clueless, so that what it reads a phone from says
        # little of the voice (as C2 does for C_x with loss.adversarial entropy).
        self.voice = nn.Linear(d, speakers) if speakers > 0 else None

    def features(self, mel: torch.Tensor) -> torch.Tensor:
        """mel (B, T, n_mels) -> the last conv block's output (B, T, channels)."""
        return cast(torch.Tensor, self.convs(mel.transpose(1, 2)).transpose(1, 2))

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, self.out(self.features(mel)))


class ClsVC(VCSystem):
    """ClsVC (encoder E, decoder D + postnet, speaker classifier C1, adversary C2).

    ``n_mels`` comes from the mel config; ``cfg.n_speakers`` must be set (training speakers).
    Inference is owned by the model: :meth:`embed` and :meth:`convert` run under
    ``torch.inference_mode``.
    """

    training_only = ("speaker_classifier.", "adversary.", "phone_classifier.", "phone_reader.")
    optional_training = ("phone_classifier.", "phone_reader.")  # built with loss.phone / loss.phone_out

    @classmethod
    def from_config(cls, cfg: Config) -> ClsVC:
        return cls(cfg.model, n_mels=cfg.mel.n_mels, loss=cfg.loss, adversary_lr_mult=cfg.optim.adversary_lr_mult,
                   mel=cfg.mel)

    @classmethod
    def batch_inputs(cls, cfg: Config) -> tuple[str, ...]:
        """The mels, the pitch features with ``model.f0_condition``, the phone labels with
        ``loss.phone`` or ``loss.phone_out``."""
        return (cls.inputs + (("f0",) if cfg.model.f0_condition else ())
                + (("phones",) if cfg.loss.phone > 0 or cfg.loss.phone_out > 0 else ()))

    def param_groups(self, phase: str) -> list[dict[str, Any]]:
        """Two groups: everything but C2, and C2 at ``optim.adversary_lr_mult`` times the rate."""
        adv = list(self.adversary.parameters())
        ids = {id(p) for p in adv}
        return [{"params": [p for p in self.parameters() if id(p) not in ids]},
                {"params": adv, "lr_scale": self.adversary_lr_mult}]

    def __init__(self, cfg: ModelConfig, n_mels: int = 80, loss: LossConfig | None = None,
                 adversary_lr_mult: float = 1.0, mel: MelConfig | None = None):
        super().__init__()
        self.cfg = cfg
        self.loss_cfg = loss or LossConfig()
        self.n_mels = n_mels
        self.adversary_lr_mult = adversary_lr_mult
        self.mel_cfg = mel or MelConfig(n_mels=n_mels)  # the frame grid the pitch is tracked on
        self.f0_dim = F0_DIM if cfg.f0_condition else 0  # extra decoder input channels per frame
        # With model.speaker_encoder "dvector" S_x is a pretrained d-vector and E outputs only C_x.
        self.own_speaker = cfg.speaker_encoder == "own"
        self.s_channels = cfg.speaker_dim if self.own_speaker else 0  # channels of Z that are S_x
        self.encoder = Encoder(n_mels, self.s_channels + cfg.content_dim, cfg.enc_channels, cfg.enc_conv_layers,
                               cfg.enc_lstm_hidden, cfg.enc_lstm_layers, cfg.kernel_size, cfg.norm)
        self.decoder = Decoder.from_model_config(n_mels, cfg.content_dim + self.f0_dim, cfg.speaker_dim, cfg)
        self.speaker_classifier: nn.Module
        if cfg.speaker_classifier == "cosine":
            self.speaker_classifier = CosineClassifier(cfg.speaker_dim, cfg.n_speakers, cfg.cosine_scale)
        else:
            self.speaker_classifier = nn.Linear(cfg.speaker_dim, cfg.n_speakers)
        self.adversary = mlp(cfg.content_dim, cfg.adversary_hidden, cfg.n_speakers, cfg.adversary_layers)
        # With loss.phone a linear read-out of each frame's phone from C_x (training only): linear,
        # so that the phones must be spelled out in the code itself, not recovered by the head.
        self.phone_classifier = nn.Linear(cfg.content_dim, len(PHONES)) if self.loss_cfg.phone > 0 else None
        # With loss.phone_out a reader of phones from mels (training only; see phone_out_terms).
        adv_speakers = cfg.n_speakers if self.loss_cfg.phone_reader_adv > 0 else 0
        self.phone_reader = (PhoneReader(n_mels, cfg.phone_reader_channels, cfg.phone_reader_layers, adv_speakers)
                             if self.loss_cfg.phone_out > 0 else None)
        self.voice: VoicePart
        if self.own_speaker:
            self.voice = EncoderVoice(self.embed, cfg.speaker_dim)
        else:
            # The training speakers' mean d-vectors (zeros until the trainer calls voice.fit).
            self.voice = DVectorVoice(cfg.n_speakers)
        self.perturb: VoicePerturb | None = None
        if cfg.voice_warp > 1.0 or cfg.voice_eq_db > 0:
            m = self.mel_cfg
            self.perturb = VoicePerturb(n_mels, m.fmin, m.fmax, cfg.voice_warp, cfg.voice_eq_db, -m.min_level_db)
        self.pseudo: PseudoVoices | None = None
        if cfg.pseudo_voice_prob > 0:
            m = self.mel_cfg
            self.pseudo = PseudoVoices(n_mels, m.fmin, m.fmax, cfg.pseudo_voice_prob, cfg.pseudo_voice_warp)
        self.room: RoomAugment | None = None
        if cfg.noise_prob > 0 or cfg.reverb_prob > 0:
            m = self.mel_cfg
            self.room = RoomAugment(n_mels, m.fmin, m.fmax, -m.min_level_db, m.hop_length / m.sample_rate,
                                    cfg.noise_prob, cfg.noise_snr_db, cfg.reverb_prob, cfg.reverb_rt60)

    # ------------------------------------------------------------------ pieces

    def encode(self, mel: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """mel (B, T, M) -> (S_x (B, s), C_x (B, T, c), mask (B, T)); S_x is None when the
        speaker vectors are d-vectors (``model.speaker_encoder: dvector``)."""
        b, t, _ = mel.shape
        if lengths is None:
            lengths = torch.full((b,), t, dtype=torch.long, device=mel.device)
        mask = length_mask(lengths, t)
        z = self.encoder(mel)
        s = self.s_channels
        speaker = masked_mean(z[..., :s], mask) if s else None
        content = z[..., s:]
        if self.cfg.content_norm == "instance":
            content = masked_instance_norm(content, mask)
        return speaker, content, mask

    def decode(self, content: torch.Tensor, speaker_norm: torch.Tensor, f0: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(C (B, T, c), unit-norm speaker (B, s), pitch features f0 (B, T, 2) with
        ``model.f0_condition``, else unused) -> (mel_out, mel_post), each (B, T, M)."""
        if self.f0_dim:
            if f0 is None:
                raise ClsvcError("this ClsVC is conditioned on pitch (model.f0_condition): pass the source's pitch "
                                 "features (f0=...; training needs features made with `clsvc preprocess --f0`)")
            if tuple(f0.shape) != (*content.shape[:2], self.f0_dim):
                raise ClsvcError(f"the pitch features have shape {tuple(f0.shape)}, the content code "
                                 f"{tuple(content.shape)}: they must be (B, T, {self.f0_dim}) of the same frames")
            content = torch.cat([content, f0.to(content.dtype)], dim=-1)
        return self.decoder(content, speaker_norm)

    def classify_content(self, content: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """C2's logits on C_x (B, T, c): per frame (B, T, K) or on the time average (B, K)."""
        if self.cfg.adversary_input == "pooled":
            return self.adversary(masked_mean(content, mask))
        return self.adversary(content)

    # ------------------------------------------------------------------ training

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor, speaker: torch.Tensor,
                phase: str = "main", f0: torch.Tensor | None = None, par_mel: torch.Tensor | None = None,
                par_lengths: torch.Tensor | None = None, par_target: torch.Tensor | None = None,
                par_f0: torch.Tensor | None = None, phones: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The training loss of a batch (paper Eq. 8 plus the configured remedies). With a
        conversion loss on, row i is converted to row i-1's speaker (row 0 to the last row's;
        batches are random, so neighbours are random speakers). ``f0`` (B, T, 2): the batch's
        pitch features (needed with ``model.f0_condition``).

        With ``loss.parallel`` > 0 the batch may carry P parallel pairs: source crops ``par_mel``
        (P, T, M) with ``par_lengths`` (P,) and pitch features ``par_f0`` (P, T, 2), and
        ``par_target`` (P, T, M), the same words said by another training speaker, aligned frame
        by frame; the term :meth:`parallel_loss` is added to the total as ``parallel``. With
        ``loss.parallel_code`` > 0 the same pairs give :meth:`parallel_code_loss`, added as
        ``parallel_code``.

        With ``loss.phone`` > 0, ``phones`` (B, T) are the frames' phone labels (-1 = unknown): the
        phone classifier's cross-entropy on C_x is added as ``phone`` (its accuracy as ``phone_acc``).
        With ``loss.phone_out`` > 0 they also feed :meth:`phone_out_terms`.

        With ``model.pseudo_voice_prob`` (training only) some rows of ``mel`` are replaced by a
        pseudo-voice (:class:`~clsvc.models.augment.PseudoVoices`): the warped row is what E reads
        and what the decoder must rebuild, and C1 gets no label for it (no training speaker owns
        that voice); C2 keeps the row's speaker, whose words and voice the code must still hide.
        The pitch features are z-scored per utterance, so a warp leaves them valid."""
        cls_speaker = speaker
        if self.pseudo is not None and self.training:
            mel, made = self.pseudo(mel)
            cls_speaker = speaker.masked_fill(made, IGNORE_LABEL)
        perm = None
        reads_conversion = self.loss_cfg.phone_out > 0 and self.loss_cfg.phone_out_on != "reconstruction"
        if self.loss_cfg.convert_code > 0 or self.loss_cfg.convert_cls > 0 or reads_conversion:
            perm = torch.roll(torch.arange(mel.shape[0], device=mel.device), 1)
        vectors = None
        if not self.own_speaker:
            voice = cast(DVectorVoice, self.voice)  # set so in __init__
            if not voice.fitted:
                raise ClsvcError("this ClsVC conditions on d-vectors but has none for its training speakers: "
                                 "call voice.fit(...) or voice.set_table((K, 256)) before training (the trainer does)")
            vectors = voice.dvectors[speaker]
        out = self.run(mel, lengths, perm, f0, vectors)
        total, terms = clsvc_losses(out, mel, speaker, self.loss_cfg, cls_speaker)
        if self.loss_cfg.parallel > 0 and par_mel is not None:
            assert par_lengths is not None and par_target is not None
            par = self.parallel_loss(par_mel, par_lengths, par_target, par_f0)
            total = total + self.loss_cfg.parallel * par
            terms["parallel"] = par
            terms["total"] = total
        if self.loss_cfg.parallel_code > 0 and par_mel is not None:
            assert par_lengths is not None and par_target is not None
            code = self.parallel_code_loss(par_mel, par_lengths, par_target)
            total = total + self.loss_cfg.parallel_code * code
            terms.update(parallel_code=code, total=total)
        if (self.phone_classifier is not None or self.phone_reader is not None) and phones is None:
            raise ClsvcError("loss.phone and loss.phone_out need the frames' phone labels (phones=...; training "
                             "needs features made with `clsvc preprocess --phones`)")
        if self.phone_classifier is not None:
            assert phones is not None
            ce, acc = phone_term(self.phone_classifier(out.content), phones, out.mask)
            total = total + self.loss_cfg.phone * ce
            terms.update(phone=ce, phone_acc=acc, total=total)
        if self.phone_reader is not None:
            assert phones is not None
            reader, decoded, more = self.phone_out_terms(mel, out, phones, speaker)
            # The reader's own term moves only the reader (its input is detached); the decoded
            # term moves only the networks that made the mels (the reader is a frozen copy there).
            total = total + reader + self.loss_cfg.phone_out * decoded
            terms.update(more, total=total)
        return total, terms

    def phone_out_terms(self, mel: torch.Tensor, out: ClsVCOutput, phones: torch.Tensor,
                        speaker: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """``loss.phone_out``: (the reader's cross-entropy on the real mels (B, T, M) (their
        voice-perturbed copies with ``model.phone_reader_input: perturbed``), the frozen
        reader's cross-entropy on the decoded ones, the named terms to log). The decoded term is
        the mean of the reconstruction's (postnet output) and, when ``out`` holds one, the
        conversion's, or only one of them (``loss.phone_out_on``); ``phones`` (B, T) are the
        source frames' labels, right for both (a conversion keeps the source's words and timing).
        With ``loss.phone_reader_adv`` the reader's term also holds its speaker adversary's
        cross-entropy on the detached features (``speaker`` (B,) needed; it moves only the
        adversary) and that weight times the frozen adversary's cross-entropy to the uniform
        distribution on the features (it moves only the reader): the reader learns to hide the voice.
        (A reversed gradient made the reader grow its features without end, trial 24c.)"""
        assert self.phone_reader is not None
        seen = mel.detach()
        if self.cfg.phone_reader_input == "perturbed" and self.perturb is not None and self.training:
            seen = self.perturb(seen)  # a fresh random voice per row, as the content path gets
        # A frozen reader (train.freeze) learns nothing here: its term is only logged, so no graph.
        learns = any(p.requires_grad for p in self.phone_reader.parameters())
        adv = None
        with torch.set_grad_enabled(learns and torch.is_grad_enabled()):
            feats = self.phone_reader.features(seen)
            real, real_acc = phone_term(self.phone_reader.out(feats), phones, out.mask)
            if self.phone_reader.voice is not None:
                if speaker is None:
                    raise ClsvcError("loss.phone_reader_adv needs the rows' speakers (speaker=...)")
                voice = self.phone_reader.voice
                adv = frame_ce(voice(feats.detach()), speaker, out.mask)
                hide = uniform_ce(_frozen_call(voice, feats), out.mask)
                real = real + adv[0] + self.loss_cfg.phone_reader_adv * hide
        on = self.loss_cfg.phone_out_on
        outputs = {"phone_out_acc": out.mel_post if on != "conversion" else None,
                   "phone_conv_acc": out.conv_mel if on != "reconstruction" else None}
        if on == "conversion" and out.conv_mel is None:
            raise ClsvcError("loss.phone_out_on conversion needs a conversion in the pass (run(..., perm))")
        read = {name: phone_term(_frozen_call(self.phone_reader, m), phones, out.mask)
                for name, m in outputs.items() if m is not None}
        decoded = torch.stack([ce for ce, _ in read.values()]).mean()
        more = {"phone_reader": real, "phone_reader_acc": real_acc, "phone_out": decoded}
        if adv is not None:
            more.update(phone_reader_adv=adv[0], phone_reader_adv_acc=adv[1], phone_reader_hide=hide)
        more.update({name: acc for name, (_, acc) in read.items()})
        return real, decoded, more

    def parallel_loss(self, mel: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor,
                      f0: torch.Tensor | None = None) -> torch.Tensor:
        """The supervised conversion term of parallel pairs: D(C_a, S_b / |S_b|) against b's
        aligned mel under ``loss.recon_distance``, on both decoder outputs, over valid frames.
        ``mel`` (P, T, M) source crops (the clean mel: a conversion reads C_x of unperturbed
        audio), ``lengths`` (P,), ``target`` (P, T, M) the aligned target frames (S_b is encoded
        from them), ``f0`` (P, T, 2) the source's pitch features with ``model.f0_condition``."""
        if not self.own_speaker:
            raise ClsvcError("loss.parallel needs the model's own speaker encoder (model.speaker_encoder own)")
        _, content, mask = self.encode(mel, lengths)
        speaker, _, _ = self.encode(target, lengths)
        assert speaker is not None  # own speaker encoder
        mel_out, mel_post = self.decode(content, F.normalize(speaker, dim=-1), f0)
        return parallel_term(mel_out, mel_post, target, mask, self.loss_cfg.recon_distance)

    def parallel_code_loss(self, mel: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The content-consistency term of parallel pairs (``loss.parallel_code``): mean squared
        difference per channel between C_x of the source crops ``mel`` (P, T, M) (clean, as a
        conversion reads them) and C_x of ``target`` (P, T, M), the same words of another voice
        aligned to them frame by frame, over the valid frames of ``lengths`` (P,)."""
        _, content, mask = self.encode(mel, lengths)
        _, other, _ = self.encode(target, lengths)
        return masked_mean(((content.float() - other.float()) ** 2).mean(-1), mask)

    def run(self, mel: torch.Tensor, lengths: torch.Tensor, perm: torch.Tensor | None = None,
            f0: torch.Tensor | None = None, vectors: torch.Tensor | None = None) -> ClsVCOutput:
        """One training pass. ``perm`` (B,) names each row's conversion partner; when given,
        D(C_a, S_perm[a]) is decoded (``conv_mel``) and, with a conversion loss on
        (``loss.convert_code``/``convert_cls``), re-encoded for it. ``f0`` (B, T, 2):
        pitch features of the original mels (with ``model.f0_condition``; a voice-perturbed copy
        feeds only the content path), the source's own in every decoding, conversions included.
        ``vectors`` (B, 256): each row's speaker d-vector, which replaces S_x with
        ``model.speaker_encoder: dvector`` (required then). In training the content path reads a
        voice-perturbed and/or room-augmented copy of ``mel``, and with ``model.room_speaker`` S_x
        reads a room copy of its own; the decoder's target is always ``mel`` itself."""
        speaker = None
        heard = mel  # what S_x is read from
        if self.own_speaker:
            if self.room is not None and self.cfg.room_speaker and self.training:
                # A room of its own (not the content path's): the voice must read the same
                # through any room, and the clean original stays the target.
                heard = self.room(mel)
            speaker, content, mask = self.encode(heard, lengths)
        seen = mel
        if self.perturb is not None and self.training:
            # The content code of a voice-perturbed copy must rebuild the original with S_x of
            # the original: the perturbed voice cannot help, so C_x learns to ignore it.
            seen = self.perturb(seen)
        if self.room is not None and self.training:
            # After the voice: the room's noise and echo are not part of the voice. The clean
            # original stays the target, so C_x learns to read through them.
            seen = self.room(seen)
        if seen is not mel or heard is not mel or not self.own_speaker:
            _, content, mask = self.encode(seen, lengths)
        if speaker is not None:
            s_norm = F.normalize(speaker, dim=-1)
        elif vectors is not None:
            s_norm = unit(vectors).to(mel.dtype)
        else:
            raise ClsvcError("this ClsVC conditions on d-vectors: pass each row's vector (vectors=...)")
        mel_out, mel_post = self.decode(content, s_norm, f0)
        speaker_re, content_re, _ = self.encode(mel_post, lengths)
        spk_logits = self.speaker_classifier(s_norm)
        if self.loss_cfg.adversarial == "grl":
            adv_logits = self.classify_content(grad_reverse(content), mask)
            enc_adv_logits = adv_logits
        else:
            # C2 learns on a detached code; the encoder's term goes through a frozen copy of C2,
            # so each objective moves only its own player.
            adv_logits = self.classify_content(content.detach(), mask)
            code = masked_mean(content, mask) if self.cfg.adversary_input == "pooled" else content
            enc_adv_logits = _frozen_call(self.adversary, code)
        out = ClsVCOutput(mask, speaker, content, mel_out, mel_post, speaker_re, content_re,
                          spk_logits, adv_logits, enc_adv_logits)
        if perm is not None:
            _, conv_post = self.decode(content, s_norm[perm], f0)  # a_b keeps a's intonation
            out.perm = perm
            out.conv_mel = conv_post
            if self.loss_cfg.convert_code > 0 or self.loss_cfg.convert_cls > 0:
                out.conv_speaker, out.conv_content, _ = self.encode(conv_post, lengths)
                if out.conv_speaker is not None:
                    out.conv_spk_logits = self.speaker_classifier(F.normalize(out.conv_speaker, dim=-1))
        return out

    # ------------------------------------------------------------------ inference

    def source_condition(self, source: Reference) -> torch.Tensor | None:
        """With ``model.f0_condition``: the source's pitch features (T, 2) float32, one row per
        frame of ``source.mel``, from F0 tracked on its waveform (which must be the audio the mel
        was made from, so that frames align); None without. A reference without audio is a
        ClsvcError."""
        if not self.f0_dim:
            return None
        if source.wav is None and source.load_wav is None:
            name = f"source {source.key}" if source.key else "the source"
            raise ClsvcError(f"{name}: this ClsVC is conditioned on the source's pitch "
                             "(model.f0_condition), which is tracked on its audio; pass the waveform or a file, "
                             "not only a mel")
        f0 = frame_f0(source.audio(), len(source.mel), self.mel_cfg)
        return torch.from_numpy(f0_features(f0))

    @torch.inference_mode()
    def embed(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm speaker embeddings S_x/|S_x| (B, s) of mels (B, T, M)."""
        speaker, _, _ = self.encode(mel, lengths)
        if speaker is None:
            raise ClsvcError("this ClsVC's voices are d-vectors of reference audio, not made from mels: "
                             "use model.voice.voice([Reference(mel, wav=...)])")
        return F.normalize(speaker, dim=-1)

    @torch.inference_mode()
    def content(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Content codes C_x (B, T, c)."""
        return self.encode(mel, lengths)[1]

    @torch.inference_mode()
    def codes(self, mel: torch.Tensor, lengths: torch.Tensor | None = None) -> Codes:
        """C_x (B, T, c) and unit S_x (B, s)."""
        speaker, content, _ = self.encode(mel, lengths)
        return Codes(content, None if speaker is None else F.normalize(speaker, dim=-1))

    @torch.inference_mode()
    def convert(self, mel: torch.Tensor, speaker: torch.Tensor, source: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Source mels (B, T, M) + target speaker embeddings (B, s) or (s,) -> converted (B, T, M).

        The target embedding is re-normalised, so a mean of unit embeddings may be passed.
        ``source``: with ``model.f0_condition`` the source's pitch features (T, 2) or (B, T, 2)
        (:meth:`source_condition`), else unused.
        """
        _, content, _ = self.encode(mel)
        if speaker.dim() == 1:
            speaker = speaker.unsqueeze(0).expand(mel.shape[0], -1)
        f0 = None
        if self.f0_dim:
            if source is None:
                raise ClsvcError("this ClsVC is conditioned on the source's pitch (model.f0_condition): pass "
                                 "source=model.source_condition(Reference(mel, wav=...)), or convert with "
                                 "clsvc.load(...), which does")
            f0 = source.to(mel.device, torch.float32)
            if f0.dim() == 2:
                f0 = f0.unsqueeze(0).expand(mel.shape[0], -1, -1)
        _, post = self.decode(content, F.normalize(speaker, dim=-1), f0)
        return post.clamp(0.0, 1.0)
