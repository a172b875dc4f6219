"""AutoVC baseline: AutoVC's down-sampling, shapes, training, one-shot conversion, resume."""

import numpy as np
import pytest
import soundfile as sf
import torch

import clsvc
from clsvc.errors import ClsvcError
from clsvc.models import Codes, DVectorVoice, Reference, build_system
from clsvc.models.autovc import DVECTOR_DIM, downsample_codes, upsample_codes
from clsvc.checkpoint import load_checkpoint
from clsvc.training import read_log, train

from conftest import SPEAKERS, SR, synth_utterance

AUTOVC = ("model.system=autovc", "autovc.bottleneck_dim=8", "autovc.downsample=8")


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


def test_training_lowers_recon_and_converts_one_shot(features, tiny_cfg, tmp_path):
    cfg = tiny_cfg(*AUTOVC, "train.max_steps=40", "train.log_every=10", "optim.lr=3e-3")
    ckpt = train(cfg, features, tmp_path / "run", progress=False)
    rows = read_log(tmp_path / "run")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["recon"] < 0.75 * rows[0]["recon"]
    assert rows[-1]["total"] < rows[0]["total"]
    assert read_log(tmp_path / "run", "val")

    saved = load_checkpoint(ckpt)
    assert saved["speaker_table"].shape == (3, DVECTOR_DIM)  # the mean d-vectors, unit rows
    assert torch.allclose(saved["speaker_table"], saved["model"]["voice.dvectors"])
    assert torch.allclose(saved["speaker_table"].norm(dim=-1), torch.ones(3), atol=1e-5)

    vc = clsvc.load(ckpt)
    f0, tract = SPEAKERS["spk_a"]
    src = tmp_path / "src.wav"
    sf.write(src, synth_utterance(f0, tract, seed=901), SR)
    f0, tract = SPEAKERS["spk_c"]
    ref = tmp_path / "ref.wav"
    sf.write(ref, synth_utterance(f0, tract, seed=902), SR)
    emb = vc.embed(ref)
    assert emb.shape == (DVECTOR_DIM,) and vc.model.source_condition(vc.reference(src)).shape == (DVECTOR_DIM,)
    wav = vc.convert(src, ref)  # one-shot: target and source d-vectors from audio
    assert wav.ndim == 1 and np.isfinite(wav).all() and abs(len(wav) - 1.2 * SR) < 0.1 * SR
    seen = vc.convert(src, target_speaker="spk_b")  # the stored mean d-vector
    assert np.isfinite(seen).all() and len(seen) == len(wav)


def test_resume_continues_exactly(features, tiny_cfg, tmp_path):
    common = (*AUTOVC, "train.log_every=1", "train.ckpt_every=100")
    train(tiny_cfg("train.max_steps=8", *common), features, tmp_path / "full", progress=False)
    train(tiny_cfg("train.max_steps=4", *common), features, tmp_path / "part", progress=False)
    train(None, features, tmp_path / "part", resume=True, progress=False, overrides=["train.max_steps=8"])
    full, part = read_log(tmp_path / "full"), read_log(tmp_path / "part")
    assert [r["step"] for r in part] == list(range(1, 9))
    for a, b in zip(full[4:], part[4:]):
        for k in ("total", "recon", "code"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-7), (a["step"], k)
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    wb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-5) for k in wa)
