"""The voice perturbation of the content path (models/augment.py) and its use in ClsVC."""

from __future__ import annotations

import torch

from clsvc.config import MelConfig, ModelConfig
from clsvc.models.augment import VoicePerturb
from clsvc.models.clsvc import ClsVC


def _perturb(warp: float, eq_db: float) -> VoicePerturb:
    m = MelConfig()
    return VoicePerturb(m.n_mels, m.fmin, m.fmax, warp, eq_db, -m.min_level_db)


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
    cfg = ModelConfig(n_speakers=3, speaker_dim=8, content_dim=4, enc_channels=16, enc_conv_layers=1,
                      enc_lstm_hidden=8, enc_lstm_layers=1, dec_pre_lstm=16, dec_channels=16, dec_conv_layers=1,
                      dec_lstm_hidden=16, dec_lstm_layers=1, postnet_channels=8, postnet_layers=2,
                      voice_warp=1.2, voice_eq_db=6.0)
    torch.manual_seed(0)
    model = ClsVC(cfg)
    plain = ClsVC(ModelConfig(**{**cfg.__dict__, "voice_warp": 1.0, "voice_eq_db": 0.0}))
    assert model.perturb is not None and plain.perturb is None
    # The perturbation holds no weights: checkpoints load across the setting.
    plain.load_state_dict(model.state_dict())
    mel, lengths, spk = torch.rand(2, 16, 80), torch.tensor([16, 12]), torch.tensor([0, 2])
    model.eval()
    a = model.run(mel, lengths)
    b = plain.eval().run(mel, lengths)
    assert torch.allclose(a.content, b.content)          # inference: no perturbation
    model.train()
    loss, _ = model(mel, lengths, spk)
    loss.backward()
    assert torch.isfinite(loss)
