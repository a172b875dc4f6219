"""StarGAN-VC2 baseline, what is its own: shapes, the two phases and their parameter groups,
masking, both phases in the training log, and the identity-loss schedule across a resume.
Training, exact resume, loading, conversion by speaker name and export are the shared contract
(tests/test_systems.py)."""

import pytest
import torch

from clsvc.checkpoint import load_checkpoint
from clsvc.errors import ClsvcError
from clsvc.models import build_system

from helpers import SYSTEMS

SMALL = SYSTEMS["stargan"].tiny  # the tiny overrides the contract uses too


def _model(tiny_cfg, *extra):
    cfg = tiny_cfg(*SMALL, *extra)
    cfg.model.n_speakers = 3
    torch.manual_seed(0)
    return build_system(cfg)


def test_shapes_terms_and_groups(tiny_cfg):
    model = _model(tiny_cfg)
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(4, 32, 80, generator=g)
    lengths = torch.tensor([32, 32, 20, 9])
    spk = torch.tensor([0, 1, 2, 0])
    loss, terms = model(mel, lengths, spk, "disc")
    assert loss.dim() == 0 and {"d_loss", "d_real", "d_fake", "d_total"} <= set(terms)
    assert "total" not in terms  # the trainer merges both phases' terms; "total" is G's
    loss, terms = model(mel, lengths, spk, "gen")
    assert {"g_adv", "cyc", "id", "recon", "total"} <= set(terms)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    assert int(model.steps) == 1
    # One optimizer per phase over disjoint parameters that cover the whole model.
    d, gen = model.param_groups("disc"), model.param_groups("gen")
    assert d[0]["lr_scale"] == model.cfg.disc_lr_scale
    ids_d = {id(p) for grp in d for p in grp["params"]}
    ids_g = {id(p) for grp in gen for p in grp["params"]}
    assert not ids_d & ids_g and ids_d | ids_g == {id(p) for p in model.parameters()}
    # Seen-speaker table and conversion of a length that is not a multiple of 4.
    model.eval()
    assert torch.equal(model.voice.table(), torch.eye(3)) and model.speaker_dim == 3
    out = model.convert(mel[:2, :30], model.voice.table()[1])
    assert out.shape == (2, 30, 80) and out.min() >= 0 and out.max() <= 1
    assert model.convert(torch.rand(1, 37, 80), torch.eye(3)[2:]).shape == (1, 37, 80)
    with pytest.raises(ClsvcError, match="speaker table"):
        model.convert(mel, torch.ones(5))


def test_padding_does_not_leak_into_valid_frames(tiny_cfg):
    # A row of 20 valid frames padded to 32 gives the same output as the row alone.
    model = _model(tiny_cfg).eval()
    g = torch.Generator().manual_seed(1)
    mel = torch.rand(2, 32, 80, generator=g)
    mel[1, 20:] = 0.0
    code = torch.eye(3)[[1, 2]]
    with torch.no_grad():
        both = model.generator(mel, code, torch.tensor([32, 20]))
        alone = model.generator(mel[1:, :20], code[1:], torch.tensor([20]))
        d_both = model.discriminator(mel, torch.tensor([1, 5]), torch.tensor([32, 20]))
        d_alone = model.discriminator(mel[1:, :20], torch.tensor([5]), torch.tensor([20]))
    assert torch.allclose(both[1, :20], alone[0], atol=1e-5)
    assert torch.allclose(d_both[1], d_alone[0], rtol=1e-4, atol=1e-4)


def test_training_logs_both_phases(system_run):
    run = system_run("stargan")
    assert all(k in run.rows[-1] for k in ("d_loss", "g_adv", "cyc", "id", "total"))
    assert int(load_checkpoint(run.ckpt)["model"]["steps"]) == 40


def test_resume_restores_the_identity_schedule(system_resume):
    # The contract's resume check runs with stargan.id_steps=6: the identity loss switches off
    # after the resume point, so the step counter must come back with the weights.
    pair = system_resume("stargan")
    full = pair.full.rows
    assert all(r["id"] > 0 for r in full[:6]) and all(r["id"] == 0 for r in full[6:])
    assert [r["id"] == 0 for r in pair.part.rows] == [r["id"] == 0 for r in full]
    assert int(pair.full.weights()["steps"]) == int(pair.part.weights()["steps"]) == 8
