"""ClsVC with ``model.speaker_encoder: dvector``: S_x is the speaker's Resemblyzer d-vector (a
pretrained speaker encoder) instead of the time average of E's speaker channels."""

import numpy as np
import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.checkpoint import load_checkpoint
from clsvc.config import load_config
from clsvc.errors import ClsvcError
from clsvc.models import DVectorVoice, Reference, build_system

from helpers import SPEAKERS, SR, TINY, TRAIN_40, synth_utterance, train_steps

DVEC = ("model.speaker_encoder=dvector", "model.speaker_dim=256")


def test_builds_without_speaker_channels_and_trains_on_the_table(tiny_cfg):
    cfg = tiny_cfg(*DVEC, "loss.convert_code=0.5")
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    model = build_system(cfg)
    assert isinstance(model.voice, DVectorVoice) and model.voice.one_shot and model.speaker_dim == 256
    # E outputs only C_x: no channel of Z is spent on a speaker vector it would not use.
    assert model.encoder.proj.out_features == cfg.model.content_dim
    mel, lengths, spk = torch.rand(4, 32, 80), torch.tensor([32, 32, 20, 9]), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ClsvcError, match="voice.fit"):
        model(mel, lengths, spk)
    model.voice.set_table(torch.randn(3, 256))
    codes = model.codes(mel)
    assert codes.speaker is None and codes.content is not None and codes.content.shape == (4, 32, 8)
    with pytest.raises(ClsvcError, match="d-vectors"):
        model.embed(mel)

    total, terms = model(mel, lengths, spk)
    assert {"recon", "code", "cls", "adv", "conv_code"} <= set(terms)
    assert all(torch.isfinite(v) for v in terms.values())
    total.backward()
    assert model.encoder.proj.weight.grad is not None
    assert model.voice.dvectors.grad is None  # the d-vectors are fixed

    # The decoder hears the table row of each utterance's speaker: another row changes the output.
    model.eval()
    out = model.run(mel, lengths, vectors=model.voice.dvectors[spk])
    other = model.run(mel, lengths, vectors=model.voice.dvectors[(spk + 1) % 3])
    assert not torch.allclose(out.mel_post, other.mel_post)
    assert out.speaker is None and out.speaker_re is None


def test_config_checks_the_size_and_losses():
    with pytest.raises(ClsvcError, match="speaker_dim 256"):
        load_config("cpu", TINY + ["model.speaker_encoder=dvector"])
    with pytest.raises(ClsvcError, match="convert_cls"):
        load_config("cpu", TINY + list(DVEC) + ["loss.convert_cls=0.1"])
    with pytest.raises(ClsvcError, match="speaker_encoder"):
        load_config("cpu", TINY + ["model.speaker_encoder=resemblyzer"])


def test_trains_saves_the_table_and_converts_one_shot_and_by_name(features, tiny_cfg, tmp_path):
    run = train_steps(tiny_cfg(*DVEC, *TRAIN_40), features, tmp_path / "run")
    recon = [r["recon"] for r in run.rows]
    assert recon[-1] < 0.75 * recon[0]
    table = load_checkpoint(run.ckpt)["model"]["voice.dvectors"]
    assert table.shape == (3, 256) and torch.allclose(table.float().norm(dim=-1), torch.ones(3), atol=1e-4)

    src, ref = tmp_path / "src.wav", tmp_path / "ref.wav"
    sf.write(src, synth_utterance(*SPEAKERS["spk_a"], seed=901), SR)
    sf.write(ref, synth_utterance(*SPEAKERS["spk_b"], seed=902), SR)
    vc = clsvc.load(run.ckpt)
    one_shot = vc.convert(src, targets=[ref])
    by_name = vc.convert(src, target_speaker="spk_b")
    assert one_shot.ndim == 1 and np.isfinite(one_shot).all() and len(one_shot) > SR // 2
    assert by_name.shape == one_shot.shape
    # A voice from audio is that audio's d-vector: the same as the voice part makes it.
    wav = synth_utterance(*SPEAKERS["spk_b"], seed=902)
    v = vc.model.voice.voice([Reference(np.zeros((40, 80), np.float32), wav=wav)])
    assert v.shape == (256,) and abs(float(v.norm()) - 1) < 1e-4
