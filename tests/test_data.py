
import numpy as np
import pytest
import soundfile as sf
import torch

from clsvc.config import MelConfig
from clsvc.data import FeatureSet, SplitSpec, preprocess, read_corpus, read_manifest
from clsvc.errors import ClsvcError

from helpers import SR, synth_utterance, write_corpus


def _wav(path, seed=0, seconds=0.8):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synth_utterance(150, 1.0, seed, seconds), SR)


def test_vctk_080_layout(tmp_path):
    _wav(tmp_path / "wav48/p225/p225_001.wav")
    _wav(tmp_path / "wav48/p226/p226_001.wav")
    (tmp_path / "txt/p225").mkdir(parents=True)
    (tmp_path / "txt/p225/p225_001.txt").write_text("Please call Stella.\n")
    (tmp_path / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION\n225  23  F  English  Southern\n226  22  M  English  Surrey\n")
    utts = read_corpus(tmp_path)
    assert [(u.speaker, u.utt_id, u.gender) for u in utts] == [("p225", "p225_001", "F"), ("p226", "p226_001", "M")]
    assert utts[0].transcript == "Please call Stella."


def test_vctk_092_layout(tmp_path):
    _wav(tmp_path / "wav48_silence_trimmed/p225/p225_001_mic1.flac")
    _wav(tmp_path / "wav48_silence_trimmed/p225/p225_001_mic2.flac")  # mic2 is ignored
    (tmp_path / "speaker-info.txt").write_text("ID  AGE  GENDER  ACCENTS  REGION COMMENTS\np225  23  F  English  Southern\n")
    utts = read_corpus(tmp_path, "vctk")
    assert [(u.speaker, u.utt_id, u.gender) for u in utts] == [("p225", "p225_001", "F")]


def test_librispeech_nested_and_flat(tmp_path):
    _wav(tmp_path / "19/198/19-198-0001.flac")
    (tmp_path / "19/198/19-198.trans.txt").write_text("19-198-0001 NORTHANGER ABBEY\n")
    _wav(tmp_path / "103/103-1240-0000.flac")
    (tmp_path / "SPEAKERS.TXT").write_text(";ID |SEX| SUBSET |MINUTES| NAME\n19 | F | train-clean-100 | 25 | K\n103 | F | x | 1 | Y\n")
    utts = {u.utt_id: u for u in read_corpus(tmp_path)}
    assert utts["19-198-0001"].transcript == "NORTHANGER ABBEY" and utts["19-198-0001"].gender == "F"
    assert utts["103-1240-0000"].speaker == "103"


def test_folders_with_parallel_sentences(tmp_path):
    _wav(tmp_path / "v00/v00_002.flac")
    _wav(tmp_path / "v01/v01_001.wav")
    (tmp_path / "v01/v01_001.txt").write_text("side car text")
    (tmp_path / "sentences.txt").write_text("first line\nsecond line\n")
    (tmp_path / "voices.tsv").write_text("speaker\tengine\tgender\nv00\tx\tF\n")
    utts = {u.utt_id: u for u in read_corpus(tmp_path)}
    assert utts["v00_002"].transcript == "second line" and utts["v00_002"].gender == "F"
    assert utts["v01_001"].transcript == "side car text" and utts["v01_001"].gender == ""


def test_folders_with_arctic_prompts_and_speakers(tmp_path):
    for spk in ("bdl", "slt"):
        _wav(tmp_path / spk / "arctic_a0001.flac")
        _wav(tmp_path / spk / "arctic_b0490.flac")
    (tmp_path / "prompts.txt").write_text("arctic_a0001\tAuthor of the danger trail, Philip Steels, etc.\n"
                                          "arctic_b0490  Not at this particular case.\n")
    (tmp_path / "speakers.tsv").write_text("speaker\tgender\tsource\nbdl\tM\tCMU\nslt\tF\tCMU\n")
    utts = {(u.speaker, u.utt_id): u for u in read_corpus(tmp_path)}
    assert utts[("bdl", "arctic_a0001")].transcript == "Author of the danger trail, Philip Steels, etc."
    assert utts[("slt", "arctic_b0490")].transcript == "Not at this particular case."
    assert utts[("bdl", "arctic_b0490")].gender == "M" and utts[("slt", "arctic_a0001")].gender == "F"


def test_empty_or_missing_corpus(tmp_path):
    with pytest.raises(ClsvcError, match="not found"):
        read_corpus(tmp_path / "nope")
    with pytest.raises(ClsvcError, match="no audio"):
        read_corpus(tmp_path)


def test_preprocess_splits_skips_and_is_idempotent(tmp_path):
    corpus = write_corpus(tmp_path / "c", n_utts=4, seconds=0.8)
    sf.write(corpus / "spk_a" / "spk_a_900.wav", np.zeros(SR, np.float32), SR)  # silent
    (corpus / "spk_a" / "spk_a_901.wav").write_bytes(b"not audio at all")  # corrupt
    out = tmp_path / "f"
    spec = SplitSpec(unseen=["spk_c"], holdout_per_speaker=1, seed=3)
    entries = preprocess(corpus, out, MelConfig(), split=spec, jobs=2, progress=False)
    splits = {(e.speaker, e.split) for e in entries}
    assert ("spk_c", "unseen") in splits and ("spk_c", "train") not in splits
    per = {s: sum(e.split == "val" for e in entries if e.speaker == s) for s in ("spk_a", "spk_b")}
    assert per == {"spk_a": 1, "spk_b": 1}
    skipped = (out / "skipped.tsv").read_text()
    assert "spk_a_900" in skipped and "silent" in skipped and "spk_a_901" in skipped
    assert len(read_manifest(out)) == len(entries) == 12
    e = entries[0]
    assert np.load(out / e.feature).shape == (e.frames, 80)
    assert e.gender == "M"
    # Second run: nothing recomputed, same manifest.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "feats").rglob("*.npy")}
    again = preprocess(corpus, out, MelConfig(), split=spec, jobs=2, progress=False)
    assert again == entries
    assert mtimes == {p: p.stat().st_mtime_ns for p in (out / "feats").rglob("*.npy")}
    assert not [p for p in out.rglob("*.tmp")]


def test_preprocess_refuses_other_mel_config(tmp_path, features, corpus):
    import shutil

    copy = tmp_path / "f"
    shutil.copytree(features, copy)
    with pytest.raises(ClsvcError, match="different mel config"):
        preprocess(corpus, copy, MelConfig(fmax=8000.0), progress=False)


def test_unknown_unseen_speaker(corpus, tmp_path):
    with pytest.raises(ClsvcError, match="not in the corpus"):
        preprocess(corpus, tmp_path / "f", MelConfig(), split=SplitSpec(unseen=["ghost"]), progress=False)


def test_crop_sampler(features):
    ds = FeatureSet(features, ("train",))
    assert ds.speakers == ["spk_a", "spk_b", "spk_c"]
    g = torch.Generator().manual_seed(0)
    b = ds.sample(6, 200, g)  # longer than every utterance: padded
    assert b.mel.shape == (6, 200, 80) and (b.lengths < 200).all()
    assert (b.mel[0, b.lengths[0]:] == 0).all()
    b2 = ds.sample(6, 16, torch.Generator().manual_seed(0))
    b3 = ds.sample(6, 16, torch.Generator().manual_seed(0))
    assert torch.equal(b2.mel, b3.mel) and torch.equal(b2.speaker, b3.speaker)
    assert (b2.lengths == 16).all()


def test_sampling_shares_by_speaker_sqrt_and_utterance(features):
    """With one speaker of n utterances beside two of one each, a draw is that speaker's
    1/3 of the time by speaker, sqrt(n)/(sqrt(n) + 2) by sqrt and n/(n + 2) by utterance."""
    ds = FeatureSet(features, ("train",))
    a = ds.by_speaker[0]
    ds.by_speaker = [a, ds.by_speaker[1][:1], ds.by_speaker[2][:1]]
    keep = np.concatenate(ds.by_speaker)
    ds.entries = [ds.entries[i] for i in keep]  # the utterance draw sees the same n + 2 utterances
    ds.mels, ds.labels = [ds.mels[i] for i in keep], ds.labels[keep]
    ds.by_speaker = [np.arange(len(a)), np.array([len(a)]), np.array([len(a) + 1])]
    n = len(a)
    assert n >= 3
    for sampling, want in [("speaker", 1 / 3), ("sqrt", n ** 0.5 / (n ** 0.5 + 2)), ("utterance", n / (n + 2))]:
        g = torch.Generator().manual_seed(0)
        share = np.mean([(ds.sample(50, 8, g, sampling).speaker == 0).float().mean().item() for _ in range(60)])
        assert abs(share - want) < 0.04, (sampling, share, want)


def test_preprocess_several_corpora(tmp_path):
    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8)
    b = tmp_path / "b"
    _wav(b / "other" / "other_001.wav")
    entries = preprocess([a, b], tmp_path / "f", MelConfig(), jobs=1, progress=False)
    assert {e.speaker for e in entries} == {"spk_a", "spk_b", "spk_c", "other"}
    _wav(b / "spk_a" / "spk_a_001.wav")  # same speaker name in two corpora
    with pytest.raises(ClsvcError, match="appears in both"):
        preprocess([a, b], tmp_path / "g", MelConfig(), jobs=1, progress=False)
