"""Building blocks shared by the models: gradient reversal, conv blocks, masked pooling."""

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


class GradientReversal(nn.Module):
    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return grad_reverse(x, self.scale)


def make_norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm1d(channels)
    if kind == "group":
        # 8 groups (or fewer for narrow layers): independent of batch size and of padding.
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


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) float mask, 1 on valid frames."""
    return (torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]).float()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of (B, T, D) with a (B, T) mask -> (B, D)."""
    w = mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


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
