"""AutoVC baseline, what is its own: the down-sampling of the codes, shapes and losses, and the
trained voice table of mean d-vectors. Training, exact resume, loading, one-shot conversion and
export are the shared contract (tests/test_systems.py)."""

import numpy as np
import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.checkpoint import load_checkpoint
from clsvc.errors import ClsvcError
from clsvc.models import Codes, DVectorVoice, Reference, build_system
from clsvc.models.autovc import DVECTOR_DIM, downsample_codes, upsample_codes

from helpers import SPEAKERS, SR, SYSTEMS, synth_utterance

AUTOVC = SYSTEMS["autovc"].tiny  # the tiny overrides the contract uses too


def test_downsample_keeps_forward_block_ends_and_backward_block_starts():
    t, d = 12, 4
    frame = torch.arange(t, dtype=torch.float32)
    h = torch.stack([frame, frame + 100], dim=-1).unsqueeze(0)  # (1, T, 2): fwd | bwd
    codes = downsample_codes(h, d)
    assert codes.shape == (1, 3, 2)
    assert codes[0, :, 0].tolist() == [3, 7, 11]  # forward: last frame of each block
    assert codes[0, :, 1].tolist() == [100, 104, 108]  # backward: first frame of each block
    up = upsample_codes(codes, d)
    assert up.shape == (1, t, 2) and up[0, :4, 0].tolist() == [3] * 4


def test_shapes_losses_and_convert(tiny_cfg):
    cfg = tiny_cfg(*AUTOVC)
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    model = build_system(cfg)
    assert isinstance(model.voice, DVectorVoice) and model.voice.one_shot and not model.voice.fitted
    assert model.codes(torch.rand(1, 40, 80)) == Codes()  # no content code for the probes
    assert model.speaker_dim == DVECTOR_DIM
    mel, lengths, spk = torch.rand(4, 32, 80), torch.tensor([32, 32, 20, 9]), torch.tensor([0, 1, 2, 0])
    with pytest.raises(ClsvcError, match="voice.fit"):
        model(mel, lengths, spk)
    with pytest.raises(ClsvcError, match="table"):
        model.voice.set_table(torch.randn(2, DVECTOR_DIM))
    model.voice.set_table(torch.randn(3, DVECTOR_DIM) * 3)
    table = model.voice.table([])
    assert table.shape == (3, DVECTOR_DIM) and torch.allclose(table.norm(dim=-1), torch.ones(3))
    assert "voice.dvectors" in model.state_dict()  # saved with the weights
    # The source condition is the source utterance's own d-vector, made by the same voice part.
    wav = synth_utterance(110.0, 0.95, seed=3)
    ref = Reference(np.zeros((40, 80), np.float32), wav=wav)
    assert torch.allclose(model.source_condition(ref), model.voice.voice([ref]))

    total, terms = model(mel, lengths, spk)
    assert set(terms) >= {"total", "recon", "code"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert torch.allclose(total, terms["recon"] + cfg.autovc.lambda_code * terms["code"])
    total.backward()
    assert model.encoder.convs[0].conv.weight.grad is not None
    assert model.encoder.lstm.hidden_size == 4  # bottleneck 8 = 4 per direction

    model.eval()
    codes = model.encode(torch.rand(2, 37, 80), table[:2])
    assert codes.shape == (2, 5, 8)  # ceil(37 / 8) codes
    out = model.convert(torch.rand(2, 37, 80), table[1], table[0])  # T not a multiple of 8
    assert out.shape == (2, 37, 80) and 0 <= out.min() and out.max() <= 1
    assert model.convert(torch.rand(1, 40, 80), table[:1], table[1:2]).shape == (1, 40, 80)
    with pytest.raises(ClsvcError, match="source"):
        model.convert(torch.rand(1, 40, 80), table[0])


def test_trained_voice_table_is_the_mean_dvectors(system_run, tmp_path):
    ckpt = system_run("autovc").ckpt
    saved = load_checkpoint(ckpt)
    assert saved["speaker_table"].shape == (3, DVECTOR_DIM)  # the mean d-vectors, unit rows
    assert torch.allclose(saved["speaker_table"], saved["model"]["voice.dvectors"])
    assert torch.allclose(saved["speaker_table"].norm(dim=-1), torch.ones(3), atol=1e-5)

    # The source condition of a conversion is the source utterance's own d-vector.
    vc = clsvc.load(ckpt)
    src = tmp_path / "src.wav"
    sf.write(src, synth_utterance(*SPEAKERS["spk_a"], seed=901), SR)
    cond = vc.model.source_condition(vc.reference(src))
    assert cond.shape == (DVECTOR_DIM,)
    assert np.allclose(cond.numpy(), vc.embed(src), atol=1e-6)
