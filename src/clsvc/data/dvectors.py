"""Pretrained speaker vectors (Resemblyzer GE2E d-vectors, 256-d) for systems that condition
on them (AutoVC). Computed once from the manifest's source audio and cached next to the
features in ``dvectors.npz`` (keyed by speaker/utterance id), so re-runs and resumes are free.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from ..config import MelConfig
from ..errors import ClsvcError

CACHE = "dvectors.npz"


def utterance_dvectors(folder: str | Path, entries, mel_cfg: MelConfig, progress: bool = False) -> dict[str, np.ndarray]:
    """``{"speaker/utt_id": unit d-vector (256,)}`` for ``entries``, from and into the cache."""
    from tqdm import tqdm

    from ..audio import load_wav
    from ..evaluation.similarity import embed_wav

    folder = Path(folder)
    path = folder / CACHE
    cache: dict[str, np.ndarray] = {}
    if path.is_file():
        with np.load(path) as z:
            cache = {k: z[k] for k in z.files}
    missing = [e for e in entries if f"{e.speaker}/{e.utt_id}" not in cache]
    for e in tqdm(missing, desc="d-vectors", unit="utt", disable=not progress or not missing):
        if not Path(e.source).is_file():
            raise ClsvcError(f"{e.source}: audio of {e.speaker}/{e.utt_id} not found; d-vectors are made "
                             "from the original audio named in the manifest: restore the corpus")
        cache[f"{e.speaker}/{e.utt_id}"] = embed_wav(load_wav(e.source, mel_cfg), mel_cfg.sample_rate)
    if missing:
        tmp = folder / f".{CACHE}.tmp.npz"
        np.savez(tmp, **cache)
        os.replace(tmp, path)
    return {f"{e.speaker}/{e.utt_id}": cache[f"{e.speaker}/{e.utt_id}"] for e in entries}


def speaker_dvectors(folder: str | Path, train_set, mel_cfg: MelConfig, per_speaker: int = 20,
                     progress: bool = True) -> torch.Tensor:
    """(K, 256) unit mean d-vector of up to ``per_speaker`` training utterances per speaker
    (AutoVC trains on the speaker's average embedding)."""
    chosen = [train_set.entries[i] for idx in train_set.by_speaker for i in idx[:per_speaker]]
    vecs = utterance_dvectors(folder, chosen, mel_cfg, progress)
    rows = []
    for spk in train_set.speakers:
        m = np.mean([v for k, v in vecs.items() if k.split("/", 1)[0] == spk], axis=0)
        rows.append(m / max(float(np.linalg.norm(m)), 1e-8))
    return torch.from_numpy(np.stack(rows).astype(np.float32))
