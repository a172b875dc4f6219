"""Disentanglement probes: train a fresh classifier on frozen codes and report its accuracy.

A low adversary accuracy during training does not prove that C_x is speaker-free (the encoder
may simply have learnt to fool that one adversary); a classifier trained afresh on the frozen
codes of training utterances and tested on held-out utterances does measure what is left.
When the features carry phone labels (``clsvc preprocess --phones``) the same frames are also
probed for their phone: how much of what is said C_x keeps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..data.align import PHONES
from ..data.manifest import Entry, feature_path, features_n_mels, load_feature, load_phones, phones_path
from ..models import VCSystem

NO_CONTENT = "the system has no frame-level content code to probe"


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


def extract_codes(model: VCSystem, feats_dir: str | Path, entries: list[Entry], max_frames_per_utt: int = 64,
                  seed: int = 0, with_phones: bool = False) -> dict[str, Any]:
    """Frozen codes (:meth:`~clsvc.models.VCSystem.codes`) of manifest entries.

    Returns a dict: ``frames`` (sum of frames, content_dim) — up to ``max_frames_per_utt``
    randomly chosen content frames per utterance —, ``frame_labels``, ``pooled`` (utterances,
    content_dim) — time-averaged content —, ``speaker`` (utterances, speaker_dim) — the unit
    speaker codes —, ``labels`` (utterances,) and ``names`` (label -> speaker). ``frames`` and
    ``pooled`` are None for a system without a content code, ``speaker`` for one without a
    speaker encoder of its own. With ``with_phones`` also ``frame_phones``: the phone label of
    each of ``frames`` (-1 = unknown; the features must have been made with ``--phones``), and
    ``mel_frames`` (sum of frames, n_mels): the input mel frames those codes were read at.
    """
    feats_dir = Path(feats_dir)
    names = sorted({e.speaker for e in entries})
    rng = np.random.default_rng(seed)
    frames, pooled, spk, lab_f, lab_u, phones, mels = [], [], [], [], [], [], []
    device = next(model.parameters()).device
    n_mels = features_n_mels(feats_dir)
    for e in entries:
        mel = torch.from_numpy(load_feature(feats_dir, e, n_mels)).unsqueeze(0).to(device)
        codes = model.codes(mel)
        if codes.content is not None:
            c = codes.content[0].float().cpu().numpy()
            idx = rng.choice(len(c), size=min(max_frames_per_utt, len(c)), replace=False)
            frames.append(c[idx])
            lab_f.append(np.full(len(idx), names.index(e.speaker)))
            if with_phones:
                phones.append(load_phones(feats_dir, e, len(PHONES))[idx])
                mels.append(mel[0, idx].float().cpu().numpy())
            pooled.append(c.mean(0))
        if codes.speaker is not None:
            spk.append(codes.speaker[0].float().cpu().numpy())
        lab_u.append(names.index(e.speaker))
    return {"frames": np.concatenate(frames) if frames else None,
            "frame_labels": np.concatenate(lab_f) if lab_f else None,
            "pooled": np.stack(pooled) if pooled else None, "speaker": np.stack(spk) if spk else None,
            "labels": np.array(lab_u), "names": names,
            "frame_phones": np.concatenate(phones) if phones else None,
            "mel_frames": np.concatenate(mels) if mels else None}


def has_phones(feats_dir: str | Path, entries: list[Entry]) -> bool:
    """True when every entry has its phone labels (``clsvc preprocess --phones``)."""
    return bool(entries) and all(phones_path(feature_path(feats_dir, e)).is_file() for e in entries)


def probe_codes(model: VCSystem, feats_dir: str | Path, train_entries: list[Entry], test_entries: list[Entry],
                seed: int = 0) -> dict[str, Any]:
    """Speaker accuracy of fresh probes on C_x frames, pooled C_x and S_x.

    Probes are trained on the codes of ``train_entries`` and tested on ``test_entries`` (other
    utterances of the same speakers). Returns ``chance`` (1 / speakers), ``content_frame``,
    ``content_pooled``, ``speaker`` (NaN without a speaker encoder of the system's own) and the
    counts used; ``{"skipped": why}`` for a system without a content code.

    When both sets have phone labels (``clsvc preprocess --phones``) and some of their frames a
    known phone, also ``phone_frame``: the phone accuracy of a fresh probe on the same single C_x
    frames (known phones only), with ``phone_majority`` (the test frames' most frequent phone's
    share, what a probe that learnt nothing scores), ``phone_frames`` (train, test) counts and
    ``phone_mel_frame``: the same probe on the input mel frames at the same times (one frame, no
    context, the voice still in it): what a frame of the features says of its phone, against which
    to read ``phone_frame`` (a C_x frame also sees its neighbours through E's recurrent layer).
    """
    with_phones = has_phones(feats_dir, train_entries) and has_phones(feats_dir, test_entries)
    tr = extract_codes(model, feats_dir, train_entries, seed=seed, with_phones=with_phones)
    te = extract_codes(model, feats_dir, test_entries, seed=seed + 1, with_phones=with_phones)
    if tr["frames"] is None or te["frames"] is None:
        return {"skipped": NO_CONTENT}
    if tr["names"] != te["names"]:
        keep = set(tr["names"]) & set(te["names"])
        raise ValueError(f"probe train/test speakers differ ({len(tr['names'])} vs {len(te['names'])}, "
                         f"{len(keep)} shared); give held-out utterances of the same speakers")
    out: dict[str, Any] = {
        "chance": 1 / len(tr["names"]),
        "speakers": len(tr["names"]),
        "train_utterances": len(train_entries),
        "test_utterances": len(test_entries),
        "content_frame": probe_accuracy(tr["frames"], tr["frame_labels"], te["frames"], te["frame_labels"],
                                        seed=seed),
        "content_pooled": probe_accuracy(tr["pooled"], tr["labels"], te["pooled"], te["labels"],
                                         epochs=200, batch_size=64, seed=seed),
        "speaker": (probe_accuracy(tr["speaker"], tr["labels"], te["speaker"], te["labels"],
                                   epochs=200, batch_size=64, seed=seed)
                    if tr["speaker"] is not None and te["speaker"] is not None else float("nan")),
    }
    if with_phones:
        ktr, kte = tr["frame_phones"] >= 0, te["frame_phones"] >= 0
        if ktr.any() and kte.any():
            test_phones = te["frame_phones"][kte]
            out.update(
                phone_frame=probe_accuracy(tr["frames"][ktr], tr["frame_phones"][ktr], te["frames"][kte], test_phones,
                                           seed=seed),
                phone_majority=float(np.bincount(test_phones).max() / len(test_phones)),
                phone_mel_frame=probe_accuracy(tr["mel_frames"][ktr], tr["frame_phones"][ktr], te["mel_frames"][kte],
                                               test_phones, seed=seed),
                phone_frames=[int(ktr.sum()), int(kte.sum())])
    return out
