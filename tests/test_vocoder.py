"""The Vocos vocoder: generator shapes and chunking, the torch mel against clsvc.audio, the
discriminators, and the two-phase GAN system's contract (idle phases, no D gradients from G's
loss, exportable generator). Tiny sizes throughout, so it runs in seconds on a busy CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clsvc.audio import wav_to_mel
from clsvc.config import MelConfig
from clsvc.pretrained import load_checkpoint
from clsvc.vocoder.discriminators import MultiPeriodDiscriminator, MultiResolutionDiscriminator
from clsvc.vocoder.losses import MelLoss, MultiResolutionSTFTLoss, discriminator_loss, feature_matching_loss
from clsvc.vocoder.system import VocoderConfig, VocoderSystem
from clsvc.vocoder.vocos import VocosGenerator

from helpers import TINY_VOCODER, features_with_wav, synth_utterance, write_corpus

HOP = 256


def tiny_cfg(**kw) -> VocoderConfig:
    """A vocoder of a few thousand weights; ``kw`` overrides VocoderConfig fields."""
    cfg = VocoderConfig(dim=16, intermediate=32, layers=2, mpd_periods=(2, 3), mpd_channels=(4, 8, 8),
                        mrd_resolutions=((512, 128, 512), (256, 64, 256)), mrd_channels=4, warmup_steps=0)
    return dataclasses.replace(cfg, **kw)


def batch(t: int = 16, b: int = 2, seed: int = 0):
    """(mel (B, T, 80), lengths (B,), speaker (B,), wav (B, T * hop)) from speech-like toys."""
    cfg = MelConfig()
    wavs = [synth_utterance(110.0 + 40 * i, 1.0 + 0.2 * i, seed=seed + i, seconds=t * HOP / 16000 + 0.1)
            for i in range(b)]
    wav = np.stack([w[: t * HOP] for w in wavs]).astype(np.float32)
    mel = np.stack([wav_to_mel(w, cfg)[:t] for w in wav])
    return (torch.from_numpy(mel), torch.full((b,), t), torch.zeros(b, dtype=torch.long), torch.from_numpy(wav))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("t", [1, 2, 7, 33])
def test_generator_gives_exactly_t_times_hop_samples(t):
    g = VocosGenerator(dim=16, intermediate=32, layers=2)
    wav = g(torch.rand(3, t, 80))
    assert wav.shape == (3, t * HOP) and wav.dtype == torch.float32
    assert torch.isfinite(wav).all()
    assert g.vocode(np.random.rand(t, 80).astype(np.float32)).shape == (t * HOP,)
    assert g.vocode(np.zeros((0, 80), np.float32)).shape == (0,)


def test_default_generator_size():
    g = VocosGenerator()
    n = sum(p.numel() for p in g.parameters())
    assert 7_000_000 < n < 8_500_000, n
    assert g.receptive_field == 3 * 9 + 2


def test_chunked_vocoding_matches_whole_input():
    g = VocosGenerator(dim=16, intermediate=32, layers=3).eval()
    mel = np.random.default_rng(0).random((700, 80), dtype=np.float32)
    whole = g(torch.from_numpy(mel)[None])[0].detach().numpy()
    chunked = g.vocode(mel, chunk=128, fade=16)
    assert chunked.shape == whole.shape == (700 * HOP,) and chunked.dtype == np.float32
    # Several windows and seams; the overlap exceeds the receptive field, so only rounding differs.
    assert np.abs(chunked - whole).max() < 1e-4 * max(1.0, np.abs(whole).max())
    # Without context the seams show: the test above can fail.
    seams = g.vocode(mel, chunk=128, fade=16, context=0)
    assert np.abs(seams - whole).max() > 1e-3 * np.abs(whole).max()


def test_torch_mel_matches_wav_to_mel():
    wav = synth_utterance(140.0, 1.0, seed=3, seconds=1.0).astype(np.float32)
    # Without the high-pass the two are the same computation: equal up to float rounding.
    cfg = dataclasses.replace(MelConfig(), highpass_hz=0.0)
    got = MelLoss(cfg).mel(torch.from_numpy(wav)[None])[0].numpy()
    ref = wav_to_mel(wav, cfg)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4
    # With clsvc's default 30 Hz high-pass (which MelLoss skips) only the clip edges, where
    # filtfilt's transients live, differ by more than 1e-3.
    cfg = MelConfig()
    got = MelLoss(cfg).mel(torch.from_numpy(wav)[None])[0].numpy()
    assert np.abs(got - wav_to_mel(wav, cfg))[4:-4].max() < 1e-3


def test_mel_and_stft_losses_ignore_padding():
    mel, lengths, _, wav = batch(t=16)
    valid = torch.tensor([16 * HOP, 8 * HOP])
    noisy = wav.clone()
    noisy[1, 8 * HOP:] = torch.randn(8 * HOP)  # garbage in row 1's padding only
    keep = (torch.arange(wav.shape[1])[None] < valid[:, None]).float()
    ml, stft = MelLoss(MelConfig()), MultiResolutionSTFTLoss()
    assert float(ml(noisy * keep, wav * keep, valid)) == 0.0
    assert all(float(x) < 1e-6 for x in stft(noisy * keep, wav * keep, valid))
    assert float(ml(noisy, wav)) > 0.01


def test_discriminator_outputs():
    wav = torch.randn(3, 4096)
    mpd = MultiPeriodDiscriminator(periods=(2, 3, 5), channels=(4, 8, 8))
    logits, feats = mpd(wav)
    assert len(logits) == len(feats) == 3
    assert all(x.shape[0] == 3 and x.dim() == 2 for x in logits)
    assert all(len(f) == 4 for f in feats)  # three convs + the output conv
    assert feats[1][0].shape[-1] == 3  # the period-3 fold
    mrd = MultiResolutionDiscriminator(resolutions=((512, 128, 512), (256, 64, 256)), channels=4)
    logits, feats = mrd(wav)
    assert len(logits) == len(feats) == 2
    assert all(x.shape[0] == 3 and x.dim() == 2 for x in logits)
    assert feats[0][0].shape == (3, 4, 257, 4096 // 128 + 1)
    total, real, fake = discriminator_loss(logits, logits)
    assert torch.allclose(total, real + fake)
    assert float(feature_matching_loss(feats, feats).detach()) == 0.0


def _steps(system: VocoderSystem, phase: str, n: int, lr: float) -> list[float]:
    mel, lengths, speaker, wav = batch()
    opt = torch.optim.Adam([p for g in system.param_groups(phase) for p in g["params"]], lr=lr)
    losses = []
    for _ in range(n):
        loss, _ = system(mel, lengths, speaker, phase, wav=wav)
        assert loss is not None
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def test_gen_phase_lowers_the_generator_loss_and_gives_d_no_gradients():
    system = VocoderSystem(tiny_cfg())
    mel, lengths, speaker, wav = batch()
    loss, terms = system(mel, lengths, speaker, "gen", wav=wav)
    assert loss is not None and {"mel", "stft_sc", "stft_mag", "g_adv", "fm", "total"} <= set(terms)
    loss.backward()
    assert all(p.grad is None for p in system.mpd.parameters())
    assert all(p.grad is None for p in system.mrd.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in system.generator.parameters())
    losses = _steps(system, "gen", 6, lr=3e-3)
    assert losses[-1] < losses[0], losses
    assert int(system.steps) == 7  # one per training-mode gen step


def test_disc_phase_lowers_the_discriminator_loss():
    system = VocoderSystem(tiny_cfg())
    losses = _steps(system, "disc", 6, lr=3e-3)
    assert losses[-1] < losses[0], losses
    assert int(system.steps) == 0  # only generator steps count
    assert all(p.grad is None for p in system.generator.parameters())


def test_disc_phase_is_idle_during_warmup_and_between_updates():
    system = VocoderSystem(tiny_cfg(warmup_steps=3, disc_every=2))
    mel, lengths, speaker, wav = batch(t=8)
    assert system(mel, lengths, speaker, "disc", wav=wav) == (None, {})
    assert not system.phase_active("disc") and system.phase_active("gen")
    _, terms = system(mel, lengths, speaker, "gen", wav=wav)
    assert "g_adv" not in terms  # reconstruction only during the warm-up
    system.steps.fill_(3)  # warm-up over, but 3 % 2 != 0
    assert system(mel, lengths, speaker, "disc", wav=wav)[0] is None
    system.eval()  # validation reports D's losses whenever the warm-up is over
    assert system(mel, lengths, speaker, "disc", wav=wav)[0] is not None
    system.train()
    system.steps.fill_(4)
    loss, terms = system(mel, lengths, speaker, "disc", wav=wav)
    assert loss is not None and "d_loss" in terms
    _, terms = system(mel, lengths, speaker, "gen", wav=wav)
    assert "g_adv" in terms and int(system.steps) == 5


def test_the_shipped_fine_tune_never_adds_the_discriminators():
    """`vocoder-h200-arctic-mel` (the shipped `arctic-vocoder`'s fine-tune) is reconstruction-only:
    no discriminator is built, and it keeps the generator and the rate of the adversarial
    fine-tune it replaced."""
    from clsvc.config import load_config

    cfg = load_config("vocoder-h200-arctic-mel")
    adversarial = load_config("vocoder-h200-arctic")  # the same fine-tune with discriminators (stop 34)
    assert not cfg.vocoder.adversarial and adversarial.vocoder.adversarial
    assert (cfg.vocoder.layers, cfg.vocoder.intermediate) == (adversarial.vocoder.layers, adversarial.vocoder.intermediate)
    assert (cfg.optim.lr, cfg.train.batch_size) == (adversarial.optim.lr, adversarial.train.batch_size)


def test_without_discriminators_only_the_reconstruction_losses_train():
    system = VocoderSystem(tiny_cfg(adversarial=False))
    assert system.mpd is None and system.mrd is None and system.param_groups("disc") == []
    assert not any(k.startswith(VocoderSystem.training_only) for k in system.state_dict())
    mel, lengths, speaker, wav = batch(t=8)
    system.steps.fill_(100)  # long past the warm-up (0 here): still no discriminator
    assert not system.phase_active("disc") and system(mel, lengths, speaker, "disc", wav=wav) == (None, {})
    loss, terms = system(mel, lengths, speaker, "gen", wav=wav)
    assert loss is not None and set(terms) == {"mel", "stft_sc", "stft_mag", "total"}
    # The generators of both kinds are interchangeable: the weights load either way.
    with_d = VocoderSystem(tiny_cfg())
    with_d.load_inference_state(system.inference_state_dict())
    system.load_inference_state(with_d.inference_state_dict())


def test_padding_is_ignored_by_the_generator_loss():
    system = VocoderSystem(tiny_cfg()).eval()
    mel, _, speaker, wav = batch(t=16)
    lengths = torch.tensor([16, 9])
    noisy = wav.clone()
    noisy[1, 9 * HOP:] = torch.randn(7 * HOP)
    a, _ = system(mel, lengths, speaker, "gen", wav=wav)
    b, _ = system(mel, lengths, speaker, "gen", wav=noisy)
    assert a is not None and b is not None and torch.allclose(a, b)
    with pytest.raises(Exception, match="wav"):
        system(mel, lengths, speaker, "gen", wav=wav[:, :-1])


def test_training_only_parts_and_generator_export():
    system = VocoderSystem(tiny_cfg())
    system.steps.fill_(11)
    keys = system.state_dict().keys()
    d_keys = [k for k in keys if k.startswith(VocoderSystem.training_only)]
    assert any(k.startswith("mpd.") for k in d_keys) and any(k.startswith("mrd.") for k in d_keys)
    n_disc = sum(p.numel() for p in system.mpd.parameters()) + sum(p.numel() for p in system.mrd.parameters())
    assert sum(system.state_dict()[k].numel() for k in d_keys) == n_disc
    exported = system.inference_state_dict()
    assert not any(k.startswith(("mpd.", "mrd.")) for k in exported)
    fresh = VocoderSystem(tiny_cfg())
    fresh.load_inference_state(exported)
    assert int(fresh.steps) == 11
    mel = np.random.default_rng(1).random((40, 80), dtype=np.float32)
    assert np.array_equal(fresh.vocode(mel), system.vocode(mel))
    with pytest.raises(RuntimeError):
        fresh.load_inference_state({k: v for k, v in exported.items() if not k.startswith("generator.head")})


def test_a_discriminator_family_can_be_left_out():
    # A cheap configuration for CPU runs: MPD alone (no MRD branches).
    system = VocoderSystem(tiny_cfg(mrd_resolutions=()))
    mel, lengths, speaker, wav = batch(t=8)
    for phase in system.phases:
        loss, terms = system(mel, lengths, speaker, phase, wav=wav)
        assert loss is not None and torch.isfinite(loss)
        loss.backward()
    assert float(terms["g_adv"]) > 0


# ----------------------------------------------------------------------------------------------
# through the toolkit: preprocessing with waveforms, the trainer's phases, resume, export



@pytest.fixture(scope="module")
def wav_features(corpus, tmp_path_factory):
    return features_with_wav(corpus, tmp_path_factory.mktemp("feats-wav"))


def test_kept_waveforms_are_the_samples_of_the_frames(wav_features):
    from clsvc.data import FeatureSet, read_manifest
    from clsvc.data.manifest import load_aligned_wav

    entries = read_manifest(wav_features)
    e = entries[0]
    wav = load_aligned_wav(wav_features, e, HOP)
    assert wav.dtype == np.int16 and len(wav) == e.frames * HOP
    # The kept samples are what the mel was made from: their mel is the stored feature (but for
    # the last frame, whose window reached past the cut to T * hop samples, and 16-bit rounding).
    mel = np.load(wav_features / e.feature)
    again = wav_to_mel(wav.astype(np.float32) / 32767.0, MelConfig())[: e.frames]
    assert np.abs(again - mel)[:-1].max() < 0.01
    data = FeatureSet(wav_features, ("train",), with_wav=True)
    b = data.sample(3, 16, torch.Generator().manual_seed(0), "utterance")
    assert b.wav is not None and b.wav.shape == (3, 16 * HOP) and b.extra().keys() == {"wav"}
    assert FeatureSet(wav_features, ("train",)).sample(3, 16, torch.Generator().manual_seed(0)).extra() == {}


def test_features_without_waveforms_are_refused_for_the_vocoder(features, tiny_cfg, tmp_path):
    from clsvc.errors import ClsvcError
    from clsvc.training import train

    with pytest.raises(ClsvcError, match="--keep-wav"):
        train(tiny_cfg(*TINY_VOCODER, "train.max_steps=2"), features, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_trainer_runs_idle_phases_resumes_exactly_and_exports(wav_features, tiny_cfg, trained_run, corpus,
                                                              tmp_path):
    import clsvc
    from clsvc.checkpoint import export_model, load_checkpoint
    from clsvc.training import read_log, train

    # On the CPU: CUDA's backward of reflection padding (the STFT losses, the MRD) sums with atomics,
    # so two fresh GPU runs already differ in the fifth digit at step 2 (seen on an H200, stop 35).
    cfg = tiny_cfg(*TINY_VOCODER, "train.max_steps=8")
    train(cfg, wav_features, tmp_path / "full", progress=False, device="cpu")
    rows = read_log(tmp_path / "full")
    assert [r["step"] for r in rows] == [2, 4, 6, 8]
    assert "d_loss" not in rows[0] and "d_loss" in rows[-1]  # the discriminators join after warm-up
    assert all("mel" in r for r in rows)
    train(tiny_cfg(*TINY_VOCODER, "train.max_steps=4"), wav_features, tmp_path / "part", progress=False,
          device="cpu")
    train(None, wav_features, tmp_path / "part", resume=True, progress=False, overrides=["train.max_steps=8"],
          device="cpu")
    resumed = read_log(tmp_path / "part")
    strip = [{k: v for k, v in r.items() if k != "minutes"} for r in rows]
    assert [{k: v for k, v in r.items() if k != "minutes"} for r in resumed] == strip
    wa = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    wb = load_checkpoint(tmp_path / "part" / "checkpoints" / "last.pt")
    assert all(torch.equal(wa["model"][k], wb["model"][k]) for k in wa["model"])
    assert wa["speaker_table"] is None and int(wa["model"]["steps"]) == 8
    out = export_model(tmp_path / "full" / "checkpoints" / "last.pt", tmp_path / "voc.pt")
    kept = load_checkpoint(out)["model"]
    assert kept and not any(k.startswith(("mpd.", "mrd.")) for k in kept)
    with pytest.raises(clsvc.ClsvcError, match="not a voice-conversion model"):
        clsvc.load(out)
    _use_as_vocoder(out, tmp_path)
    # The CLI converts through it: the output has the vocoder's length (frames * hop samples).
    import soundfile as sf

    from clsvc.cli import main

    wav_out = tmp_path / "conv.wav"
    assert main(["convert", "--checkpoint", str(trained_run / "checkpoints" / "last.pt"),
                 "--source", str(corpus / "spk_a" / "spk_a_001.wav"), "--target", str(corpus / "spk_b" / "spk_b_002.wav"),
                 "--out", str(wav_out), "--vocoder", str(out)]) == 0
    frames = len(wav_to_mel(sf.read(corpus / "spk_a" / "spk_a_001.wav")[0].astype(np.float32), MelConfig()))
    assert len(sf.read(wav_out)[0]) == frames * HOP


def test_a_run_without_discriminators_trains_resumes_and_starts_either_kind(wav_features, tiny_cfg, tmp_path):
    from clsvc.checkpoint import load_checkpoint
    from clsvc.training import read_log, train

    plain = [*TINY_VOCODER, "vocoder.adversarial=false"]
    train(tiny_cfg(*plain, "train.max_steps=4"), wav_features, tmp_path / "a", progress=False, device="cpu")
    train(None, wav_features, tmp_path / "a", resume=True, progress=False, overrides=["train.max_steps=8"],
          device="cpu")
    rows = read_log(tmp_path / "a")
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2, 4, 6, 8]
    assert not any(k.startswith(("d_", "g_adv", "fm")) for r in rows for k in r)  # past warm-up (4): still none
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert set(ckpt["optimizer"]) == {"gen"} and not any(k.startswith(("mpd.", "mrd.")) for k in ckpt["model"])
    # The same updates as a warm-up that outlasts the run (how the shipped file was trained).
    train(tiny_cfg(*TINY_VOCODER, "vocoder.warmup_steps=1000", "train.max_steps=8"), wav_features,
          tmp_path / "w", progress=False, device="cpu")
    warm = load_checkpoint(tmp_path / "w" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(v, warm[k]) for k, v in ckpt["model"].items())
    # Its generator starts an adversarial run (fresh discriminators), and an adversarial run's
    # checkpoint starts a reconstruction-only run (its discriminators left behind).
    train(tiny_cfg(*TINY_VOCODER, "train.max_steps=2"), wav_features, tmp_path / "b", progress=False, device="cpu",
          init=tmp_path / "a" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")
    assert set(b["optimizer"]) == {"disc", "gen"} and any(k.startswith("mpd.") for k in b["model"])
    train(tiny_cfg(*plain, "train.max_steps=2"), wav_features, tmp_path / "c", progress=False, device="cpu",
          init=tmp_path / "b" / "checkpoints" / "last.pt")
    assert set(load_checkpoint(tmp_path / "c" / "checkpoints" / "last.pt")["optimizer"]) == {"gen"}


def _use_as_vocoder(path, tmp_path):
    """A trained vocoder file as ``--vocoder``: converts at frames * hop samples, chunked like the
    whole; another mel definition and a VC model in its place are one-line refusals."""
    from clsvc.checkpoint import load_checkpoint, save_checkpoint
    from clsvc.errors import ClsvcError
    from clsvc.vocoder import NeuralVocoder, get_vocoder

    voc = get_vocoder(path, MelConfig())
    assert isinstance(voc, NeuralVocoder)
    mel = wav_to_mel(synth_utterance(150.0, 1.0, seed=5, seconds=2.0), MelConfig())
    wav = voc(mel)
    assert wav.dtype == np.float32 and wav.shape == (len(mel) * HOP,) and np.isfinite(wav).all()
    ckpt = load_checkpoint(path)
    ckpt["config"]["mel"]["fmin"] = 100.0
    other = save_checkpoint(tmp_path / "other-mel.pt", ckpt)
    with pytest.raises(ClsvcError, match="another mel definition.*mel.fmin"):
        get_vocoder(other, MelConfig())
    with pytest.raises(ClsvcError, match="no such file"):
        get_vocoder(tmp_path / "nope.pt", MelConfig())


def test_a_vc_model_is_not_a_vocoder_and_convert_takes_a_vocoder(trained_run, tmp_path):
    import clsvc
    from clsvc.errors import ClsvcError
    from clsvc.vocoder import get_vocoder

    ckpt = trained_run / "checkpoints" / "last.pt"
    with pytest.raises(ClsvcError, match="not a vocoder"):
        get_vocoder(ckpt, MelConfig())
    with pytest.raises(ClsvcError, match="no such file"):
        clsvc.load(ckpt, vocoder=str(tmp_path / "missing.pt"))


def test_neural_vocoder_output_is_clipped_to_full_scale():
    import numpy as np

    from clsvc.vocoder import NeuralVocoder

    class Loud:
        def eval(self):
            return self

        def vocode(self, mel):
            return np.array([-3.0, -0.5, 0.25, 1.7], dtype=np.float32)

    out = NeuralVocoder(Loud(), "loud", 0)(np.zeros((1, 80), np.float32))
    assert out.tolist() == [-1.0, -0.5, 0.25, 1.0]


def test_the_gpu_recipe_script_trains_resumes_fine_tunes_and_exports(tmp_path, trained_run):
    """scripts/train-vocoder-gpu.sh, the recipe of the shipped vocoder, from audio folders to a
    float16 vocoder file; run again, it resumes its run; with INIT and VC it fine-tunes that vocoder
    on the VC model's reconstructions (here on the CPU, with tiny sizes)."""
    corpus = write_corpus(tmp_path / "corpus", n_utts=4)
    for spk in sorted(p for p in corpus.iterdir() if p.is_dir()):  # the script holds out arctic_b* prompts
        next(iter(sorted(spk.glob("*.wav")))).rename(spk / "arctic_b0490.wav")
    script = Path(__file__).resolve().parents[1] / "scripts" / "train-vocoder-gpu.sh"
    tiny = [o for o in TINY_VOCODER if not o.startswith(("model.system", "train."))]
    env = dict(os.environ, PYTHON=sys.executable)
    run = tmp_path / "run"
    for steps in (2, 3):
        overrides = [*tiny, "train.max_minutes=0", f"train.max_steps={steps}", "train.batch_size=2",
                     "train.val_every=2", "train.ckpt_every=2", "train.val_batches=1", "train.threads=1"]
        done = subprocess.run(["bash", str(script), str(run), str(corpus), "--", *overrides], env=env,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
    ckpt, _ = load_checkpoint(run / "vocoder.pt", "vocoder")
    assert ckpt["step"] == 3 and ckpt["dtype"] == "float16"
    rows = [json.loads(line) for line in (run / "train" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [2, 3]  # the second run went on from step 2

    env |= {"INIT": str(run / "vocoder.pt"), "VC": str(trained_run / "checkpoints" / "last.pt"),
            "CONFIG": "vocoder-cpu"}
    done = subprocess.run(["bash", str(script), str(tmp_path / "ft"), str(corpus), "--", *overrides], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "reconstructed by" in done.stdout and (tmp_path / "ft" / "rec" / "manifest.tsv").is_file()
    assert "# initialised from " + str(run / "vocoder.pt") in (tmp_path / "ft" / "train" / "config.yaml").read_text()
    ckpt, _ = load_checkpoint(tmp_path / "ft" / "vocoder.pt", "vocoder")
    assert ckpt["dtype"] == "float16"
