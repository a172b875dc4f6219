"""The parallel terms (``loss.parallel``: the conversion; ``loss.parallel_code``: the content code):
same-transcript pairs of training speakers, DTW-aligned targets, and the terms in training and
validation."""

import shutil

import numpy as np
import pytest
import torch

from clsvc.cli import main
from clsvc.data.dataset import FeatureSet, align_frames
from clsvc.data.manifest import read_manifest, write_manifest
from clsvc.errors import ClsvcError
from clsvc.training import read_log

from helpers import TINY


@pytest.fixture(scope="module")
def parallel_features(features, tmp_path_factory):
    """The tiny features with transcripts by utterance number: every speaker's ``*_00N`` says
    sentence N, as ARCTIC's voices read the same prompts."""
    out = tmp_path_factory.mktemp("parallel") / "feats"
    shutil.copytree(features, out)
    entries = read_manifest(out)
    for e in entries:
        e.transcript = f"Sentence number {int(e.utt_id.rsplit('_', 1)[1])}."
    write_manifest(out, entries)
    return out


def test_dtw_alignment_undoes_a_time_stretch():
    """Each source frame is matched to the target frame that holds the same spectrum, when the
    target says the same thing at another pace."""
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 1, (40, 80)).astype(np.float32)
    # The target holds frames 0..9 twice each, then 10..39 once: a slower start.
    where = np.concatenate([np.repeat(np.arange(10), 2), np.arange(10, 40)])
    tgt = src[where]
    idx = align_frames(src, tgt)
    assert idx.shape == (40,)
    assert np.array_equal(tgt[idx], src)


def test_pairs_join_only_different_speakers_with_the_same_transcript(parallel_features, features):
    data = FeatureSet(parallel_features, ("train",))
    assert data.pairs
    for i, j in data.pairs:
        a, b = data.entries[i], data.entries[j]
        assert a.speaker != b.speaker and a.transcript == b.transcript
    # 3 speakers x 5 training sentences: each sentence gives 3 x 2 ordered pairs.
    assert len(data.pairs) == 5 * 6
    assert FeatureSet(features, ("train",)).pairs == []  # no transcripts, no pairs

    batch = data.sample_parallel(6, 32, torch.Generator().manual_seed(0))
    assert batch.mel.shape == batch.target.shape == (6, 32, 80)
    assert bool((batch.speaker != batch.target_speaker).all())
    # Every aligned row holds real frames of the target utterance, in time order.
    for k in range(6):
        tgt_spk = data.speakers[int(batch.target_speaker[k])]
        frames = batch.target[k, : int(batch.lengths[k])].numpy()
        utts = [data.mels[j] for j in range(len(data)) if data.entries[j].speaker == tgt_spk]
        assert any(all((u == f).all(1).any() for f in frames) for u in utts)


def test_parallel_term_trains_and_is_validated(parallel_features, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "cpu", "--data", str(parallel_features), "--out", str(run), "--quiet",
                 *TINY, "train.max_steps=4", "loss.parallel=1.0", "train.parallel_pairs=3"]) == 0
    rows, vals = read_log(run, "train"), read_log(run, "val")
    assert rows and all(r["parallel"] > 0 for r in rows)
    assert vals and vals[-1]["parallel"] > 0
    # The total is the paper's objective plus the term at its weight (here 1).
    for r in rows:
        paper = r["recon"] + 0.1 * r["code"] + 0.1 * r["cls"] + 0.5 * r["adv"]
        assert r["total"] == pytest.approx(paper + r["parallel"], rel=1e-4)


def test_parallel_term_needs_parallel_features_and_a_clsvc(features, tmp_path, capsys):
    out = tmp_path / "refused"
    assert main(["train", "--config", "cpu", "--data", str(features), "--out", str(out), "--quiet",
                 *TINY, "loss.parallel=1.0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loss.parallel and loss.parallel_code need parallel utterances" in err, err
    assert not out.exists()
    from helpers import tiny_config

    with pytest.raises(ClsvcError, match="loss.parallel must be 0 unless model.system is clsvc"):
        tiny_config("model.system=autovc", "loss.parallel=1.0")


def test_parallel_code_term_trains_and_is_validated(parallel_features, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--config", "cpu", "--data", str(parallel_features), "--out", str(run), "--quiet",
                 *TINY, "train.max_steps=4", "loss.parallel_code=1.0", "train.parallel_pairs=3"]) == 0
    rows, vals = read_log(run, "train"), read_log(run, "val")
    assert rows and all(r["parallel_code"] > 0 and "parallel" not in r for r in rows)
    assert vals and vals[-1]["parallel_code"] > 0
    for r in rows:
        paper = r["recon"] + 0.1 * r["code"] + 0.1 * r["cls"] + 0.5 * r["adv"]
        assert r["total"] == pytest.approx(paper + r["parallel_code"], rel=1e-4)


def test_parallel_code_term_compares_the_codes_and_moves_only_the_encoder():
    from clsvc.models import build_system

    from helpers import tiny_config

    torch.manual_seed(0)
    model = build_system(tiny_config("model.content_norm=instance", "loss.parallel_code=1.0", "model.n_speakers=3"))
    mel = torch.rand(2, 24, 80)
    lengths = torch.tensor([24, 17])
    assert float(model.parallel_code_loss(mel, lengths, mel.clone()).detach()) == pytest.approx(0.0, abs=1e-10)
    term = model.parallel_code_loss(mel, lengths, torch.rand(2, 24, 80))
    assert float(term.detach()) > 0
    term.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder.parameters())
    assert all(p.grad is None for p in model.decoder.parameters())


def test_validation_batches_are_the_same_with_or_without_pairs(parallel_features):
    data = FeatureSet(parallel_features, ("val",))
    plain = data.fixed_batches(2, 4, 32)
    paired = data.fixed_batches(2, 4, 32, parallel_pairs=3)
    assert all(b.parallel is None for b in plain) and all(b.parallel is not None for b in paired)
    assert all(torch.equal(a.mel, b.mel) and torch.equal(a.speaker, b.speaker) for a, b in zip(plain, paired))
