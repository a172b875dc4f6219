import math

import pytest
import torch

from clsvc.config import load_config
from clsvc.models import ClsVC, clsvc_losses
from clsvc.models.layers import grad_reverse

from helpers import TINY


def make(*extra, n_speakers=3):
    cfg = load_config("cpu-paper", TINY + list(extra))
    cfg.model.n_speakers = n_speakers
    torch.manual_seed(0)
    return ClsVC(cfg.model, cfg.mel.n_mels, cfg.loss), cfg


def batch(b=4, t=32):
    g = torch.Generator().manual_seed(0)
    return torch.rand(b, t, 80, generator=g), torch.full((b,), t), torch.tensor([0, 1, 2, 0][:b])


def test_grl_flips_and_scales_gradients():
    x = torch.randn(5, requires_grad=True)
    (grad_reverse(x, 0.5) * 3).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), -1.5))
    y = torch.randn(5)
    assert torch.equal(grad_reverse(y), y)


def test_shapes():
    model, cfg = make("loss.convert_code=1")
    mel, lengths, spk = batch()
    perm = torch.roll(torch.arange(4), 1)
    out = model.run(mel, lengths, perm)
    s, c = cfg.model.speaker_dim, cfg.model.content_dim
    assert out.speaker.shape == (4, s) and out.content.shape == (4, 32, c)
    assert out.mel_post.shape == mel.shape and out.mel_out.shape == mel.shape
    assert out.spk_logits.shape == (4, 3) and out.adv_logits.shape == (4, 32, 3)
    assert out.conv_mel.shape == mel.shape
    assert out.conv_speaker.shape == (4, s) and out.conv_content.shape == (4, 32, c)
    # Without a conversion loss the conversion is decoded (loss.phone_out reads it) but not re-encoded.
    plain, _ = make()
    out = plain.run(mel, lengths, perm)
    assert out.conv_mel.shape == mel.shape and out.conv_content is None and out.conv_speaker is None
    pooled, _ = make("model.adversary_input=pooled")
    assert pooled.run(mel, lengths).adv_logits.shape == (4, 3)


def _padded_batch():
    """(utterance (1, 40, 80), a longer neighbour (1, 64, 80), both as one zero-padded batch, lengths)."""
    g = torch.Generator().manual_seed(3)
    mel, other = torch.rand(1, 40, 80, generator=g), torch.rand(1, 64, 80, generator=g)
    batch = torch.cat([other, torch.cat([mel, torch.zeros(1, 24, 80)], dim=1)])
    return mel, other, batch, torch.tensor([64, 40])


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_speaker_code_ignores_padding(norm):
    # S_x is the masked mean of Z over the valid frames. It equals S_x of the utterance alone
    # when no valid frame of Z depends on a padded one: one conv layer (its own zero padding is
    # what the padded frames hold) and no BiLSTM, whose backward pass would carry the padding
    # into every frame. Batch norm in eval mode normalises each frame with the running
    # statistics (made non-trivial here), so it mixes no frames either; group norm's statistics
    # span the time axis, padding included, so it is not padding-invariant and not tested here.
    model, _ = make(f"model.norm={norm}", "model.enc_conv_layers=1", "model.enc_lstm_layers=0")
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in model.encoder.modules()) == (norm == "batch")
    g = torch.Generator().manual_seed(4)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    model.eval()
    mel, other, batch, lengths = _padded_batch()
    with torch.no_grad():
        s_alone, c_alone, _ = model.encode(mel)
        s_other, _, _ = model.encode(other)
        s, c, mask = model.encode(batch, lengths)
        s_unmasked, _, _ = model.encode(batch)
    assert mask.sum(1).tolist() == [64, 40]
    assert torch.allclose(s[1], s_alone[0], atol=1e-6)  # the padded row: as if alone
    assert torch.allclose(c[1, :40], c_alone[0], atol=1e-6)
    assert torch.allclose(s[0], s_other[0], atol=1e-6)  # the full row: untouched by its neighbour
    # It is the mask that makes this hold: the mean over all 64 frames is another code.
    assert not torch.allclose(s_unmasked[1], s_alone[0], atol=1e-3)
    assert torch.allclose(s_unmasked[0], s[0], atol=1e-6)


def test_speaker_code_is_the_mean_over_valid_frames():
    # The paper-sized encoder (3 convs, a BiLSTM) lets the padding reach valid frames of Z, so
    # S_x of a padded row is only close to S_x of the utterance alone; but it is exactly the mean
    # of Z over the row's valid frames, nothing of the padded frames.
    model, cfg = make("model.norm=none")
    model.eval()
    mel, _, batch, lengths = _padded_batch()
    with torch.no_grad():
        s1, _, m1 = model.encode(mel)
        s2, _, m2 = model.encode(batch, lengths)
        z = model.encoder(batch)[..., :cfg.model.speaker_dim]
    assert m1.sum() == 40 and m2[1].sum() == 40 and m2[0].sum() == 64
    assert torch.allclose(s2[1], z[1, :40].mean(0), atol=1e-6)
    assert torch.allclose(s2[0], z[0].mean(0), atol=1e-6)
    assert not torch.allclose(s2[1], z[1].mean(0), atol=1e-4)
    assert torch.nn.functional.cosine_similarity(s1, s2[1:]).item() > 0.9


def test_inference_api_shapes():
    model, cfg = make()
    model.eval()
    mel = torch.rand(2, 50, 80)
    emb = model.embed(mel)
    assert emb.shape == (2, cfg.model.speaker_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(2), atol=1e-5)
    out = model.convert(mel, emb[1])
    assert out.shape == mel.shape and out.min() >= 0 and out.max() <= 1
    assert not out.requires_grad


def _terms(*extra):
    model, cfg = make(*extra)
    mel, lengths, spk = batch()
    perm = torch.roll(torch.arange(4), 1) if cfg.loss.convert_code or cfg.loss.convert_cls else None
    out = model.run(mel, lengths, perm)
    total, terms = clsvc_losses(out, mel, spk, cfg.loss)
    return model, total, terms


def test_total_is_the_weighted_sum():
    _, total, t = _terms("loss.alpha=0.3", "loss.beta=0.2", "loss.lambda_adv=0.7")
    expect = t["recon"] + 0.3 * t["code"] + 0.2 * t["cls"] + 0.7 * t["adv"]
    assert torch.allclose(total, expect)
    # untrained classifiers guess: CE near log K
    assert abs(t["cls"].item() - math.log(3)) < 1.0 and abs(t["adv"].item() - math.log(3)) < 1.0


@pytest.mark.parametrize("zeroed", ["alpha", "beta", "lambda_adv"])
def test_each_weight_switches_its_term(zeroed):
    extra = [f"loss.{zeroed}=0"]
    _, total, t = _terms(*extra)
    w = {"alpha": 0.1, "beta": 0.1, "lambda_adv": 0.5}
    w[zeroed] = 0
    expect = t["recon"] + w["alpha"] * t["code"] + w["beta"] * t["cls"] + w["lambda_adv"] * t["adv"]
    assert torch.allclose(total, expect)


def test_entropy_total():
    _, total, t = _terms("loss.adversarial=entropy")
    expect = t["recon"] + 0.1 * t["code"] + 0.1 * t["cls"] + 0.5 * (t["adv"] + t["adv_uniform"])
    assert torch.allclose(total, expect)
    assert t["adv_uniform"] >= math.log(3) - 1e-5  # CE to uniform is at least log K


def test_conversion_terms_are_added():
    _, total, t = _terms("loss.convert_code=2.0", "loss.convert_cls=0.5")
    base = t["recon"] + 0.1 * t["code"] + 0.1 * t["cls"] + 0.5 * t["adv"]
    assert torch.allclose(total, base + 2.0 * t["conv_code"] + 0.5 * t["conv_cls"])


def _grads(model, loss):
    model.zero_grad()
    loss.backward()
    def flat(params):
        return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])

    enc, adv = flat(model.encoder.parameters()), flat(model.adversary.parameters())
    return enc, adv


def test_grl_reverses_the_adversarial_gradient_for_the_encoder_only():
    model, cfg = make()
    mel, lengths, spk = batch()
    out = model.run(mel, lengths)
    _, t = clsvc_losses(out, mel, spk, cfg.loss)
    enc_g, adv_g = _grads(model, t["adv"])
    # Same loss through a plain (non-reversed) path: the adversary's gradient is identical, the
    # encoder's is its negative.
    out2 = model.run(mel, lengths)
    logits = model.classify_content(out2.content, out2.mask)
    from clsvc.models.losses import frame_ce

    ce, _ = frame_ce(logits, spk, out2.mask)
    enc_p, adv_p = _grads(model, ce)
    assert torch.allclose(adv_g, adv_p, atol=1e-6)
    assert torch.allclose(enc_g, -enc_p, atol=1e-6)


def test_entropy_adversary_routes_each_objective_to_its_player():
    model, cfg = make("loss.adversarial=entropy")
    mel, lengths, spk = batch()
    out = model.run(mel, lengths)
    from clsvc.models.losses import frame_ce, uniform_ce

    ce, _ = frame_ce(out.adv_logits, spk, out.mask)
    enc_g, adv_g = _grads(model, ce)  # C2's own CE never reaches the encoder
    assert enc_g.abs().sum() == 0 and adv_g.abs().sum() > 0
    out = model.run(mel, lengths)
    model.zero_grad()
    uniform_ce(out.enc_adv_logits, out.mask).backward()  # the encoder's term never moves C2
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.adversary.parameters())
    assert sum(p.grad.abs().sum() for p in model.encoder.parameters() if p.grad is not None) > 0


def _valid_frame_terms(*extra):
    """(out, mel, lengths, total, terms) of a batch whose padded frames must not count."""
    model, cfg = make(*extra)
    mel, _, spk = batch()
    lengths = torch.tensor([32, 20, 32, 9])
    out = model.run(mel, lengths, None)
    total, t = clsvc_losses(out, mel, spk, cfg.loss)
    return out, mel, lengths, total, t


def _expected_over_valid(out, mel, lengths, kind, diff):
    """The mean |d| (l1) or d^2 (l2) of ``diff(pred[:n], mel[:n])`` over every utterance's valid
    frames, summed over both decoder outputs: what a term of the objective should equal."""
    expect = 0.0
    for pred in (out.mel_post, out.mel_out):
        d = torch.cat([diff(pred[i, :n].detach(), mel[i, :n]) for i, n in enumerate(lengths.tolist())])
        expect += float((d.abs() if kind == "l1" else d ** 2).mean())
    return expect


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_recon_distance_is_the_configured_one_over_valid_frames(kind):
    out, mel, lengths, _, t = _valid_frame_terms(f"loss.recon_distance={kind}")
    expect = _expected_over_valid(out, mel, lengths, kind, lambda p, m: p - m)
    assert t["recon"].item() == pytest.approx(expect, abs=1e-6)


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_delta_term_prices_frame_to_frame_changes_over_valid_steps(kind):
    _, total, t = _terms("loss.delta=0")
    assert "delta" not in t  # off by default: the objective is the paper's
    out, mel, lengths, total, t = _valid_frame_terms("loss.delta=0.5", f"loss.recon_distance={kind}")
    # steps between two valid frames only
    expect = _expected_over_valid(out, mel, lengths, kind, lambda p, m: (p[1:] - p[:-1]) - (m[1:] - m[:-1]))
    assert t["delta"].item() == pytest.approx(expect, abs=1e-6)
    base = t["recon"] + 0.1 * t["code"] + 0.1 * t["cls"] + 0.5 * t["adv"]
    assert torch.allclose(total, base + 0.5 * t["delta"])


def test_delta_term_sees_flattened_transitions_not_offsets():
    from clsvc.models.losses import _delta_distance

    mel, _, _ = batch()
    mask = torch.ones(4, 32)
    # A constant offset keeps every change (frame loss > 0, delta 0); a moving average of the same
    # frame loss flattens them (delta > 0): the term measures what a frame loss lets blur.
    assert _delta_distance(mel + 0.1, mel, "l1", mask).item() < 1e-6
    smooth = torch.nn.functional.avg_pool1d(mel.transpose(1, 2), 3, 1, 1, count_include_pad=False).transpose(1, 2)
    assert _delta_distance(smooth, mel, "l1", mask).item() > 0.05


def test_delta_weight_is_checked():
    from clsvc.errors import ClsvcError

    with pytest.raises(ClsvcError, match="loss.delta"):
        load_config("cpu", ["loss.delta=-0.1"])
    with pytest.raises(ClsvcError, match="loss.delta"):
        load_config("autovc-cpu", ["loss.delta=0.1"])


@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_envelope_term_prices_low_quefrency_cepstra_over_valid_frames(kind):
    from scipy.fft import dct

    _, _, t = _terms()
    assert "envelope" not in t  # off by default: the objective is the paper's
    out, mel, lengths, total, t = _valid_frame_terms("loss.envelope=0.5", "loss.envelope_order=12",
                                                     f"loss.recon_distance={kind}")

    def ceps(p, m):  # c1..c12 of the orthonormal DCT-II over the bands
        return torch.from_numpy(dct((p - m).double().numpy(), type=2, norm="ortho", axis=1)[:, 1:13])

    assert t["envelope"].item() == pytest.approx(_expected_over_valid(out, mel, lengths, kind, ceps), rel=1e-4)
    base = t["recon"] + 0.1 * t["code"] + 0.1 * t["cls"] + 0.5 * t["adv"]
    assert torch.allclose(total, base + 0.5 * t["envelope"])


def test_envelope_term_sees_the_envelope_not_the_fine_structure():
    from clsvc.models.losses import _envelope_distance, envelope_basis

    mel, _, _ = batch()
    mask = torch.ones(4, 32)
    bands = torch.arange(80, dtype=torch.float32)
    # A level offset (c0) and a fast ripple across the bands (quefrency 60: harmonics) leave the
    # envelope; a tilt across the bands (a brighter voice) changes it.
    ripple = 0.05 * torch.cos(torch.pi * 60 * (bands + 0.5) / 80)
    basis = envelope_basis(80, 24)
    assert _envelope_distance(mel + 0.1 + ripple, mel, "l1", mask, basis).item() < 1e-3
    assert _envelope_distance(mel + 0.002 * bands, mel, "l1", mask, basis).item() > 0.01


def test_envelope_options_are_checked():
    from clsvc.errors import ClsvcError

    with pytest.raises(ClsvcError, match="loss.envelope"):
        load_config("cpu", ["loss.envelope=-1"])
    with pytest.raises(ClsvcError, match="loss.envelope_order"):
        load_config("cpu", ["loss.envelope_order=80"])
    with pytest.raises(ClsvcError, match="loss.envelope"):
        load_config("autovc-cpu", ["loss.envelope=0.1"])
