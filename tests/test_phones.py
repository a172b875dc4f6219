"""Phone supervision of ClsVC's content code (``loss.phone``): forced alignment of a transcript
(clsvc.data.align), ``clsvc preprocess --phones``, the labels in training batches, the loss
term and the training-only phone classifier."""

from __future__ import annotations

import json
import shutil
from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clsvc.audio import load_wav, trim_silence, wav_to_mel
from clsvc.checkpoint import load_checkpoint
from clsvc.cli import main as cli_main
from clsvc.config import MelConfig, load_config
from clsvc.data import FeatureSet, read_manifest
from clsvc.data.align import PHONES, UNKNOWN, available, loop_phones, phone_labels
from clsvc.data.manifest import feature_path, load_phones, phones_path, read_features_info
from clsvc.errors import ClsvcError
from clsvc.models import build_system
from clsvc.models.losses import frame_ce, phone_term, uniform_ce
from clsvc.training import train

from helpers import tiny_config

MEL = MelConfig()
PHONE_ON = "loss.phone=0.5"
needs_aligner = pytest.mark.skipif(not available(), reason="pocketsphinx not installed")
DEMO = resources.files("clsvc") / "resources" / "demo"


def _demo_clips() -> list[tuple[str, str, str]]:
    """(file, speaker, transcript) of the shipped ARCTIC demo clips (those with a transcript)."""
    clips = json.loads((DEMO / "clips.json").read_text())["clips"]
    return [(c["file"], c["speaker"], c["transcript"]) for c in clips if c["transcript"]]


def _runs(labels: np.ndarray) -> list[str]:
    """The known phones of a label track, each run of equal frames once."""
    return [PHONES[v] for k, v in enumerate(labels) if v >= 0 and (k == 0 or labels[k - 1] != v)]


@pytest.fixture(scope="module")
def arctic_corpus(tmp_path_factory):
    """The three shipped ARCTIC clips as a corpus with a ``prompts.txt``, and one clip of a
    fourth speaker without a transcript."""
    root = tmp_path_factory.mktemp("arctic-mini")
    lines = []
    for file, speaker, text in _demo_clips():
        utt = file.split("_", 1)[1].rsplit(".", 1)[0]  # bdl_arctic_b0503.flac -> arctic_b0503
        (root / speaker).mkdir()
        with resources.as_file(DEMO / file) as src:
            shutil.copy(src, root / speaker / f"{utt}.flac")
        lines.append(f"{utt}\t{text}")
    (root / "ls").mkdir()
    with resources.as_file(DEMO / "ls2033_0004.flac") as src:
        shutil.copy(src, root / "ls" / "ls_0004.flac")
    (root / "prompts.txt").write_text("\n".join(lines) + "\n")
    return root


# ---------------------------------------------------------------------------------------- alignment


@needs_aligner
@pytest.mark.parametrize("clip", range(3))
def test_phone_labels_spell_the_words_of_a_real_clip_on_the_mel_grid(clip):
    from clsvc.data.align import _aligner

    file, _, text = _demo_clips()[clip]
    with resources.as_file(DEMO / file) as path:
        wav = load_wav(path, MEL)
    frames = len(wav_to_mel(wav, MEL))
    labels = phone_labels(wav, text, frames, MEL)
    assert labels.dtype == np.int16 and labels.shape == (frames,)
    assert (labels >= 0).mean() > 0.95  # the words cover the clip (leading/trailing silence: SIL)
    # In order, the phones spell the transcript's words, each by one of its pronunciations in the
    # dictionary (``was`` may be W AA Z or W AH Z: the aligner picks what it hears).
    dec, _ = _aligner()
    heard = [p for p in _runs(labels) if p != "SIL"]
    ends = {0}  # where in `heard` the words so far can end
    for word in text.lower().replace(",", "").replace(".", "").split():
        variants = [dec.lookup_word(word)] + [v for k in range(2, 6) if (v := dec.lookup_word(f"{word}({k})"))]
        ends = {e + len(v.split()) for e in ends for v in variants if heard[e:e + len(v.split())] == v.split()}
        assert ends, f"{word!r} not spelled at its place in {heard}"
    assert len(heard) in ends


@needs_aligner
def test_no_transcript_or_an_unknown_word_leaves_every_frame_unknown():
    file, _, text = _demo_clips()[0]
    with resources.as_file(DEMO / file) as path:
        wav = load_wav(path, MEL)
    frames = len(wav_to_mel(wav, MEL))
    for words in ("", " ... ", text + " qzxvbrk"):
        assert (phone_labels(wav, words, frames, MEL) == UNKNOWN).all()
    assert (phone_labels(np.zeros(0, np.float32), text, 5, MEL) == UNKNOWN).all()
    # A known alignment reused: a longer frame grid is unknown past the audio.
    long = phone_labels(wav, text, frames + 20, MEL)
    assert np.array_equal(long[:frames], phone_labels(wav, text, frames, MEL)) and (long[frames + 2:] == UNKNOWN).all()


@needs_aligner
def test_the_phone_loop_labels_speech_without_its_words():
    # The LibriSpeech demo clip has no transcript: alignment knows nothing, the loop hears phones.
    with resources.as_file(DEMO / "ls2033_0004.flac") as path:
        wav = load_wav(path, MEL)
    frames = len(wav_to_mel(wav, MEL))
    assert (phone_labels(wav, "", frames, MEL) == UNKNOWN).all()
    heard = phone_labels(wav, "", frames, MEL, loop=True)
    assert heard.dtype == np.int16 and heard.shape == (frames,)
    assert (heard >= 0).mean() > 0.95  # the segments tile the clip
    assert len({p for p in _runs(heard) if p != "SIL"}) >= 15  # a sentence's worth of different sounds
    assert np.array_equal(heard, phone_labels(wav, "", frames, MEL, loop=True))  # no state kept between calls
    segs = loop_phones(wav, MEL.sample_rate)
    assert all(a < b for _, a, b in segs) and all(b0 == pytest.approx(a1) for (_, _, b0), (_, a1, _) in zip(segs, segs[1:]))
    assert loop_phones(np.zeros(0, np.float32)) == []
    # Where the words are known, alignment wins; the loop agrees with it on many more frames than
    # the most frequent phone would (chance about 0.1 on a clip with its silences).
    file, _, text = _demo_clips()[1]
    with resources.as_file(DEMO / file) as path:
        wav = load_wav(path, MEL)
    frames = len(wav_to_mel(wav, MEL))
    aligned = phone_labels(wav, text, frames, MEL)
    assert np.array_equal(phone_labels(wav, text, frames, MEL, loop=True), aligned)
    loop = phone_labels(wav, "", frames, MEL, loop=True)
    known = aligned >= 0
    assert (loop[known] == aligned[known]).mean() > 0.3


# ---------------------------------------------------------------------------------------- preprocess


@needs_aligner
def test_preprocess_phones_writes_labels_of_the_trimmed_samples(arctic_corpus, tmp_path):
    out = tmp_path / "feats"
    assert cli_main(["preprocess", str(arctic_corpus), "--out", str(out), "--phones", "--jobs", "1", "--quiet"]) == 0
    assert read_features_info(out)["preprocess"]["phones"] is True
    entries = {e.speaker: e for e in read_manifest(out)}
    assert set(entries) == {"bdl", "slt", "cathy", "ls"}
    for speaker, e in entries.items():
        labels = load_phones(out, e, len(PHONES))
        assert labels.shape == (e.frames,)
        if speaker == "ls":  # no transcript: nothing known
            assert (labels == UNKNOWN).all()
        else:
            assert (labels >= 0).mean() > 0.9
    # Exactly the labels of the (trimmed) samples the mel was made from.
    e = entries["slt"]
    wav = trim_silence(load_wav(e.source, MEL), 40.0, MEL)
    stored = np.load(phones_path(feature_path(out, e)))
    assert stored.dtype == np.int16
    assert np.array_equal(stored, phone_labels(wav, e.transcript, e.frames, MEL))
    # A folder made without them gets them on a re-run; only the utterance without is redone.
    lost, kept = feature_path(out, entries["bdl"]), feature_path(out, entries["cathy"])
    phones_path(lost).unlink()
    before = kept.stat().st_mtime_ns
    assert cli_main(["preprocess", str(arctic_corpus), "--out", str(out), "--phones", "--jobs", "1", "--quiet"]) == 0
    assert phones_path(lost).is_file() and kept.stat().st_mtime_ns == before


@needs_aligner
def test_preprocess_phone_loop_labels_the_untranscribed_and_only_those_on_a_rerun(arctic_corpus, tmp_path):
    out = tmp_path / "feats"
    assert cli_main(["preprocess", str(arctic_corpus), "--out", str(out), "--phones", "--jobs", "1", "--quiet"]) == 0
    entries = {e.speaker: e for e in read_manifest(out)}
    ls, slt = phones_path(feature_path(out, entries["ls"])), phones_path(feature_path(out, entries["slt"]))
    assert (np.load(ls) == UNKNOWN).all()
    before = slt.stat().st_mtime_ns
    # --phone-loop implies --phones; the folder's labelled utterances are kept, the unknown one is redone.
    assert cli_main(["preprocess", str(arctic_corpus), "--out", str(out), "--phone-loop", "--jobs", "1", "--quiet"]) == 0
    info = read_features_info(out)["preprocess"]
    assert info["phones"] is True and info["phone_loop"] is True
    assert slt.stat().st_mtime_ns == before
    e = entries["ls"]
    wav = trim_silence(load_wav(e.source, MEL), 40.0, MEL)
    assert np.array_equal(load_phones(out, e, len(PHONES)), phone_labels(wav, "", e.frames, MEL, loop=True))
    assert (np.load(ls) >= 0).mean() > 0.95


def test_load_phones_refuses_missing_or_malformed_files_in_one_line(features):
    e = read_manifest(features)[0]
    with pytest.raises(ClsvcError) as err:
        load_phones(features, e, len(PHONES))
    msg = str(err.value)
    assert "\n" not in msg and ".phones.npy" in msg and "--phones" in msg and "loss.phone=0" in msg
    path = phones_path(feature_path(features, e))
    try:
        for bad in (np.zeros(e.frames + 1, np.int16), np.full(e.frames, len(PHONES), np.int16),
                    np.full(e.frames, -2, np.int16), np.zeros(e.frames, np.float32)):
            np.save(path, bad)
            with pytest.raises(ClsvcError, match=r"phone file is not .* re-run `clsvc preprocess --phones`"):
                load_phones(features, e, len(PHONES))
        path.write_bytes(b"not numpy")
        with pytest.raises(ClsvcError, match="unreadable"):
            load_phones(features, e, len(PHONES))
    finally:
        path.unlink()


# ---------------------------------------------------------------------------------------- training


def _with_labels(features, tmp_path):
    """A copy of the shared features with made-up phone labels: frame k of an utterance is
    phone (k // 4) % 8 + 1, the last 5 frames unknown."""
    out = tmp_path / "feats"
    shutil.copytree(features, out)
    for e in read_manifest(out):
        labels = ((np.arange(e.frames) // 4) % 8 + 1).astype(np.int16)
        labels[-5:] = UNKNOWN
        np.save(phones_path(feature_path(out, e)), labels)
    return out


def test_the_batch_carries_labels_cut_like_the_mels(features, tmp_path):
    feats = _with_labels(features, tmp_path)
    data = FeatureSet(feats, ("train",), with_phones=True)
    assert FeatureSet(feats, ("train",)).phones is None  # only when asked for
    batch = data.sample(6, 200, torch.Generator().manual_seed(0))  # longer than every utterance: padded
    assert batch.phones is not None and batch.phones.shape == (6, 200) and batch.phones.dtype == torch.long
    assert set(batch.extra()) == {"phones"} and batch.to("cpu").phones is not None
    for row, length in enumerate(batch.lengths.tolist()):
        assert (batch.phones[row, length - 5:] == UNKNOWN).all()  # the file's unknown tail, then padding
        assert (batch.phones[row, : length - 5] >= 1).all()
    batch = data.sample(4, 32, torch.Generator().manual_seed(1))
    for row in range(4):
        crop = batch.mel[row].numpy()
        i, s = next((i, s) for i, m in enumerate(data.mels) for s in range(len(m) - 31)
                    if np.array_equal(m[s:s + 32], crop))
        assert np.array_equal(batch.phones[row].numpy(), data.phones[i][s:s + 32])


def test_phone_term_counts_only_known_valid_frames():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, len(PHONES), requires_grad=True)
    phones = torch.tensor([[3, 3, -1, 7, 9], [1, -1, -1, 2, 2]])
    mask = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=torch.float32)
    ce, acc = phone_term(logits, phones, mask)
    keep = [(0, 0), (0, 1), (0, 3), (1, 0), (1, 3), (1, 4)]  # known and inside the valid length
    rows = torch.stack([logits[b, t] for b, t in keep])
    target = torch.tensor([phones[b, t] for b, t in keep])
    assert torch.allclose(ce, F.cross_entropy(rows, target))
    assert acc == (rows.argmax(-1) == target).float().mean()
    ce.backward()
    assert logits.grad[0, 2].abs().sum() == 0 and logits.grad[0, 4].abs().sum() == 0
    # No known frame in the batch: nothing to learn, and nothing breaks.
    ce, acc = phone_term(logits, torch.full((2, 5), -1), mask)
    assert ce.item() == 0.0 and acc.item() == 0.0 and ce.requires_grad


def _model_with_head(feats, switch: tuple[str, ...], head: str):
    """A tiny ClsVC with a phone term on (``switch``: overrides) and a training batch with labels,
    after the checks both phone terms share: the labels become an input, the term's head ``head``
    is built only when asked for and is training-only, and a batch without labels is refused."""
    cfg = tiny_config(*switch)
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    model = build_system(cfg)
    assert model.batch_inputs(cfg) == ("mel", "phones")
    assert getattr(model, head) is not None
    assert not any(k.startswith(f"{head}.") for k in model.inference_state_dict())
    off = tiny_config()
    off.model.n_speakers = 3
    assert getattr(build_system(off), head) is None  # off unless asked for
    batch = FeatureSet(feats, ("train",), with_phones=True).sample(6, 32, torch.Generator().manual_seed(0))
    with pytest.raises(ClsvcError, match="--phones"):
        model(batch.mel, batch.lengths, batch.speaker)
    return model, batch


def test_the_phone_classifier_trains_with_the_code_and_is_not_shipped(features, tmp_path):
    model, batch = _model_with_head(_with_labels(features, tmp_path), (PHONE_ON, "model.voice_warp=1.2"),
                                    "phone_classifier")
    assert model.phone_classifier.in_features == model.cfg.content_dim
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    first = None
    for _ in range(25):
        loss, terms = model(batch.mel, batch.lengths, batch.speaker, **batch.extra())
        assert {"phone", "phone_acc"} <= set(terms) and torch.isfinite(loss)
        first = first if first is not None else terms["phone"].item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert terms["phone"].item() < 0.7 * first
    # The encoder learns from the term: its weights get a gradient from the phone loss alone.
    model.zero_grad()
    _, terms = model(batch.mel, batch.lengths, batch.speaker, **batch.extra())
    terms["phone"].backward()
    assert model.encoder.proj.weight.grad.abs().sum() > 0


def test_training_with_phones_runs_and_exports_without_the_head(features, tmp_path):
    feats = _with_labels(features, tmp_path)
    run = tmp_path / "run"
    last = train(tiny_config(PHONE_ON, "train.max_steps=3"), feats, run, progress=False)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert any("phone" in r and "phone_acc" in r for r in rows if r.get("kind") == "train")
    assert any(k.startswith("phone_classifier.") for k in load_checkpoint(last)["model"])
    out = tmp_path / "model.pt"
    assert cli_main(["export", str(last), str(out)]) == 0
    assert not any(k.startswith("phone_classifier.") for k in load_checkpoint(out)["model"])
    assert cli_main(["info", str(out)]) == 0  # loads for inference without the head
    # A run without the term starts from this one (--init): the head is left behind, the rest copied.
    again = train(tiny_config("train.max_steps=1"), feats, tmp_path / "again", init=last, progress=False)
    state = load_checkpoint(again)["model"]
    assert not any(k.startswith("phone_classifier.") for k in state)
    assert set(state) == {k for k in load_checkpoint(last)["model"] if not k.startswith("phone_classifier.")}


READER_ON = "loss.phone_out=0.5"


def test_the_phone_reader_learns_real_phones_and_its_frozen_copy_checks_the_decoded_mels(features, tmp_path):
    model, batch = _model_with_head(_with_labels(features, tmp_path), (READER_ON,), "phone_reader")
    assert model.phone_classifier is None
    # The decoded term: the frozen reader's CE on the reconstruction and on the conversion of each
    # row into the next row's voice, averaged; labels are the source's.
    model.train()
    perm = torch.roll(torch.arange(6), 1)
    out = model.run(batch.mel, batch.lengths, perm)
    real, decoded, terms = model.phone_out_terms(batch.mel, out, batch.phones)
    assert out.conv_content is None  # no conversion losses asked for: no re-encoding
    post_ce, _ = phone_term(model.phone_reader(out.mel_post), batch.phones, out.mask)
    conv_ce, _ = phone_term(model.phone_reader(out.conv_mel), batch.phones, out.mask)
    assert torch.allclose(decoded, (post_ce + conv_ce) / 2)
    assert torch.allclose(real, phone_term(model.phone_reader(batch.mel), batch.phones, out.mask)[0])
    assert {"phone_reader", "phone_reader_acc", "phone_out", "phone_out_acc", "phone_conv_acc"} <= set(terms)
    # Each part moves only its own player: the reader learns from real mels alone, the decoder
    # (and encoder) from the decoded term alone.
    model.zero_grad()
    real.backward(retain_graph=True)
    assert model.phone_reader.out.weight.grad.abs().sum() > 0
    assert model.decoder.out.weight.grad is None or model.decoder.out.weight.grad.abs().sum() == 0
    model.zero_grad()
    decoded.backward()
    assert model.phone_reader.out.weight.grad is None or model.phone_reader.out.weight.grad.abs().sum() == 0
    assert model.decoder.out.weight.grad.abs().sum() > 0 and model.encoder.proj.weight.grad.abs().sum() > 0
    # Training: the reader learns to read the phones.
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        loss, terms = model(batch.mel, batch.lengths, batch.speaker, **batch.extra())
        assert torch.isfinite(loss)
        first = first if first is not None else terms["phone_reader"].item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert terms["phone_reader"].item() < 0.7 * first


@pytest.mark.parametrize("on", ["reconstruction", "conversion"])
def test_the_reader_can_read_one_decoded_mel_only(features, tmp_path, on):
    model, batch = _model_with_head(_with_labels(features, tmp_path), (READER_ON, f"loss.phone_out_on={on}"),
                                    "phone_reader")
    model.train()
    torch.manual_seed(0)
    _, terms = model(batch.mel, batch.lengths, batch.speaker, **batch.extra())
    # Only the asked-for output is read: its CE alone is the decoded term.
    out = model.run(batch.mel, batch.lengths, torch.roll(torch.arange(6), 1))
    _, decoded, logged = model.phone_out_terms(batch.mel, out, batch.phones)
    mel = out.mel_post if on == "reconstruction" else out.conv_mel
    assert torch.allclose(decoded, phone_term(model.phone_reader(mel), batch.phones, out.mask)[0])
    assert ("phone_out_acc" in logged) == (on == "reconstruction")
    assert ("phone_conv_acc" in logged) == (on == "conversion")
    # Reading the reconstruction only, a training pass decodes no conversion (nothing needs it).
    assert ("phone_conv_acc" in terms) == (on == "conversion")
    # A frozen reader (train.freeze) is only logged: its term builds no graph.
    model.phone_reader.requires_grad_(False)
    real, decoded, _ = model.phone_out_terms(batch.mel, out, batch.phones)
    assert not real.requires_grad and decoded.requires_grad


def test_the_reader_can_learn_on_voice_perturbed_mels(features, tmp_path):
    feats = _with_labels(features, tmp_path)
    batch = FeatureSet(feats, ("train",), with_phones=True).sample(6, 32, torch.Generator().manual_seed(0))
    reads = {}
    for where in ("mel", "perturbed"):
        cfg = tiny_config(READER_ON, "model.voice_warp=1.2", f"model.phone_reader_input={where}")
        cfg.model.n_speakers = 3
        torch.manual_seed(0)
        model = build_system(cfg).train()
        out = model.run(batch.mel, batch.lengths, torch.roll(torch.arange(6), 1))
        real, _, _ = model.phone_out_terms(batch.mel, out, batch.phones)
        plain, _ = phone_term(model.phone_reader(batch.mel), batch.phones, out.mask)
        reads[where] = torch.isclose(real, plain).item()
    assert reads == {"mel": True, "perturbed": False}  # the perturbed reader saw another voice


def test_the_readers_speaker_adversary_teaches_it_to_hide_the_voice(features, tmp_path):
    model, batch = _model_with_head(_with_labels(features, tmp_path), (READER_ON, "loss.phone_reader_adv=0.5"),
                                    "phone_reader")
    reader = model.phone_reader
    assert reader.voice is not None and reader.voice.out_features == 3
    model.train()
    out = model.run(batch.mel, batch.lengths, torch.roll(torch.arange(6), 1))
    with pytest.raises(ClsvcError, match="speaker"):
        model.phone_out_terms(batch.mel, out, batch.phones)
    real, _, terms = model.phone_out_terms(batch.mel, out, batch.phones, batch.speaker)
    feats = reader.features(batch.mel)
    phones_ce, _ = phone_term(reader.out(feats), batch.phones, out.mask)
    voice_ce, _ = frame_ce(reader.voice(feats), batch.speaker, out.mask)
    hide = uniform_ce(reader.voice(feats), out.mask)
    assert torch.allclose(terms["phone_reader_adv"], voice_ce) and torch.allclose(terms["phone_reader_hide"], hide)
    assert torch.allclose(real, phones_ce + voice_ce + 0.5 * hide)
    # The adversary learns the voice from its own term alone; the reader's convolutions learn
    # only to leave it clueless (the uniform term), the adversary frozen there.
    model.zero_grad()
    terms["phone_reader_adv"].backward(retain_graph=True)
    assert reader.voice.weight.grad.abs().sum() > 0
    assert all(q.grad is None or q.grad.abs().sum() == 0 for q in reader.convs.parameters())
    model.zero_grad()
    terms["phone_reader_hide"].backward()
    assert reader.voice.weight.grad is None or reader.voice.weight.grad.abs().sum() == 0
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in reader.convs.parameters())
    with pytest.raises(ClsvcError, match="loss.phone_reader_adv"):
        load_config("real", ["loss.phone_reader_adv=0.5"])  # it trains the reader of loss.phone_out


def test_a_run_with_the_reader_starts_from_one_without_and_exports_without_it(features, tmp_path):
    feats = _with_labels(features, tmp_path)
    plain = train(tiny_config("train.max_steps=1"), feats, tmp_path / "plain", progress=False)
    # --init from a training run that never built the reader: the reader starts fresh.
    last = train(tiny_config(READER_ON, "train.max_steps=2"), feats, tmp_path / "run", init=plain, progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert any("phone_out" in r and "phone_reader" in r for r in rows if r.get("kind") == "train")
    assert any(k.startswith("phone_reader.") for k in load_checkpoint(last)["model"])
    out = tmp_path / "model.pt"
    assert cli_main(["export", str(last), str(out)]) == 0
    assert not any(k.startswith("phone_reader.") for k in load_checkpoint(out)["model"])
    assert cli_main(["info", str(out)]) == 0


def test_training_without_phone_files_is_one_line_naming_the_fix(features, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ClsvcError) as err:
        train(tiny_config(PHONE_ON, "train.max_steps=2"), features, run, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and ".phones.npy" in msg and "--phones" in msg
    assert not run.exists()  # refused before the run folder was made


def test_config_refuses_a_negative_weight_or_another_system():
    assert load_config("cpu").loss.phone == 0.0
    with pytest.raises(ClsvcError, match="loss.phone"):
        load_config("cpu", ["loss.phone=-1"])
    with pytest.raises(ClsvcError, match="loss.phone"):
        load_config("cpu", ["model.system=autovc", PHONE_ON])
    assert load_config("cpu").loss.phone_out == 0.0
    for bad in (["loss.phone_out=-0.1"], ["model.system=vqvc", READER_ON], [READER_ON, "model.phone_reader_channels=0"]):
        with pytest.raises(ClsvcError, match=r"loss.phone_out|phone_reader_channels"):
            load_config("cpu", bad)
    with pytest.raises(ClsvcError, match="model.phone_reader_input.*voice perturbation"):
        load_config("cpu", [READER_ON, "model.phone_reader_input=perturbed"])  # cpu has no perturbation
    with pytest.raises(ClsvcError, match="model.phone_reader_input"):
        load_config("real", [READER_ON, "model.phone_reader_input=warped"])
    assert load_config("real", [READER_ON, "model.phone_reader_input=perturbed"]).model.phone_reader_input == "perturbed"
    with pytest.raises(ClsvcError, match="loss.phone_out_on.*reconstruction"):
        load_config("real", [READER_ON, "loss.phone_out_on=recon"])


# ---------------------------------------------------------------------------------------- probes


def test_the_probes_read_phones_from_the_content_code_when_the_features_have_labels(features, trained_run, tmp_path):
    from clsvc.evaluation.probes import probe_codes
    from clsvc.evaluation.report import probe_lines
    from clsvc.inference import load

    model = load(str(trained_run / "checkpoints" / "last.pt")).model
    entries = read_manifest(features)
    train_e = [e for e in entries if e.split == "train"]
    test_e = [e for e in entries if e.split == "val"]
    plain = probe_codes(model, features, train_e, test_e)
    assert "phone_frame" not in plain  # no labels, no phone probe
    feats = _with_labels(features, tmp_path)
    probed = probe_codes(model, feats, train_e, test_e)
    assert {k: probed[k] for k in plain} == plain  # the speaker probes are those of the same frames
    assert 0.0 <= probed["phone_frame"] <= 1.0
    n_train, n_test = probed["phone_frames"]
    assert 0 < n_test < n_train <= 64 * len(train_e)
    # 8 phones in runs of 4 frames: each is about an eighth of the known frames.
    assert 1 / 8 <= probed["phone_majority"] < 0.25
    report = "\n".join(probe_lines(probed))
    assert f"**{probed['phone_frame']:.3f}**" in report and f"{n_test} held-out frames" in report
    assert 0.0 <= probed["phone_mel_frame"] <= 1.0  # the same probe on the mel frames themselves
    assert f"no context, the voice still in it): {probed['phone_mel_frame']:.3f}" in report
    assert "phone" not in "\n".join(probe_lines(plain))
