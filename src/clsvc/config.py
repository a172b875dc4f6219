"""Typed configuration: dataclasses loaded from YAML with ``key.sub=value`` overrides.

A config file may name a ``base`` (another YAML file, resolved relative to it, or a built-in
name such as ``paper``); its keys are applied on top of the base. Unknown keys and values of the
wrong type are errors that name the file and the key, so a typo never silently trains the wrong
model.

Dicts become dataclasses through ``dacite`` (:func:`from_dict`): strict about unknown keys,
lenient in the ways YAML and overrides need (``4.0`` or ``"4"`` for an integer, a number for a
float, ``true``/``false``/``yes``/``no``/``1``/``0`` strings for a bool, a list for a tuple).
Choice fields are ``Literal`` types, so their allowed values live in the annotation. Value
ranges and cross-field rules are checked in one place, :func:`validate`, so that the models can
trust what they are given. Every failure is one :class:`~clsvc.errors.ClsvcError` line naming
where, the dotted key and what is allowed.

Built-in configs live in the repository's ``configs/`` folder (shipped inside the package as
``clsvc/configs``): ``clsvc train --config cpu`` and ``--config configs/cpu.yaml`` are the same.

:func:`add_dataclass_arguments` and :func:`dataclass_from_namespace` turn any flat settings
dataclass into command-line flags and back.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import dacite
import yaml

from .errors import ClsvcError
from .files import read_utf8

T = TypeVar("T")

BUILTIN_CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Choice types: the allowed values are the annotation (checked at load and by validate()).
System = Literal["clsvc", "autovc", "vqvc", "vae", "stargan", "vocoder"]
SYSTEMS: tuple[str, ...] = typing.get_args(System)
Norm = Literal["batch", "group", "none"]
ContentNorm = Literal["none", "instance"]
SpeakerClassifier = Literal["linear", "cosine"]
SpeakerEncoder = Literal["own", "dvector"]
AdversaryInput = Literal["frame", "pooled"]
Adversarial = Literal["grl", "entropy"]
Distance = Literal["l1", "l2"]  # of a loss term: mean absolute or mean squared error
PhoneReaderInput = Literal["mel", "perturbed"]
PhoneOutOn = Literal["both", "reconstruction", "conversion"]
Sampling = Literal["speaker", "utterance", "sqrt"]
Schedule = Literal["constant", "cosine"]  # of the learning rate over a run


@dataclass(frozen=True)
class MelConfig:
    """The single mel-spectrogram definition (AutoVC's recipe, used by the ClsVC paper).

    Audio is 16 kHz mono, high-passed at 30 Hz; STFT magnitude (n_fft 1024, Hann window 1024,
    hop 256, i.e. 16 ms frames at 62.5 frames/s) is projected on 80 Slaney mel bands spanning
    90-7600 Hz, converted to dB with an amplitude floor of 1e-5, shifted by ``-ref_level_db``
    and mapped to [0, 1] by ``(dB - min_level_db) / -min_level_db`` with clipping.
    """

    sample_rate: int = 16000
    n_fft: int = 1024
    win_length: int = 1024
    hop_length: int = 256
    n_mels: int = 80
    fmin: float = 90.0
    fmax: float = 7600.0
    highpass_hz: float = 30.0
    amp_floor: float = 1e-5
    ref_level_db: float = 16.0
    min_level_db: float = -100.0
    # Griffin-Lim settings for the default vocoder (the inverse of this definition). 32 (librosa's
    # default; was 60): copy synthesis of 44 real utterances scored PESQ 2.81 vs 2.84, STOI 0.939
    # vs 0.940, DNSMOS 2.21 vs 2.22 at 53% of the time (BENCHMARKS.md, "Speed").
    griffin_lim_iters: int = 32

    def differences(self, other: MelConfig) -> list[str]:
        """The fields (``mel.NAME``) in which ``other`` makes other features than this definition:
        [] when the features are the same (Griffin-Lim's iteration count shapes no feature and is
        not compared, so features, models and vocoders stay compatible across it)."""
        return [f"mel.{f.name}" for f in dataclasses.fields(self)
                if f.name != "griffin_lim_iters" and getattr(self, f.name) != getattr(other, f.name)]


@dataclass
class ModelConfig:
    """Network sizes. Defaults are the AutoVC-sized network of ``configs/paper.yaml``.

    Encoder: ``enc_conv_layers`` x Conv1d(k=5, ``enc_channels``) + norm + ReLU, then a
    bidirectional LSTM (``enc_lstm_hidden`` per direction, ``enc_lstm_layers``), then a linear
    projection to Z = S_x (first ``speaker_dim``) + C_x (last ``content_dim``) per frame.
    S_x is the time average of its frames (utterance level); C_x stays frame level.

    Decoder: LSTM(``dec_pre_lstm``) -> ``dec_conv_layers`` x Conv1d(``dec_channels``) ->
    LSTM(``dec_lstm_hidden``, ``dec_lstm_layers``) -> linear to mel, plus a residual postnet of
    ``postnet_layers`` convs (``postnet_channels``, tanh). Any LSTM size 0 removes that LSTM.
    """

    # Which system: clsvc (the paper), autovc, vqvc (VQVC+), vae (VAE-VC), stargan (StarGAN-VC2).
    # The baselines read their own section below; the shared sizes here are reused where the
    # architectures agree (AutoVC's encoder/decoder/postnet are ClsVC's reference).
    system: System = "clsvc"
    n_speakers: int = 0  # set from the training data; 0 = not yet known
    speaker_dim: int = 256
    content_dim: int = 32
    enc_channels: int = 512
    enc_conv_layers: int = 3
    enc_lstm_hidden: int = 256
    enc_lstm_layers: int = 2
    dec_pre_lstm: int = 512
    dec_channels: int = 512
    dec_conv_layers: int = 3
    dec_lstm_hidden: int = 1024
    dec_lstm_layers: int = 2
    postnet_channels: int = 512
    postnet_layers: int = 5
    kernel_size: int = 5
    # "batch" (AutoVC), "group" (batch-size independent) or "none".
    norm: Norm = "batch"
    # Content-code post-processing (paper: none). "instance" removes each utterance's per-channel
    # mean and scale over time, i.e. the time-invariant part where a voice hides most easily.
    content_norm: ContentNorm = "none"
    # Remedy (not in the paper): the content code is read from a voice-perturbed copy of the input
    # (training only; models/augment.py): a frequency warp up to this ratio (1 = off) and a random
    # smooth equaliser up to ``voice_eq_db`` dB (0 = off). S_x and the target stay the original.
    voice_warp: float = 1.0
    voice_eq_db: float = 0.0
    # Remedy (not in the paper), clsvc only: the content path also reads the utterance as if
    # recorded in a room (training only; models/augment.py RoomAugment): with probability
    # ``noise_prob`` coloured noise at an SNR from ``noise_snr_db`` up to 40 dB, with probability
    # ``reverb_prob`` reverberation with an RT60 up to ``reverb_rt60`` s (0 = off, each).
    noise_prob: float = 0.0
    noise_snr_db: float = 10.0
    reverb_prob: float = 0.0
    reverb_rt60: float = 0.8
    # With the room augmentation on: S_x too is read from a room copy of the input (its own draw),
    # so that a voice given by noisy or roomy reference clips is the voice, not the room.
    room_speaker: bool = False
    # Remedy (not in the paper), clsvc only: new voices made from the training voices (training
    # only; models/augment.py): with probability ``pseudo_voice_prob`` a row -- everything E reads
    # and the decoder's target alike -- is frequency-warped by a random ratio up to
    # ``pseudo_voice_warp`` (formants and harmonics move together: a longer or shorter vocal tract
    # at another pitch), a voice no training speaker has. C1 gets no label for such a row, so S_x
    # may place it between the speakers it knows; unseen voices then land where the decoder has
    # learned to render something. Speaker augmentation for one-shot conversion.
    pseudo_voice_prob: float = 0.0
    pseudo_voice_warp: float = 1.15
    # Remedy (not in the paper; AutoVC-F0, Qian et al. 2020), clsvc only: the decoder also reads the
    # source's pitch contour, per utterance z-scored log F0 + voiced flag per frame (clsvc.pitch),
    # so conversions keep the source's intonation and S_x supplies only the pitch level and range.
    # Training needs features made with `clsvc preprocess --f0`; conversion reads the source audio.
    f0_condition: bool = False
    # Remedy (not in the paper), clsvc only: where S_x comes from. "own" (paper): the time average
    # of E's first ``speaker_dim`` channels. "dvector": the speaker's Resemblyzer d-vector (a speaker
    # encoder pretrained on thousands of voices, as AutoVC conditions on a pretrained one); E then
    # outputs only C_x, the decoder is trained on each training speaker's mean d-vector, and a voice
    # for conversion comes from reference audio. Needs ``speaker_dim: 256``. C1 still trains on the
    # (fixed) vectors and only reports how separable the training speakers are.
    speaker_encoder: SpeakerEncoder = "own"
    # C1 on the L2-normalised S_x: "linear" (paper) or "cosine" (scaled cosine logits).
    speaker_classifier: SpeakerClassifier = "linear"
    cosine_scale: float = 16.0
    # C2 on C_x: "frame" classifies every frame, "pooled" the time-averaged code.
    adversary_input: AdversaryInput = "frame"
    adversary_hidden: int = 256
    adversary_layers: int = 2
    # The phone reader of ``loss.phone_out`` (training only): ``phone_reader_layers`` Conv1d
    # (k=5, ``phone_reader_channels``, ReLU) on the mel, then a linear map to the phones.
    phone_reader_channels: int = 256
    phone_reader_layers: int = 4
    # What the reader learns on: the input mel, or its voice-perturbed copy (``voice_warp``,
    # ``voice_eq_db``), so that its reading depends less on the voice and a decoder cannot make a
    # conversion easier to read by keeping the source's voice in it (BENCHMARKS.md, stop 31).
    phone_reader_input: PhoneReaderInput = "mel"


@dataclass
class LossConfig:
    """Loss weights. Paper: L = L_recon + alpha L_code + beta CE(C1) + lambda adversarial CE."""

    alpha: float = 0.1  # code reconstruction ||E(x') - Z||^2
    beta: float = 0.1  # speaker classification CE(C1(norm S_x))
    lambda_adv: float = 0.5  # adversarial speaker classification on C_x
    # "grl" (paper): C2 minimises CE, a gradient reversal layer makes E maximise the same CE.
    # "entropy": C2 minimises CE on a detached C_x; E minimises CE to the *uniform* target,
    # i.e. is pushed towards "C2 cannot tell", never towards "C2 is confidently wrong".
    adversarial: Adversarial = "grl"
    code_distance: Distance = "l2"  # "l2" (paper) or "l1" (AutoVC)
    # L_recon's distance on both decoder outputs: "l2" (paper, AutoVC) or "l1" (FastSpeech 2's
    # mel loss), which regresses to the median rather than the mean of what the code allows and
    # so blurs less where the decoder is unsure.
    recon_distance: Distance = "l2"
    # Remedy (not in the paper): the code loss on converted outputs. For x_a->b = D(C_a, S_b)
    # the re-encoded content must match C_a and the re-encoded speaker must match S_b.
    convert_code: float = 0.0
    # Remedy: C1 must recognise speaker b in the re-encoded conversion x_a->b.
    convert_cls: float = 0.0
    # Remedy for parallel corpora (ARCTIC: several voices read the same prompts): the weight of a
    # supervised conversion term. D(C_a, S_b) of a crop of speaker a's utterance must match
    # speaker b's utterance of the same transcript, time-aligned to a's frames by DTW, under
    # recon_distance on both decoder outputs (``train.parallel_pairs`` such pairs per step). The
    # reconstruction objective never shows the decoder a content code of one voice with the
    # vector of another; this term does, for the voices that have parallel recordings. 0 = off.
    parallel: float = 0.0
    # Remedy for parallel corpora, on the code only: the weight of a content-consistency term.
    # C_x of a crop of speaker a's utterance must match C_x of speaker b's utterance of the same
    # transcript, time-aligned to a's frames by DTW (mean squared difference per channel over the
    # valid frames; the same ``train.parallel_pairs`` pairs as ``parallel``). Swapping the target's
    # own content code into a conversion takes 0.7 dB off its audio MCD (BENCHMARKS.md, stop 37):
    # what a voice leaves in C_x follows it into the conversion. Unlike ``parallel`` the decoder
    # never learns the DTW-warped frames. With ``content_norm: instance`` the codes cannot meet by
    # shrinking. 0 = off.
    parallel_code: float = 0.0
    # Remedy (not in the paper) for words lost in the content code: the weight of a phone
    # classification term. A linear classifier reads each frame's phone from C_x (of the
    # voice-perturbed copy when the perturbation is on) and is trained with C_x against the
    # labels of forced alignment (``clsvc preprocess --phones``; frames without one are ignored),
    # so C_x must keep the sounds apart that the reconstruction alone lets blur. 0 = off.
    phone: float = 0.0
    # Remedy (not in the paper) for over-smoothed outputs: the weight of recon_distance between
    # the frame-to-frame changes (x[t] - x[t-1]) of both decoder outputs and those of the target.
    # A frame-wise regression loss lets the decoder flatten the quick rises and falls between
    # sounds (the transitions that carry consonants); this term prices them directly. 0 = off.
    delta: float = 0.0
    # Remedy (not in the paper) for the decoder's blurred spectral envelope: the weight of
    # recon_distance between the low-quefrency cepstra c1..c_envelope_order (orthonormal DCT-II
    # over the mel bands, c0 = level excluded) of both decoder outputs and those of the target.
    # A mel loss spreads its gradient over all 80 quefrencies; on real speech more than half of
    # the decoder's own-voice error lies above c24 (harmonics and noise), which the formants, and
    # audio MCD, do not see (replacing c1..c24 of a reconstruction with the recording's takes
    # 1.18 dB off its audio MCD, replacing c25..c79 0.02 dB: BENCHMARKS.md, stop 42). 0 = off.
    envelope: float = 0.0
    envelope_order: int = 24
    # Remedy (not in the paper) for outputs the decoder renders less clearly than speech: the
    # weight of a phone term on the decoded mels. A small conv net (the phone reader) learns to
    # read each frame's phone from the real input mel (labels of ``clsvc preprocess --phones``);
    # a frozen copy of it must then read the same phones from the reconstruction and from a
    # conversion of the same crop into another speaker of the batch, and that cross-entropy,
    # times this weight, trains the decoder (and the encoder, unless frozen). A conversion has
    # no target mel to regress to; its words can still be checked. 0 = off.
    phone_out: float = 0.0
    # Which decoded mels the frozen reader reads: "both" (the mean of the two terms), only the
    # "reconstruction" (in the source's own voice, so keeping the source's voice in a
    # conversion earns nothing), or only the "conversion".
    phone_out_on: PhoneOutOn = "both"
    # The weight with which the phone reader learns to leave a speaker adversary on its features
    # clueless (cross-entropy to the uniform distribution): a reader that cannot tell the voice
    # gives a decoder nothing for keeping the source's voice in a conversion. 0 = off.
    phone_reader_adv: float = 0.0


@dataclass
class AutoVCConfig:
    """AutoVC (Qian et al. 2019): content encoder fed the mel and the source speaker's d-vector,
    a down-sampled bottleneck, decoder + postnet from ModelConfig's sizes. The speaker vector
    is the mean Resemblyzer (GE2E, 256-d) d-vector of a speaker's utterances."""

    bottleneck_dim: int = 32  # channels of the content code (both LSTM directions together)
    downsample: int = 32  # keep one code every `downsample` frames (then repeat it)
    lambda_code: float = 1.0  # AutoVC's weight of the code loss
    code_distance: Distance = "l1"  # AutoVC uses L1 for the code loss


@dataclass
class VQVCConfig:
    """VQVC+ (Wu et al. 2020): a U-Net-like conv encoder/decoder; at each level the content is
    the vector-quantised code and the speaker is the time-averaged residual between the
    continuous and the quantised code, fed to the decoder at that level."""

    channels: int = 256  # conv width of encoder and decoder
    levels: int = 3  # U-Net levels (each halves the time resolution)
    codebook_size: int = 64  # codes per level
    code_dim: int = 64  # dimension of the quantised vectors
    commitment: float = 0.25  # weight of the encoder commitment loss (VQ-VAE's beta)
    codebook_ema: float = 0.0  # > 0: EMA codebook updates with this decay instead of a loss
    # Weight of the summed VQ losses (codebook + commitment) in the total; the authors' code
    # uses 0.1 with L1 reconstruction.
    vq_weight: float = 1.0


@dataclass
class VAEConfig:
    """VAE-VC (Hsu et al. 2016): a conditional VAE, frame-level latent from the encoder, decoder
    conditioned on a learned speaker table (seen speakers only). Defaults are configs/vae.yaml's;
    layer counts, kernel and norm come from ModelConfig (see clsvc.models.vae)."""

    latent_dim: int = 64  # z per frame (the paper's public code: 64)
    speaker_emb_dim: int = 128  # learned speaker table row (the paper's public code: 128)
    channels: int = 512  # conv/LSTM width of encoder, decoder and postnet (AutoVC's 512)
    # Weight of the KL term; recon and KL are both means per frame and dimension, so the
    # paper's unit-variance ELBO on 10 dB units is kl_weight = latent_dim * 0.01 / 40 = 0.016.
    kl_weight: float = 0.016
    kl_anneal_steps: int = 10000  # linear KL warm-up (avoids posterior collapse early on)


@dataclass
class StarGANConfig:
    """StarGAN-VC2 (Kaneko et al. 2019) on mel features: 2-1-2D conv generator with
    conditional instance normalisation, projection discriminator conditioned on the
    source-and-target pair, least-squares adversarial + cycle + identity losses."""

    # Widths count a conv's channels *before* its GLU halves them (the paper's figure labels).
    gen_channels: int = 128  # G's first 2-D conv (g); down-sampling 2g, 4g; up-sampling 8g, 4g
    res_channels: int = 256  # 1-D width of the CIN residual blocks (their convs: 2x this)
    res_blocks: int = 9
    disc_channels: int = 128  # D's first 2-D conv (d); then 2d, 4d, 8d, 8d
    lambda_cyc: float = 10.0
    lambda_id: float = 5.0
    id_steps: int = 10000  # the identity loss is used for the first id_steps steps only
    disc_lr_scale: float = 0.5  # D's rate relative to optim.lr (paper: 1e-4 vs 2e-4)


# One unit of the [0, 1] mel scale in natural-log amplitude units: -min_level_db dB = 100 dB
# = 11.51 nats. HiFi-GAN's and Vocos' mel-loss weight (45) is per nat.
MEL_NATS_PER_UNIT = -MelConfig().min_level_db / 20.0 * math.log(10.0)


@dataclass
class VocoderConfig:
    """Sizes and loss weights of :class:`VocoderSystem` (the generator's n_fft and hop are the
    mel's).

    Loss weights: ``lambda_mel`` multiplies the mel L1 in clsvc's units (1 = 100 dB); its
    default is HiFi-GAN's 45 per natural-log unit (x :data:`MEL_NATS_PER_UNIT`), so the mel
    term keeps HiFi-GAN's weight relative to the adversarial (1) and feature-matching (2)
    terms. ``lambda_stft`` = 1: the multi-resolution STFT loss is auxiliary here (the mel
    loss carries the envelope); it pins what clsvc's mel does not see (below 90 Hz, above
    7.6 kHz) and time resolutions finer and coarser than the 64 ms mel window; its log term is
    in nats like the mel term's reference, so 1 against 45 keeps it from fighting the mel and
    adversarial terms over fine detail.

    Discriminator sizes default to the published ones (HiFi-GAN's MPD, Vocos' MRD); they are
    GPU sizes. On CPU (one thread, 16 x 0.5 s segments, a shared machine) the full pair costs
    12-30 s per step against 0.35-0.6 s for the generator alone, most of it in the MPD's 512- and
    1024-wide convs; ``mpd_channels=(8, 32, 128, 256, 256)``, ``mrd_channels=8`` brings a step
    (both phases) to 1.6-2.2 s. ``disc_every`` cuts only the "disc" phase: the
    "gen" phase still runs D forward and backward on the generated wave every step.
    """

    # generator (VocosGenerator)
    dim: int = 384
    intermediate: int = 1152
    layers: int = 8
    kernel: int = 7
    max_magnitude: float = 1e3
    # multi-period discriminator: periods and conv widths (the last width is unstrided)
    mpd_periods: tuple[int, ...] = (2, 3, 5, 7, 11)
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)
    # multi-resolution discriminator: (n_fft, hop, win) per branch and its conv width
    mrd_resolutions: tuple[tuple[int, int, int], ...] = ((1024, 256, 1024), (512, 128, 512), (256, 64, 256))
    mrd_channels: int = 32
    # multi-resolution STFT loss: (n_fft, hop, win) per resolution (Parallel WaveGAN's)
    stft_resolutions: tuple[tuple[int, int, int], ...] = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))
    # loss weights (see the class docstring)
    lambda_mel: float = 45.0 * MEL_NATS_PER_UNIT
    lambda_stft: float = 1.0
    lambda_adv: float = 1.0
    lambda_fm: float = 2.0
    # generator steps of reconstruction-only training before the discriminators join
    warmup_steps: int = 5000
    # False: reconstruction losses only, for the whole run; the discriminators are not built (a
    # fine-tune of a trained generator on a VC model's mels: configs/vocoder-h200-arctic-mel.yaml)
    adversarial: bool = True
    # update the discriminators every `disc_every` generator steps (cuts their cost by k)
    disc_every: int = 1
    # the discriminators' learning rate relative to the optimiser's (HiFi-GAN: equal)
    disc_lr_scale: float = 1.0


@dataclass
class ConvertConfig:
    """How a model's conversions are finished: settings that shape no feature and no weight, kept
    with the model (``clsvc export --gv-max``) so that a shipped model converts as it was measured,
    and overridable per call (``clsvc convert --gv-max``, ``clsvc.load(..., gv_max=)``).

    ``gv_max``: global-variance compensation (Toda et al. 2007's remedy for over-smoothed
    statistical VC; :func:`clsvc.audio.compensate_variance`). A decoder trained with an L1/L2 loss
    flattens each mel band's movement over time, which sounds muffled; the model's reconstruction
    of the source (its own voice) shows by how much, band by band, against the source itself, and
    the conversion's bands are spread by the same ratios, at most ``gv_max`` times. 0 (or anything
    up to 1) = off. Needs a system that can make the source's own voice from its audio (one-shot
    systems).

    ``contrast``: speaker contrast. The target vector t is pushed away from the source's own
    vector s (both unit): the decoder gets (t + c·(t − s)) / |t + c·(t − s)|. A content code that
    still carries some of the source's voice pulls a conversion back toward the source; pushing the
    target vector the other way by ``c`` offsets that pull. 0 = off; a source converted into its
    own voice is unchanged at any ``c``. Needs a system that can make the source's own voice from
    its audio (one-shot systems).

    ``contour``: level contour. The conversion takes its source's frame-by-frame loudness
    movement (:func:`clsvc.audio.follow_level_contour`): the decoder smooths the syllable-rate rise
    and fall of the level, which costs words; ``contour`` is the weight of the source's (0 = off,
    1 = all of it). Any system: it needs only the source's mel.
    """

    gv_max: float = 0.0
    contrast: float = 0.0
    contour: float = 0.0


@dataclass
class OptimConfig:
    """Adam settings (the paper: betas 0.9/0.98) and the adversary's rate multiplier."""
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    grad_clip: float = 0.0  # 0 = no clipping (paper does not mention clipping)
    # Learning-rate multiplier for C2 (adversary strength); 1 = paper.
    adversary_lr_mult: float = 1.0
    # The rate over the run: "constant" (the paper), or "cosine": half a cosine from lr at step 0
    # down to lr_final at train.max_steps, the usual finishing schedule. (Fine-tuning the shipped
    # `arctic` decoder with it did not lower its validation error: BENCHMARKS.md, trial 12.)
    schedule: Schedule = "constant"
    lr_final: float = 1e-5  # with schedule cosine: the rate of the last step


@dataclass
class TrainConfig:
    """Batching, budget, logging, validation and checkpoint cadence of a training run."""
    batch_size: int = 16
    max_steps: int = 200_000
    max_minutes: float = 0.0  # wall-clock budget; 0 = none
    crop_frames: int = 128  # T; shorter utterances are padded with pad_value
    pad_value: float = 0.0  # 0 in the [0, 1] mel scale = the -100 dB floor, i.e. silence
    # "speaker": pick a speaker uniformly, then one of their utterances (balances speakers
    # with few utterances); "utterance": uniform over utterances; "sqrt": pick a speaker with
    # probability proportional to the square root of its utterance count, then one of them (in
    # between: 3 voices x 593 utterances beside 251 one-utterance voices get 22% of the draws, not
    # 88% as by utterance or 1% as by speaker).
    sampling: Sampling = "speaker"
    seed: int = 1234
    threads: int = 0  # torch CPU threads; 0 = torch default
    amp: bool = True  # autocast on CUDA only
    log_every: int = 50
    val_every: int = 1000
    val_batches: int = 8
    ckpt_every: int = 2000
    keep_every: int = 0  # also keep step_N.pt every N steps; 0 = only last.pt
    # Utterances per speaker averaged into the stored speaker table (used by --target-speaker).
    table_utterances: int = 8
    # Parameter-name prefixes kept fixed (e.g. ["encoder."] to train a new decoder on a trained
    # encoder's codes, see `clsvc train --init --init-partial`); their batch-norm statistics keep
    # adapting to the data like every module's. () = train everything.
    freeze: tuple[str, ...] = ()
    # Parallel pairs (same transcript, two training speakers) drawn per step beside the batch
    # when loss.parallel > 0; validation gets the same number from the validation split.
    parallel_pairs: int = 8


SeenTarget = Literal["table", "refs"]
# The paper's acceptance threshold of a Resemblyzer cosine for "same speaker" (its Fig. 3).
ACCEPT_THRESHOLD = 0.84


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class EvalConfig:
    """Settings of ``clsvc evaluate`` (the pair protocol and which scorers run); each field is
    also a command-line flag (``--seen-pairs``, ``--no-mcd``, ...)."""

    seen_pairs: int = field(default=48, metadata=_help("many-to-many pairs among training speakers"))
    unseen_pairs: int = field(default=36, metadata=_help("one-shot pairs among unseen speakers"))
    any2many_pairs: int = field(default=0, metadata=_help(
        "pairs from unseen speakers into training speakers (any-to-many)"))
    refs: int = field(default=3, metadata=_help("reference utterances per one-shot target"))
    seen_target: SeenTarget = field(default="table", metadata=_help(
        "seen targets: the stored training-speaker vector (table), or references like one-shot (refs)"))
    centroid_utterances: int = field(default=10, metadata=_help(
        "real utterances per speaker in its Resemblyzer centroid"))
    threshold: float = field(default=ACCEPT_THRESHOLD, metadata=_help(
        "Resemblyzer acceptance threshold (the paper's Fig. 3)"))
    seed: int = field(default=0, metadata=_help("seed of the protocol's choices"))
    mcd: bool = field(default=True, metadata=_help("audio (WORLD) and log-mel MCD on parallel pairs"))
    asr: bool = field(default=True, metadata=_help("pocketsphinx WER / CER"))
    quality: bool = field(default=True, metadata=_help(
        "DNSMOS P.835 SIG/BAK/OVRL of every audio; PESQ and STOI of the vocoded real target against the "
        "recording"))
    pitch: bool = field(default=True, metadata=_help(
        "F0 error after DTW against the reference recording: log-F0 RMSE in cents, F0 correlation, "
        "V/UV error (parallel pairs); pitch level (median F0) closer to the target's than the source's "
        "(every pair)"))
    probes: bool = field(default=True, metadata=_help("fresh speaker classifiers on the frozen codes"))
    tsne: bool = field(default=True, metadata=_help("t-SNE of speaker codes (the paper's Fig. 5)"))
    tsne_utterances: int = field(default=20, metadata=_help("utterances per speaker in the t-SNE"))
    tsne_speakers: int = field(default=20, metadata=_help("speakers in the t-SNE"))
    bounds: bool = field(default=True, metadata=_help(
        "also score the two bounds: real target and unconverted source through the vocoder"))
    samples: int = field(default=4, metadata=_help("converted wavs kept per condition"))


@dataclass
class Config:
    """The whole configuration of a run: one section per concern (saved in checkpoints)."""
    mel: MelConfig = field(default_factory=MelConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Baselines' own settings (ignored unless model.system names them).
    autovc: AutoVCConfig = field(default_factory=AutoVCConfig)
    vqvc: VQVCConfig = field(default_factory=VQVCConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    stargan: StarGANConfig = field(default_factory=StarGANConfig)
    vocoder: VocoderConfig = field(default_factory=VocoderConfig)
    convert: ConvertConfig = field(default_factory=ConvertConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain builtins (YAML- and checkpoint-safe)."""
        return to_dict(self)


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of builtins (tuples become lists), safe for YAML and checkpoints."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


# Type hooks: each gets the raw value of a field of that type and returns it coerced, or raises
# dacite's WrongTypeError (dacite then prefixes the dotted field path as the error travels up).


def _to_int(value: Any) -> int:
    """An int from an int, an integral float (``4.0``) or a string of either (``"4"``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number: float | None = value if isinstance(value, float) else None
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            try:
                number = float(value)
            except ValueError:
                pass
    if number is not None and math.isfinite(number) and number == int(number):
        return int(number)
    raise dacite.WrongTypeError(field_type=int, value=value)


def _to_float(value: Any) -> float:
    """A float from a number or a numeric string (YAML reads ``1e-3`` as a string); not NaN."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise dacite.WrongTypeError(field_type=float, value=value) from None
    if math.isnan(out):
        raise dacite.WrongTypeError(field_type=float, value=value)
    return out


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def _to_bool(value: Any) -> bool:
    """A bool from a bool or one of the strings true/false, yes/no, 1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise dacite.WrongTypeError(field_type=bool, value=value)


def _to_str(value: Any) -> str:
    if isinstance(value, (str, int, float)):
        return str(value)
    raise dacite.WrongTypeError(field_type=str, value=value)


def _to_tuple(tp: Any, value: Any) -> tuple:
    """A tuple from a list of the right length (the items are coerced by dacite afterwards)."""
    args = typing.get_args(tp)
    fixed = not (len(args) == 2 and args[1] is Ellipsis)
    if isinstance(value, (list, tuple)) and (not fixed or len(value) == len(args)):
        return tuple(value)
    raise dacite.WrongTypeError(field_type=tp, value=value)


def _section(value: Any) -> Any:
    """An empty YAML section (``mel:``) reads as None: it means "all defaults"."""
    return {} if value is None else value


def _collect_hooks(tp: Any, hooks: dict[Any, Callable[[Any], Any]]) -> None:
    if tp in hooks:
        return
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hooks[tp] = _section
        for sub in typing.get_type_hints(tp).values():
            _collect_hooks(sub, hooks)
        return
    origin = typing.get_origin(tp)
    if origin is Literal:
        return
    if origin is tuple:
        hooks[tp] = functools.partial(_to_tuple, tp)
    for arg in typing.get_args(tp):
        if arg is not Ellipsis:
            _collect_hooks(arg, hooks)


@functools.cache
def _dacite_config(cls: type) -> dacite.Config:
    hooks: dict[Any, Callable[[Any], Any]] = {int: _to_int, float: _to_float, bool: _to_bool, str: _to_str}
    _collect_hooks(cls, hooks)
    del hooks[cls]  # the top level is checked by from_dict itself
    return dacite.Config(strict=True, cast=[tuple], type_hooks=hooks)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass that a field of type ``tp`` holds (also through ``X | None``), else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [c for c in map(_dataclass_of, typing.get_args(tp)) if c is not None]
        return found[0] if len(found) == 1 else None
    return None


def _find_unknown(cls: type, data: Mapping, keys: set[str], path: str = "") -> tuple[str, list[str]] | None:
    """Where in ``data`` (read as ``cls``) the mapping with exactly the unknown ``keys`` sits:
    (dotted prefix, valid keys there)."""
    names = [f.name for f in dataclasses.fields(cls)]
    if set(data) - set(names) == keys:
        return path, names
    hints = typing.get_type_hints(cls)
    for name in names:
        sub, value = _dataclass_of(hints[name]), data.get(name)
        if sub is not None and isinstance(value, Mapping):
            found = _find_unknown(sub, value, keys, f"{path}{name}.")
            if found is not None:
                return found
    return None


def _expected(tp: Any, value: Any) -> str:
    """What a field of type ``tp`` accepts, as the tail of a one-line error."""
    if typing.get_origin(tp) is Literal:
        return f"{value!r} is not one of {', '.join(map(str, typing.get_args(tp)))}"
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        n = "any number of" if len(args) == 2 and args[1] is Ellipsis else str(len(args))
        return f"expected a list of {n} values, got {value!r}"
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        keys = ", ".join(f.name for f in dataclasses.fields(tp))
        return f"expected a section (a mapping of {keys}), got {value!r}"
    what = {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp)
    if what is not None:
        return f"expected {what}, got {value!r}"
    return f"{value!r} does not fit {getattr(tp, '__name__', tp)}"


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` (nested sections too) from ``data`` with dacite.

    Unknown keys, values of the wrong type and bad choices raise a one-line ClsvcError naming
    ``where``, the dotted key and what is allowed. Value ranges are :func:`validate`'s job.
    """
    if not isinstance(data, Mapping):
        raise ClsvcError(f"{where}: expected a mapping, got {type(data).__name__}")
    try:
        return dacite.from_dict(data_class=cls, data=data, config=_dacite_config(typing.cast(type, cls)))
    except dacite.UnexpectedDataError as e:
        keys = {str(k) for k in e.keys}
        path, valid = _find_unknown(cls, {str(k): v for k, v in data.items()}, keys) or ("", [])
        if not valid:
            valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        section = f" in {path[:-1]}" if path else ""
        raise ClsvcError(
            f"{where}: {', '.join(path + k for k in sorted(keys))}: unknown key{'s' * (len(keys) > 1)}; "
            f"valid keys{section} are {', '.join(sorted(valid))}"
        ) from None
    except dacite.WrongTypeError as e:  # UnionMatchError included
        raise ClsvcError(f"{where}: {e.field_path}: {_expected(e.field_type, e.value)}") from None
    except dacite.MissingValueError as e:
        raise ClsvcError(f"{where}: {e.field_path}: missing (it has no default); give a value") from None
    except dacite.DaciteError as e:
        raise ClsvcError(f"{where}: {e}") from None


def _deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_update(out[k], v)
        else:
            out[k] = v
    return out


# ----------------------------------------------------------------------------------------------
# files and overrides


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A path to a YAML file, or a built-in name (``paper``, ``cpu``, ``clsvcs`` ...)."""
    p = Path(name)
    candidates = [p]
    if relative_to is not None and not p.is_absolute():
        candidates.insert(0, relative_to / p)
    if p.suffix == "":
        candidates.append(BUILTIN_CONFIG_DIR / f"{p.name}.yaml")
    candidates.append(BUILTIN_CONFIG_DIR / p.name)
    for c in candidates:
        if c.is_file():
            return c
    builtin = sorted(q.stem for q in BUILTIN_CONFIG_DIR.glob("*.yaml"))
    raise ClsvcError(
        f"config {name}: no such file; give a YAML path or one of the built-in configs: "
        f"{', '.join(builtin)}"
    )


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def yaml_error_message(e: yaml.YAMLError) -> str:
    """PyYAML's multi-line message as one line: ``line L, column C: problem (context)``."""
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = _one_line(e.problem or e.context or "syntax error")
        context = f" ({_one_line(e.context)})" if e.context and e.problem else ""
        return f"{where}{what}{context}"
    return _one_line(e) or type(e).__name__


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """The YAML document in ``path`` (None when empty); an unreadable, non-UTF-8 or malformed
    file is one ClsvcError line naming the file, ``what`` it is and where it breaks."""
    path = Path(path)
    text = read_utf8(path, what)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ClsvcError(f"{what} {path}: not valid YAML ({yaml_error_message(e)}); fix the file's syntax") from None


def _load_yaml_tree(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ClsvcError(f"config {path}: 'base' chain loops back to itself")
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ClsvcError(f"config {path}: expected a mapping of sections (mel, model, ...)")
    base = data.pop("base", None)
    if base is not None:
        base_path = resolve_config_path(base, relative_to=path.parent)
        data = _deep_update(_load_yaml_tree(base_path, seen + (path,)), data)
    return data


def parse_overrides(overrides: list[str]) -> dict:
    """``["train.batch_size=8", "model.content_dim=16"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ClsvcError(
                f"override {item!r}: expected key=value, e.g. train.max_steps=1000"
            )
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) < 2 or not all(parts):
            raise ClsvcError(
                f"override {item!r}: the key must be section.name, e.g. loss.alpha=0.1"
            )
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(name: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a config file (or the defaults when ``name`` is None) and apply overrides."""
    data: dict = {}
    where = "config"
    if name is not None:
        path = resolve_config_path(name)
        data = _load_yaml_tree(path)
        where = f"config {path}"
    if overrides:
        data = _deep_update(data, parse_overrides(overrides))
    cfg = from_dict(Config, data, where)
    validate(cfg, where)
    return cfg


def with_overrides(cfg: Config, overrides: list[str], where: str = "config") -> Config:
    """A copy of ``cfg`` with ``key.sub=value`` overrides applied (and validated)."""
    out = from_dict(Config, _deep_update(cfg.to_dict(), parse_overrides(overrides)), where)
    validate(out, where)
    return out


def config_from_dict(data: dict, where: str = "checkpoint config") -> Config:
    """A validated :class:`Config` from a plain dict (a checkpoint's stored config)."""
    cfg = from_dict(Config, data, where)
    validate(cfg, where)
    return cfg


# ----------------------------------------------------------------------------------------------
# validation

# Integer fields and their smallest allowed value (kernel_size, autovc.bottleneck_dim and the
# stargan widths have rules of their own below).
_MIN_INT: dict[str, int] = {
    "mel.sample_rate": 1, "mel.n_fft": 1, "mel.win_length": 1, "mel.hop_length": 1, "mel.n_mels": 1,
    "mel.griffin_lim_iters": 0,
    "model.n_speakers": 0, "model.speaker_dim": 1, "model.content_dim": 1, "model.enc_channels": 1,
    "model.enc_conv_layers": 0, "model.enc_lstm_hidden": 0, "model.enc_lstm_layers": 0,
    "model.dec_pre_lstm": 0, "model.dec_channels": 1, "model.dec_conv_layers": 0,
    "model.dec_lstm_hidden": 0, "model.dec_lstm_layers": 0, "model.postnet_channels": 0,
    "model.postnet_layers": 0, "model.adversary_hidden": 0, "model.adversary_layers": 0,
    "model.phone_reader_channels": 1, "model.phone_reader_layers": 0,
    "autovc.downsample": 1,
    "vqvc.channels": 1, "vqvc.levels": 1, "vqvc.codebook_size": 2, "vqvc.code_dim": 1,
    "vae.latent_dim": 1, "vae.speaker_emb_dim": 1, "vae.channels": 1, "vae.kl_anneal_steps": 0,
    "stargan.res_channels": 1, "stargan.res_blocks": 0, "stargan.id_steps": 0,
    "vocoder.dim": 1, "vocoder.intermediate": 1, "vocoder.layers": 1, "vocoder.kernel": 1,
    "vocoder.mrd_channels": 1, "vocoder.warmup_steps": 0, "vocoder.disc_every": 1,
    "train.batch_size": 1, "train.max_steps": 1, "train.crop_frames": 8, "train.threads": 0, "train.log_every": 1,
    "train.val_every": 1, "train.val_batches": 1, "train.ckpt_every": 1, "train.keep_every": 0,
    "train.table_utterances": 1, "train.parallel_pairs": 1,
}
_MAX_INT: dict[str, int] = {"train.crop_frames": 10_000}
# Float fields that must be >= 0 (loss weights, budgets, optimiser extras) or > 0.
_NON_NEGATIVE = (
    "mel.highpass_hz", "model.voice_eq_db", "loss.alpha", "loss.beta", "loss.lambda_adv", "loss.convert_code",
    "loss.convert_cls", "loss.parallel", "loss.parallel_code", "loss.phone", "loss.delta", "loss.envelope",
    "loss.phone_out",
    "loss.phone_reader_adv",
    "autovc.lambda_code", "vqvc.commitment", "vqvc.vq_weight", "vae.kl_weight", "stargan.lambda_cyc",
    "stargan.lambda_id", "vocoder.lambda_mel", "vocoder.lambda_stft", "vocoder.lambda_adv", "vocoder.lambda_fm",
    "optim.weight_decay", "optim.grad_clip", "optim.adversary_lr_mult", "optim.lr_final", "train.max_minutes",
    "convert.gv_max", "convert.contrast", "convert.contour",
)
_POSITIVE = ("mel.amp_floor", "model.cosine_scale", "stargan.disc_lr_scale", "vocoder.max_magnitude",
             "vocoder.disc_lr_scale", "optim.lr")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    """A finite int or float (not a bool, not NaN or infinity)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def validate(cfg: Config, where: str = "config") -> None:
    """Every value range and cross-field rule of ``cfg``, in one place (the models trust it).

    Raises one ClsvcError line, ``where: key must be ... (got ...)``, with every broken rule
    (``; ``-separated when there are several).
    """
    problems: dict[str, str] = {}

    def get(key: str) -> Any:
        section, name = key.split(".")
        return getattr(getattr(cfg, section), name)

    def need(ok: bool, key: str, rule: str) -> None:
        if not ok and key not in problems:  # the first broken rule of a key is enough
            problems[key] = f"{key} {rule} (got {get(key)!r})"

    # Types the annotations promise (a config built in code never went through from_dict).
    for section in dataclasses.fields(cfg):
        hints = typing.get_type_hints(type(getattr(cfg, section.name)))
        for name, tp in hints.items():
            key, value = f"{section.name}.{name}", get(f"{section.name}.{name}")
            if typing.get_origin(tp) is Literal and value not in typing.get_args(tp):
                problems[key] = f"{key}: {value!r} is not one of {', '.join(typing.get_args(tp))}"
            elif tp is float:
                need(_is_number(value), key, "must be a finite number")
            elif tp is int:
                need(_is_int(value), key, "must be an integer")
    if problems:  # the rules below compare values, which needs the right types
        raise ClsvcError(f"{where}: {'; '.join(problems.values())}")

    for key, lo in _MIN_INT.items():
        v, hi = get(key), _MAX_INT.get(key)
        if hi is None:
            need(_is_int(v) and v >= lo, key, f"must be an integer >= {lo}")
        else:
            need(_is_int(v) and lo <= v <= hi, key, f"must be an integer in [{lo}, {hi}]")
    for key in _NON_NEGATIVE:
        need(_is_number(get(key)) and get(key) >= 0, key, "must be a finite number >= 0")
    for key in _POSITIVE:
        need(_is_number(get(key)) and get(key) > 0, key, "must be a finite number > 0")

    mel, m, o = cfg.mel, cfg.model, cfg.optim
    need(_is_int(m.kernel_size) and m.kernel_size >= 1 and m.kernel_size % 2 == 1, "model.kernel_size",
         "must be odd and >= 1 (same-length convolutions)")
    need(m.postnet_layers < 2 or m.postnet_channels >= 1, "model.postnet_channels",
         f"must be >= 1 when model.postnet_layers >= 2 (it is {m.postnet_layers})")
    need(m.adversary_layers < 1 or m.adversary_hidden >= 1, "model.adversary_hidden",
         f"must be >= 1 when model.adversary_layers >= 1 (it is {m.adversary_layers})")
    need(_is_number(m.voice_warp) and 1.0 <= m.voice_warp <= 2.0, "model.voice_warp",
         "must be in [1, 2] (the largest frequency ratio of the warp; 1 = off)")
    for key in ("noise_prob", "reverb_prob"):
        need(_is_number(getattr(m, key)) and 0.0 <= getattr(m, key) <= 1.0, f"model.{key}",
             "must be a probability in [0, 1] (0 = off)")
    need(_is_number(m.noise_snr_db) and -10.0 <= m.noise_snr_db <= 40.0, "model.noise_snr_db",
         "must be in [-10, 40] (the lowest SNR of the added noise, in dB; the highest is 40)")
    need(_is_number(m.reverb_rt60) and 0.2 <= m.reverb_rt60 <= 3.0, "model.reverb_rt60",
         "must be in [0.2, 3] (the longest reverberation time, in seconds)")
    need((m.noise_prob == 0 and m.reverb_prob == 0) or m.system == "clsvc", "model.noise_prob",
         "the room augmentation (model.noise_prob, model.reverb_prob) is ClsVC's; set both to 0 for other systems")
    need(not m.room_speaker or m.noise_prob > 0 or m.reverb_prob > 0, "model.room_speaker",
         "reads S_x through the room augmentation, which is off: set model.noise_prob or model.reverb_prob above 0")
    need(_is_number(m.pseudo_voice_prob) and 0.0 <= m.pseudo_voice_prob <= 1.0, "model.pseudo_voice_prob",
         "must be a probability in [0, 1] (0 = off)")
    need(_is_number(m.pseudo_voice_warp) and 1.0 < m.pseudo_voice_warp <= 2.0, "model.pseudo_voice_warp",
         "must be in (1, 2] (the largest frequency ratio of a pseudo-voice's warp)")
    need(m.pseudo_voice_prob == 0 or (m.system == "clsvc" and m.speaker_encoder == "own"), "model.pseudo_voice_prob",
         "pseudo-voices are ClsVC's with its own speaker encoder (a d-vector table has none for them): set it to 0")
    need(m.speaker_encoder == "own" or (m.system == "clsvc" and m.speaker_dim == 256), "model.speaker_encoder",
         "dvector works with model.system clsvc and model.speaker_dim 256 (the d-vector's size)")
    need(m.speaker_encoder == "own" or cfg.loss.convert_cls == 0, "loss.convert_cls",
         "must be 0 with model.speaker_encoder dvector (C1 cannot hear a conversion: E makes no S_x)")
    need(cfg.loss.parallel == 0 or (m.system == "clsvc" and m.speaker_encoder == "own"), "loss.parallel",
         "must be 0 unless model.system is clsvc with its own speaker encoder (the term decodes E's S_x)")
    need(cfg.loss.parallel_code == 0 or m.system == "clsvc", "loss.parallel_code",
         "must be 0 unless model.system is clsvc (the term reads ClsVC's content code)")
    need(cfg.loss.phone == 0 or m.system == "clsvc", "loss.phone",
         "must be 0 unless model.system is clsvc (the term reads ClsVC's content code)")
    need(cfg.loss.delta == 0 or m.system == "clsvc", "loss.delta",
         "must be 0 unless model.system is clsvc (the term is part of ClsVC's objective)")
    need(cfg.loss.envelope == 0 or m.system == "clsvc", "loss.envelope",
         "must be 0 unless model.system is clsvc (the term is part of ClsVC's objective)")
    need(1 <= cfg.loss.envelope_order < cfg.mel.n_mels, "loss.envelope_order",
         f"must be between 1 and mel.n_mels - 1 = {cfg.mel.n_mels - 1} (cepstra c1..cK of the mel bands)")
    need(cfg.loss.phone_out == 0 or m.system == "clsvc", "loss.phone_out",
         "must be 0 unless model.system is clsvc (the term reads ClsVC's decoded mels)")
    need(cfg.loss.phone_reader_adv == 0 or cfg.loss.phone_out > 0, "loss.phone_reader_adv",
         "must be 0 unless loss.phone_out > 0 (it trains the phone reader of that term)")
    need(m.phone_reader_input == "mel" or m.voice_warp > 1.0 or m.voice_eq_db > 0, "model.phone_reader_input",
         "perturbed needs a voice perturbation (model.voice_warp > 1 or model.voice_eq_db > 0)")
    need(isinstance(m.f0_condition, bool) and (not m.f0_condition or m.system == "clsvc"), "model.f0_condition",
         "must be true or false, and true only with model.system clsvc (the other systems have no pitch input)")
    need(mel.win_length <= mel.n_fft, "mel.win_length", f"must not exceed mel.n_fft = {mel.n_fft}")
    need(_is_number(mel.fmin) and 0 < mel.fmin < mel.fmax, "mel.fmin", f"must be > 0 and below mel.fmax = {mel.fmax!r}")
    need(_is_number(mel.fmax) and mel.fmax <= mel.sample_rate / 2, "mel.fmax",
         f"must not exceed mel.sample_rate/2 = {mel.sample_rate / 2:g}")
    need(_is_number(mel.min_level_db) and mel.min_level_db < 0, "mel.min_level_db",
         "must be a finite number < 0 (the dB floor mapped to 0)")
    need(isinstance(o.betas, (tuple, list)) and len(o.betas) == 2
         and all(_is_number(b) and 0 <= b < 1 for b in o.betas), "optim.betas", "must be two numbers in [0, 1)")
    need(o.schedule == "constant" or cfg.train.max_minutes == 0, "optim.schedule",
         "must be constant with a time budget (cosine decays over train.max_steps; set train.max_minutes=0)")
    need(o.schedule == "constant" or o.lr_final <= o.lr, "optim.lr_final", f"must not exceed optim.lr = {o.lr!r}")
    a, v = cfg.autovc, cfg.vqvc
    need(_is_int(a.bottleneck_dim) and a.bottleneck_dim >= 2 and a.bottleneck_dim % 2 == 0, "autovc.bottleneck_dim",
         "must be even and >= 2 (one half per LSTM direction)")
    need(_is_number(v.codebook_ema) and 0 <= v.codebook_ema < 1, "vqvc.codebook_ema",
         "must be in [0, 1) (0 = codebook loss instead of EMA)")
    for key in ("stargan.gen_channels", "stargan.disc_channels"):
        need(_is_int(get(key)) and get(key) >= 2 and get(key) % 2 == 0, key, "must be even and >= 2 (GLUs halve it)")
    voc = cfg.vocoder
    need(isinstance(voc.adversarial, bool), "vocoder.adversarial", "must be true or false")
    need(all(_is_int(p) and p >= 1 for p in voc.mpd_periods), "vocoder.mpd_periods", "must be integers >= 1")
    need(len(voc.mpd_channels) >= 1 and all(_is_int(c) and c >= 1 for c in voc.mpd_channels),
         "vocoder.mpd_channels", "must be one or more integers >= 1")
    for key in ("vocoder.mrd_resolutions", "vocoder.stft_resolutions"):
        need(all(len(r) == 3 and all(_is_int(x) and x >= 1 for x in r) and r[2] <= r[0] for r in get(key)), key,
             "must be [n_fft, hop, win] triples of integers >= 1 with win <= n_fft")
    need(voc.kernel % 2 == 1, "vocoder.kernel", "must be odd (same-length convolutions)")
    if m.system == "autovc":
        need(m.enc_lstm_layers >= 1, "model.enc_lstm_layers", "must be >= 1 for autovc (the BiLSTM is its bottleneck)")
    if m.system == "stargan":
        need(mel.n_mels % 4 == 0, "mel.n_mels", "must be a multiple of 4 for stargan (G halves the mel axis twice)")

    if problems:
        raise ClsvcError(f"{where}: {'; '.join(problems.values())}")


# ----------------------------------------------------------------------------------------------
# command-line flags from a flat settings dataclass


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _cli_fields(cls: type, skip: Collection[str]) -> list[dataclasses.Field]:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"{cls!r} is not a dataclass")
    return [f for f in dataclasses.fields(cls) if f.init and f.name not in skip]


def add_dataclass_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type,
                            skip: Collection[str] = ()) -> None:
    """Add one ``--kebab-name`` flag per field of the flat dataclass ``cls`` (dest = field name).

    The type comes from the annotation (``Literal[...]`` gives ``choices``, ``X | None`` reads as
    X, a ``tuple``/``list`` takes several values), the default from the field, the help from
    ``field(metadata={"help": ...})``. A bool that defaults to True becomes ``--no-name``, one
    that defaults to False ``--name``. Fields named in ``skip`` get no flag. Read the values back
    with :func:`dataclass_from_namespace`.
    """
    hints = typing.get_type_hints(cls)
    for f in _cli_fields(cls, skip):
        tp, default = hints[f.name], _field_default(f)
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help")}
        if tp is bool:
            if default is True:
                parser.add_argument("--no-" + f.name.replace("_", "-"), action="store_false", default=True, **kw)
            else:
                parser.add_argument(_flag(f.name), action="store_true", default=False, **kw)
            continue
        if default is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(members) == 1:
            tp = members[0]  # X | None
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is Literal:
            kw["choices"] = list(args)
            kinds = {type(a) for a in args}
            kw["type"] = kinds.pop() if len(kinds) == 1 else str
        elif origin in (tuple, list):
            item = args[0] if args else str
            kw["nargs"] = "+" if origin is list or (len(args) == 2 and args[1] is Ellipsis) else len(args)
            kw["type"] = item
        elif isinstance(tp, type) and origin is None:
            kw["type"] = tp
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line flag for type {tp}")
        if kw["type"] is bool:  # bool("false") is True: parse the words instead
            kw["type"] = _to_bool
        parser.add_argument(_flag(f.name), **kw)


def dataclass_from_namespace(cls: type[T], ns: argparse.Namespace, skip: Collection[str] = (),
                             where: str = "command line") -> T:
    """The ``cls`` that :func:`add_dataclass_arguments` flags describe, read back from ``ns``
    (built with :func:`from_dict`, so types and choices are checked; skipped fields keep their
    defaults)."""
    data = {f.name: getattr(ns, f.name) for f in _cli_fields(cls, skip) if hasattr(ns, f.name)}
    return from_dict(cls, data, where)
