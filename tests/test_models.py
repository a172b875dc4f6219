import math

import pytest
import torch

from clsvc.config import load_config
from clsvc.models import ClsVC, clsvc_losses
from clsvc.models.layers import grad_reverse

from conftest import TINY


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
    model, cfg = make()
    mel, lengths, spk = batch()
    out = model.run(mel, lengths, torch.roll(torch.arange(4), 1))
    s, c = cfg.model.speaker_dim, cfg.model.content_dim
    assert out.speaker.shape == (4, s) and out.content.shape == (4, 32, c)
    assert out.mel_post.shape == mel.shape and out.mel_out.shape == mel.shape
    assert out.spk_logits.shape == (4, 3) and out.adv_logits.shape == (4, 32, 3)
    assert out.conv_speaker.shape == (4, s) and out.conv_content.shape == (4, 32, c)
    pooled, _ = make("model.adversary_input=pooled")
    assert pooled.run(mel, lengths).adv_logits.shape == (4, 3)


def test_speaker_code_ignores_padding():
    model, _ = make("model.norm=none")
    model.eval()
    mel = torch.rand(1, 40, 80)
    padded = torch.cat([mel, torch.zeros(1, 24, 80)], dim=1)
    # The conv receptive field sees the pad near the end; the BiLSTM sees it everywhere, so
    # compare pooled speaker codes loosely and check the mask is applied at all.
    s1, _, m1 = model.encode(mel)
    s2, _, m2 = model.encode(padded, torch.tensor([40]))
    assert m2.sum() == 40 and m1.sum() == 40
    assert torch.nn.functional.cosine_similarity(s1, s2).item() > 0.9


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
    from clsvc.models.losses import _frame_ce

    ce, _ = _frame_ce(logits, spk, out2.mask)
    enc_p, adv_p = _grads(model, ce)
    assert torch.allclose(adv_g, adv_p, atol=1e-6)
    assert torch.allclose(enc_g, -enc_p, atol=1e-6)


def test_entropy_adversary_routes_each_objective_to_its_player():
    model, cfg = make("loss.adversarial=entropy")
    mel, lengths, spk = batch()
    out = model.run(mel, lengths)
    from clsvc.models.losses import _frame_ce, _uniform_ce

    ce, _ = _frame_ce(out.adv_logits, spk, out.mask)
    enc_g, adv_g = _grads(model, ce)  # C2's own CE never reaches the encoder
    assert enc_g.abs().sum() == 0 and adv_g.abs().sum() > 0
    out = model.run(mel, lengths)
    model.zero_grad()
    _uniform_ce(out.enc_adv_logits, out.mask).backward()  # the encoder's term never moves C2
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.adversary.parameters())
    assert sum(p.grad.abs().sum() for p in model.encoder.parameters() if p.grad is not None) > 0
