"""The ClsVC objective (paper Eq. 8) and the optional remedies, as one function.

``total = recon + alpha * code + beta * cls + lambda * adv + convert_code * conv_code
+ convert_cls * conv_cls + delta * (recon of the frame-to-frame changes)
+ envelope * (recon of the low-quefrency cepstra)``. Each term is also
returned on its own, with both classifiers' accuracies, for logging. :func:`parallel_term` is the
supervised conversion term of parallel pairs (``loss.parallel``), added by the model when a batch
carries them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..audio import cepstral_basis
from ..config import LossConfig
from .layers import masked_mean


@dataclass
class ClsVCOutput:
    """Everything the losses need from one training forward pass of :class:`~.clsvc.ClsVC`."""

    mask: torch.Tensor  # (B, T)
    speaker: torch.Tensor | None  # S_x (B, s), raw; None when S_x is a d-vector (not E's output)
    content: torch.Tensor  # C_x (B, T, c)
    mel_out: torch.Tensor  # decoder output before the postnet (B, T, M)
    mel_post: torch.Tensor  # final reconstruction x' (B, T, M)
    speaker_re: torch.Tensor | None  # S of E(x') (B, s); None with d-vectors
    content_re: torch.Tensor  # C of E(x') (B, T, c)
    spk_logits: torch.Tensor  # C1(S_x / |S_x|) (B, K)
    adv_logits: torch.Tensor  # C2 logits that train C2: (B, T, K) per frame or (B, K) pooled
    enc_adv_logits: torch.Tensor  # C2 logits whose loss trains the encoder (grl: same tensor)
    perm: torch.Tensor | None = None  # conversion partner of each row
    conv_mel: torch.Tensor | None = None  # D(C_a, S_b) after the postnet (B, T, M)
    conv_speaker: torch.Tensor | None = None  # S of E(D(C_a, S_b)) (B, s)
    conv_content: torch.Tensor | None = None  # C of E(D(C_a, S_b)) (B, T, c)
    conv_spk_logits: torch.Tensor | None = None  # C1 on the re-encoded conversion (B, K)


def _distance(a: torch.Tensor, b: torch.Tensor, kind: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean L1 or squared distance of equal-shaped tensors; with a (B, T) mask, over valid frames."""
    assert a.shape == b.shape, (a.shape, b.shape)
    d = (a - b).abs() if kind == "l1" else (a - b) ** 2
    if mask is None:
        return d.mean()
    return masked_mean(d.mean(-1), mask)


def _delta_distance(a: torch.Tensor, b: torch.Tensor, kind: str, mask: torch.Tensor) -> torch.Tensor:
    """``_distance`` between the frame-to-frame changes a[:, t] - a[:, t-1] of (B, T, M) tensors
    and those of b, over the steps whose two frames are both valid in the (B, T) mask."""
    pair = mask[:, 1:] * mask[:, :-1]
    return _distance(a[:, 1:] - a[:, :-1], b[:, 1:] - b[:, :-1], kind, pair)


@functools.lru_cache(maxsize=8)
def envelope_basis(n_mels: int, order: int, device: torch.device | None = None) -> torch.Tensor:
    """(n_mels, order) float32 :func:`clsvc.audio.cepstral_basis` on ``device``: ``mel @ basis``
    gives the cepstra c1..c_order of each frame of a (..., n_mels) log-mel, as a differentiable map.
    Cached per device (one copy to a GPU, not one per step); callers must not modify it."""
    return torch.tensor(cepstral_basis(n_mels, order), dtype=torch.float32, device=device)


def _envelope_distance(a: torch.Tensor, b: torch.Tensor, kind: str, mask: torch.Tensor,
                       basis: torch.Tensor) -> torch.Tensor:
    """``_distance`` between the cepstra (``basis``: :func:`envelope_basis`) of (B, T, M) tensors,
    over the valid frames of the (B, T) mask."""
    return _distance(a @ basis, b @ basis, kind, mask)


#: A speaker label that names no class: the row teaches a speaker classifier nothing.
IGNORE_LABEL = -100


def frame_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CE and accuracy (float32) for (B, K) or per-frame (B, T, K) logits against (B,) labels,
    per-frame over the valid frames of ``mask`` (B, T). For (B, K) logits, rows labelled
    :data:`IGNORE_LABEL` are left out (both 0 when no row is labelled)."""
    logits = logits.float()
    if logits.dim() == 2:
        keep = target != IGNORE_LABEL
        if not bool(keep.all()):
            if not bool(keep.any()):
                zero = logits.sum() * 0.0  # keeps the graph
                return zero, zero.detach()
            logits, target = logits[keep], target[keep]
        ce = F.cross_entropy(logits, target)
        acc = (logits.argmax(-1) == target).float().mean()
        return ce, acc
    b, t, k = logits.shape
    tgt = target[:, None].expand(b, t)
    ce = F.cross_entropy(logits.reshape(b * t, k), tgt.reshape(-1), reduction="none").view(b, t)
    hit = (logits.argmax(-1) == tgt).float()
    return masked_mean(ce, mask), masked_mean(hit, mask)


def uniform_ce(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cross-entropy (float32) of (B, K) or per-frame (B, T, K) logits to the uniform distribution,
    least (= log K) when the classifier is clueless; bounded below, unlike a reversed
    cross-entropy, which a network can grow without end."""
    per = -F.log_softmax(logits.float(), dim=-1).mean(-1)
    if per.dim() == 1:
        return per.mean()
    return masked_mean(per, mask)


def clsvc_losses(out: ClsVCOutput, mel: torch.Tensor, speaker: torch.Tensor, cfg: LossConfig,
                 cls_speaker: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, named terms) for a batch: ``mel`` (B, T, M) targets, ``speaker`` (B,) labels
    (C2's). ``cls_speaker`` (B,): C1's labels where they differ (:data:`IGNORE_LABEL` = a row C1
    does not learn from, e.g. a pseudo-voice); None = ``speaker``."""
    if cls_speaker is None:
        cls_speaker = speaker
    out_mel = out.mel_out.float()
    post = out.mel_post.float()
    mask = out.mask
    # L_recon on both decoder outputs (AutoVC also supervises the pre-postnet mel); L2 in the paper.
    recon = (_distance(post, mel, cfg.recon_distance, mask)
             + _distance(out_mel, mel, cfg.recon_distance, mask))
    # L_code = ||E(x') - Z||^2 over both parts of Z (only C_x when S_x is a fixed d-vector).
    code = _distance(out.content_re.float(), out.content.float(), cfg.code_distance, mask)
    if out.speaker is not None and out.speaker_re is not None:
        code = code + _distance(out.speaker_re.float(), out.speaker.float(), cfg.code_distance)
    cls, cls_acc = frame_ce(out.spk_logits.float(), cls_speaker, mask)
    adv_ce, adv_acc = frame_ce(out.adv_logits.float(), speaker, mask)
    if cfg.adversarial == "grl":
        # The GRL inside the forward pass turns this minimisation into E maximising the CE.
        adv = adv_ce
    else:
        adv_uniform = uniform_ce(out.enc_adv_logits.float(), mask)
        adv = adv_ce + adv_uniform
    total = recon + cfg.alpha * code + cfg.beta * cls + cfg.lambda_adv * adv
    terms = {"recon": recon, "code": code, "cls": cls, "adv": adv_ce,
             "cls_acc": cls_acc, "adv_acc": adv_acc}
    if cfg.delta > 0:
        delta = (_delta_distance(post, mel, cfg.recon_distance, mask)
                 + _delta_distance(out_mel, mel, cfg.recon_distance, mask))
        total = total + cfg.delta * delta
        terms["delta"] = delta
    if cfg.envelope > 0:
        basis = envelope_basis(mel.shape[-1], cfg.envelope_order, mel.device)  # once for both outputs
        envelope = (_envelope_distance(post, mel, cfg.recon_distance, mask, basis)
                    + _envelope_distance(out_mel, mel, cfg.recon_distance, mask, basis))
        total = total + cfg.envelope * envelope
        terms["envelope"] = envelope
    if cfg.adversarial == "entropy":
        terms["adv_uniform"] = adv_uniform
    if out.perm is not None and out.conv_content is not None:  # the conversion losses are on
        conv_code = _distance(out.conv_content.float(), out.content.detach().float(), cfg.code_distance, mask)
        if out.speaker is not None and out.conv_speaker is not None:
            target_spk = F.normalize(out.speaker, dim=-1)[out.perm].detach()
            conv_code = conv_code + _distance(F.normalize(out.conv_speaker.float(), dim=-1), target_spk.float(), "l2")
        total = total + cfg.convert_code * conv_code
        terms["conv_code"] = conv_code
        if cfg.convert_cls > 0:
            assert out.conv_spk_logits is not None
            # The speaker classifier must hear speaker b in the re-encoded conversion a -> b.
            conv_cls, conv_acc = frame_ce(out.conv_spk_logits.float(), cls_speaker[out.perm], mask)
            total = total + cfg.convert_cls * conv_cls
            terms["conv_cls"] = conv_cls
            terms["conv_cls_acc"] = conv_acc
    terms["total"] = total
    return total, terms



def parallel_term(mel_out: torch.Tensor, mel_post: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                  distance: str) -> torch.Tensor:
    """A conversion's two decoder outputs (P, T, M) against the real target's aligned mel
    (P, T, M), over the valid frames of ``mask`` (P, T): the parallel term (``loss.parallel``)."""
    target = target.float()
    return (_distance(mel_post.float(), target, distance, mask)
            + _distance(mel_out.float(), target, distance, mask))


def phone_term(logits: torch.Tensor, phones: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, accuracy) of per-frame phone logits (B, T, P) against labels (B, T)
    (-1 = unknown), over the valid frames of ``mask`` (B, T) whose label is known; both 0 when
    no frame of the batch has one (a batch of untranscribed speech teaches nothing about phones)."""
    known = (mask > 0) & (phones >= 0)
    if not bool(known.any()):
        zero = logits.sum() * 0.0  # keeps the graph (and DDP's view of the head's parameters)
        return zero, zero.detach()
    picked = logits.float()[known]
    target = phones[known]
    return F.cross_entropy(picked, target), (picked.argmax(-1) == target).float().mean()
