"""The voice and room perturbations of the content path (models/augment.py) and their use in ClsVC."""

from __future__ import annotations

import pytest
import torch

from clsvc.config import MelConfig, ModelConfig, config_from_dict
from clsvc.errors import ClsvcError
from clsvc.models.augment import PseudoVoices, RoomAugment, VoicePerturb
from clsvc.models.clsvc import ClsVC
from clsvc.models.losses import IGNORE_LABEL, clsvc_losses, frame_ce


def _perturb(warp: float, eq_db: float) -> VoicePerturb:
    m = MelConfig()
    return VoicePerturb(m.n_mels, m.fmin, m.fmax, warp, eq_db, -m.min_level_db)


def _tiny(**kw: float) -> ModelConfig:
    """A ClsVC small enough to run a training pass in milliseconds, with settings ``kw``."""
    return ModelConfig(n_speakers=3, speaker_dim=8, content_dim=4, enc_channels=16, enc_conv_layers=1,
                       enc_lstm_hidden=8, enc_lstm_layers=1, dec_pre_lstm=16, dec_channels=16, dec_conv_layers=1,
                       dec_lstm_hidden=16, dec_lstm_layers=1, postnet_channels=8, postnet_layers=2, **kw)


def _with_and_without(**settings: tuple[float, float]) -> tuple[ClsVC, ClsVC]:
    """Two tiny ClsVCs with the same weights: each setting at its first value, and at its second
    (off). A perturbation holds no weights, so checkpoints load across the setting."""
    torch.manual_seed(0)
    model = ClsVC(_tiny(**{k: on for k, (on, _) in settings.items()}))
    plain = ClsVC(_tiny(**{k: off for k, (_, off) in settings.items()}))
    plain.load_state_dict(model.state_dict())
    return model, plain


def test_warp_moves_a_band_peak_both_ways_and_keeps_range():
    mel = torch.zeros(64, 3, 80)
    mel[:, :, 40] = 1.0
    torch.manual_seed(0)
    out = _perturb(1.2, 0.0)(mel)
    peaks = out.argmax(-1)[:, 0]
    assert (peaks < 40).any() and (peaks > 40).any()   # formants move up and down
    assert (peaks - 40).abs().max() <= 6                 # at most a ratio of 1.2 (~4-5 bands here)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.equal(out[:, 0], out[:, 2])             # one warp per utterance, the same every frame


def test_no_warp_no_eq_is_identity_and_eq_is_bounded():
    mel = torch.rand(4, 10, 80) * 0.5 + 0.25
    assert torch.allclose(_perturb(1.0, 0.0)(mel), mel)
    out = _perturb(1.0, 6.0)(mel)
    assert (out - mel).abs().max() <= 6.0 / 100.0 + 1e-6   # 6 dB in units of the 100 dB range
    assert not torch.allclose(out, mel)


def test_clsvc_reads_content_from_the_perturbed_copy_only_in_training():
    model, plain = _with_and_without(voice_warp=(1.2, 1.0), voice_eq_db=(6.0, 0.0))
    assert model.perturb is not None and plain.perturb is None
    mel, lengths, spk = torch.rand(2, 16, 80), torch.tensor([16, 12]), torch.tensor([0, 2])
    model.eval()
    a = model.run(mel, lengths)
    b = plain.eval().run(mel, lengths)
    assert torch.allclose(a.content, b.content)          # inference: no perturbation
    model.train()
    loss, _ = model(mel, lengths, spk)
    loss.backward()
    assert torch.isfinite(loss)


def _room(noise_prob: float = 0.0, snr: float = 10.0, reverb_prob: float = 0.0, rt60: float = 0.8) -> RoomAugment:
    m = MelConfig()
    return RoomAugment(m.n_mels, m.fmin, m.fmax, -m.min_level_db, m.hop_length / m.sample_rate,
                       noise_prob, snr, reverb_prob, rt60)


def _speechlike(b: int = 8, t: int = 60) -> torch.Tensor:
    """Loud frames 10-39 (0.7-0.8, i.e. 70-80 dB above the floor), near-silence elsewhere."""
    torch.manual_seed(1)
    mel = torch.full((b, t, 80), 0.05)
    mel[:, 10:40] = 0.7 + 0.1 * torch.rand(b, 30, 80)
    return mel


def _snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    """Per row: mean power of ``clean`` over the power ``noisy`` adds (both normalised mels)."""
    p, q = 10.0 ** (clean.double() * 10), 10.0 ** (noisy.double() * 10)
    return 10 * torch.log10(p.mean((1, 2)) / (q - p).mean((1, 2)))


def test_room_noise_only_adds_power_at_an_snr_in_its_range():
    mel = _speechlike(64)
    torch.manual_seed(0)
    out = _room(noise_prob=1.0, snr=10.0)(mel)
    assert out.shape == mel.shape and out.min() >= 0 and out.max() <= 1
    assert (out >= mel - 1e-6).all()                       # noise adds power, never removes it
    quiet, loud = (out - mel)[:, :10].mean(), (out - mel)[:, 10:40].mean()
    assert quiet > 10 * loud                               # it shows in the pauses, not under the speech
    snr = _snr_db(mel, out) - RoomAugment.SNR_CALIBRATION_DB  # the magnitude mel reads noise louder
    # SNRs drawn in [10, 40] dB (the frame jitter adds a little power, so a little lower).
    assert snr.min() > 9.0 and snr.max() < 40.5 and snr.max() - snr.min() > 20.0


def test_room_reverb_smears_power_forward_in_time_only():
    mel = _speechlike(16)
    torch.manual_seed(0)
    out = _room(reverb_prob=1.0, rt60=0.8)(mel)
    assert (out >= mel - 1e-6).all()
    # Before the speech only the background's own echo: at most its tail energy (DRR >= 0 dB: +3 dB).
    assert (out[:, :10] - mel[:, :10]).max() <= 0.031
    after = (out - mel)[:, 40:45].mean(1).mean(1)               # the tail just after the speech
    assert (after > 0.05).all()                                  # > 5 dB of echo in every row
    late = (out - mel)[:, 55:].mean()
    assert late < (out - mel)[:, 40:45].mean()                   # and it decays


def test_room_probabilities_pick_rows_and_zero_is_identity():
    mel = _speechlike(200)
    assert torch.equal(_room()(mel), mel)
    torch.manual_seed(0)
    out = _room(noise_prob=0.5)(mel)
    changed = ((out - mel).abs().amax((1, 2)) > 1e-6).float().mean()
    assert 0.35 < changed < 0.65


def _train_runs(model: ClsVC, plain: ClsVC, mel: torch.Tensor, lengths: torch.Tensor, seed: int = 3):
    """Both models' training passes over the same batch from the same random state."""
    out = []
    for m in (model, plain):
        m.train()
        torch.manual_seed(seed)
        out.append(m.run(mel, lengths))
    return out


def _loss_trains(model: ClsVC, mel: torch.Tensor, lengths: torch.Tensor, spk: torch.Tensor) -> None:
    loss, _ = model(mel, lengths, spk)
    loss.backward()
    assert torch.isfinite(loss)


def test_clsvc_reads_content_through_the_room_only_in_training():
    model, plain = _with_and_without(noise_prob=(1.0, 0.0), reverb_prob=(1.0, 0.0))
    assert model.room is not None and plain.room is None
    mel, lengths, spk = torch.rand(2, 16, 80) * 0.5 + 0.3, torch.tensor([16, 12]), torch.tensor([0, 2])
    assert torch.allclose(model.eval().run(mel, lengths).content, plain.eval().run(mel, lengths).content)
    noisy, clean = _train_runs(model, plain, mel, lengths)
    assert torch.allclose(noisy.speaker, clean.speaker)   # S_x reads the original
    assert not torch.allclose(noisy.content, clean.content)
    _loss_trains(model, mel, lengths, spk)


def test_room_speaker_reads_the_voice_through_a_room_of_its_own():
    """model.room_speaker: in training S_x is read from a room copy drawn apart from the content
    path's (the decoder's target stays clean); at inference both read the input as it is."""
    model, plain = _with_and_without(noise_prob=(1.0, 1.0), room_speaker=(True, False))
    mel, lengths = torch.rand(2, 16, 80) * 0.5 + 0.3, torch.tensor([16, 12])
    assert torch.allclose(model.eval().run(mel, lengths).speaker, plain.eval().run(mel, lengths).speaker)
    both, content_only = _train_runs(model, plain, mel, lengths)
    assert not torch.allclose(both.speaker, content_only.speaker)
    # The voice's room is drawn first, so the content path's own draw comes after it: remade here.
    torch.manual_seed(3)
    heard = model.room(mel)
    seen = model.room(mel)
    speaker, _, _ = model.encode(heard, lengths)
    _, content, _ = model.encode(seen, lengths)
    assert torch.allclose(both.speaker, speaker) and torch.allclose(both.content, content)
    _loss_trains(model, mel, lengths, torch.tensor([0, 2]))


@pytest.mark.parametrize("key, value", [("noise_prob", 1.5), ("reverb_prob", -0.1), ("noise_snr_db", 60),
                                        ("reverb_rt60", 0.05)])
def test_room_settings_out_of_range_are_config_errors(key, value):
    with pytest.raises(ClsvcError, match=f"model.{key}"):
        config_from_dict({"model": {key: value}}, "test")


def test_room_speaker_without_the_room_is_a_config_error():
    with pytest.raises(ClsvcError, match="model.room_speaker"):
        config_from_dict({"model": {"room_speaker": True}}, "test")
    config_from_dict({"model": {"room_speaker": True, "reverb_prob": 0.3}}, "test")


def _pseudo(prob: float, warp: float = 1.15) -> PseudoVoices:
    m = MelConfig()
    return PseudoVoices(m.n_mels, m.fmin, m.fmax, prob, warp)


def test_pseudo_voices_warp_the_picked_rows_and_leave_the_others():
    torch.manual_seed(0)
    mel = torch.zeros(64, 5, 80)
    mel[..., 40] = 1.0  # one band lit
    out, made = _pseudo(0.5)(mel)
    assert 16 < int(made.sum()) < 48
    assert torch.equal(out[~made], mel[~made])
    peak = (out[made] * torch.arange(80.0)).sum(-1) / out[made].sum(-1)  # centre of mass of each frame
    assert (peak - 40).abs().amin() > 0.05 and (peak < 40).any() and (peak > 40).any()
    assert out.min() >= 0 and out.max() <= 1
    same, none = _pseudo(0.0)(mel)
    assert torch.equal(same, mel) and not none.any()


def test_frame_ce_leaves_out_rows_without_a_label():
    logits, labels = torch.randn(4, 3), torch.tensor([0, IGNORE_LABEL, 2, IGNORE_LABEL])
    ce, acc = frame_ce(logits, labels, torch.ones(4, 1))
    kept = torch.tensor([0, 2])
    assert torch.allclose(ce, torch.nn.functional.cross_entropy(logits[kept], labels[kept]))
    assert acc == (logits[kept].argmax(-1) == labels[kept]).float().mean()
    ce, acc = frame_ce(logits, torch.full((4,), IGNORE_LABEL), torch.ones(4, 1))
    assert ce == 0 and acc == 0 and ce.requires_grad is logits.requires_grad


def test_pseudo_voice_rows_are_rebuilt_warped_and_teach_c1_nothing():
    """model.pseudo_voice_prob 1: every training row is a new voice, which E reads and the decoder
    must rebuild; C1 has no label for it. At inference the model is the plain one."""
    model, plain = _with_and_without(pseudo_voice_prob=(1.0, 0.0))
    mel, lengths, spk = torch.rand(2, 16, 80) * 0.5 + 0.3, torch.tensor([16, 12]), torch.tensor([0, 2])
    assert torch.allclose(model.eval().run(mel, lengths).speaker, plain.eval().run(mel, lengths).speaker)
    model.train()
    torch.manual_seed(5)
    loss, terms = model(mel, lengths, spk)
    loss.backward()
    assert torch.isfinite(loss) and terms["cls"] == 0
    assert all(p.grad is None or not p.grad.any() for p in model.speaker_classifier.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.adversary.parameters())  # C2 keeps the labels
    torch.manual_seed(5)
    warped, _ = model.pseudo(mel)  # the same draw: what the model read and had to rebuild
    assert not torch.allclose(warped, mel)
    _, again = clsvc_losses(model.run(warped, lengths), warped, spk, model.loss_cfg)
    assert torch.allclose(terms["recon"], again["recon"]) and torch.allclose(terms["adv"], again["adv"])


@pytest.mark.parametrize("settings, key", [({"pseudo_voice_prob": 1.5}, "model.pseudo_voice_prob"),
                                           ({"pseudo_voice_warp": 1.0}, "model.pseudo_voice_warp"),
                                           ({"pseudo_voice_prob": 0.3, "speaker_encoder": "dvector",
                                             "speaker_dim": 256}, "model.pseudo_voice_prob")])
def test_pseudo_voice_settings_out_of_range_are_config_errors(settings, key):
    with pytest.raises(ClsvcError, match=key):
        config_from_dict({"model": settings}, "test")
