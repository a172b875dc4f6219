"""Disentanglement probes: train a fresh classifier on frozen codes and report its accuracy.

A low adversary accuracy during training does not prove that C_x is speaker-free (the encoder
may simply have learnt to fool that one adversary); a classifier trained afresh on the frozen
codes of training utterances and tested on held-out utterances does measure what is left.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn


def probe_accuracy(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                   hidden: int = 256, epochs: int = 30, lr: float = 1e-3, seed: int = 0,
                   batch_size: int = 512) -> float:
    """Train an MLP (one hidden layer; ``hidden=0``: linear) on (N, D) features with integer
    labels; return its accuracy on the test set. Features are standardised with train stats."""
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.get_rng_state()
    torch.manual_seed(seed)
    xt = torch.as_tensor(x_train, dtype=torch.float32)
    mu, sd = xt.mean(0, keepdim=True), xt.std(0, keepdim=True).clamp_min(1e-6)
    xt = (xt - mu) / sd
    xs = (torch.as_tensor(x_test, dtype=torch.float32) - mu) / sd
    yt = torch.as_tensor(y_train, dtype=torch.long)
    ys = torch.as_tensor(y_test, dtype=torch.long)
    k = int(max(yt.max(), ys.max())) + 1
    d = xt.shape[1]
    net = (nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, k)) if hidden
           else nn.Linear(d, k))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = (net(xs).argmax(-1) == ys).float().mean().item()
    torch.set_rng_state(torch_state)
    return acc
