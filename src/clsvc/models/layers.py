"""Building blocks shared by the models: gradient reversal, conv blocks, LSTMs, the postnet and
masked (padding-aware) means."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return -ctx.scale * grad, None


def grad_reverse(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """Identity in the forward pass; multiplies the gradient by ``-scale`` in the backward pass
    (Ganin & Lempitsky 2015). Put between an encoder and a classifier so that the classifier
    minimises its loss while the encoder maximises it."""
    return _GradReverse.apply(x, scale)


def make_norm(kind: str, channels: int) -> nn.Module:
    """``batch`` (AutoVC), ``group`` (batch-size independent) or ``none`` over (B, C, T)."""
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":
        # 8 groups (or fewer for narrow layers): independent of batch size (its statistics over
        # time do include padded frames).
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


class ConvBlock(nn.Module):
    """Conv1d ('same' padding) + norm + activation on (B, C, T) tensors."""

    def __init__(self, cin: int, cout: int, kernel: int, norm: str, act: str = "relu"):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, kernel, padding=kernel // 2)
        self.norm = make_norm(norm, cout)
        self.act = {"relu": nn.ReLU(), "tanh": nn.Tanh(), "none": nn.Identity()}[act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


def conv_stack(din: int, channels: int, layers: int, kernel: int, norm: str) -> tuple[nn.Sequential, int]:
    """``layers`` conv blocks (ReLU) on (B, C, T) from ``din`` to ``channels``; returns (stack, out
    width), the width being ``din`` when ``layers`` is 0."""
    convs = []
    for _ in range(layers):
        convs.append(ConvBlock(din, channels, kernel, norm))
        din = channels
    return nn.Sequential(*convs), din


def lstm(din: int, hidden: int, layers: int, bidirectional: bool) -> nn.LSTM | None:
    """A batch-first LSTM, or None when ``hidden`` or ``layers`` is 0 (the layer is left out)."""
    if hidden <= 0 or layers <= 0:
        return None
    return nn.LSTM(din, hidden, num_layers=layers, batch_first=True, bidirectional=bidirectional)


class Postnet(nn.Sequential):
    """AutoVC's residual postnet on a mel (B, T, n_mels): ``layers`` convs (``channels`` wide,
    tanh; the last back to n_mels, linear) whose output is added to the input. 0 layers: the
    identity."""

    def __init__(self, n_mels: int, channels: int, layers: int, kernel: int, norm: str):
        convs = []
        c = n_mels
        for i in range(layers):
            last = i == layers - 1
            convs.append(ConvBlock(c, n_mels if last else channels, kernel, norm, "none" if last else "tanh"))
            c = channels
        super().__init__(*convs)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if len(self) == 0:
            return mel
        h = mel.transpose(1, 2)
        for conv in self:
            h = conv(h)
        return mel + h.transpose(1, 2)


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) float mask, 1 on valid frames."""
    return (torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]).float()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, D) with a (B, T) mask -> (B, D); a (B, T) input -> the scalar mean
    over all valid frames (what the frame losses average)."""
    w = mask.to(x.dtype)
    if x.dim() == 2:
        return (x * w).sum() / w.sum().clamp_min(1.0)
    w = w.unsqueeze(-1)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


def masked_frame_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the valid frames (mask (B, T)) of (B, T, D) tensors: the mean
    over D per frame, then over valid frames."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return masked_mean(((a - b) ** 2).mean(-1), mask)


def masked_instance_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-utterance, per-channel normalisation over valid frames of (B, T, D)."""
    mean = masked_mean(x, mask).unsqueeze(1)
    var = masked_mean((x - mean) ** 2, mask).unsqueeze(1)
    return (x - mean) / torch.sqrt(var + eps)


def mlp(din: int, hidden: int, dout: int, layers: int) -> nn.Sequential:
    """``layers`` hidden ReLU layers then a linear output (layers=0: a linear map)."""
    mods: list[nn.Module] = []
    d = din
    for _ in range(layers):
        mods += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    mods.append(nn.Linear(d, dout))
    return nn.Sequential(*mods)


class CosineClassifier(nn.Module):
    """Scaled cosine logits ``scale * <x/|x|, w_k/|w_k|>`` (normalised-softmax classifier)."""

    def __init__(self, din: int, n_classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, din) * din ** -0.5)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(x, dim=-1) @ F.normalize(self.weight, dim=-1).t()
