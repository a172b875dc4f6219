"""``clsvc demo``: voice conversion of real speech with a pretrained model, in well under a minute.

:func:`run_demo` (``clsvc demo``) trains nothing. It loads a VC model once (the shipped ``arctic``
model by default, or any checkpoint) and converts the short real clips shipped in
``clsvc/resources/demo`` (LibriSpeech test-other, CC BY 4.0, and held-out ARCTIC prompts; see
``CREDITS.md`` and ``clips.json`` there):

* every *source* clip (two LibriSpeech speakers never trained on, and the ARCTIC voices bdl and
  slt) into each of the model's ARCTIC voices, picked by name like ``--target-speaker`` (a voice
  the model was not trained on is converted one-shot from its shipped clip instead);
* every source one-shot into an unseen LibriSpeech speaker, from that speaker's 3 reference clips.

It writes ``OUT/converted/SRC_to_TGT.wav`` (and every shipped clip as ``OUT/originals/*.wav`` to
listen against), ``OUT/results.md`` + ``results.json`` (per conversion: Resemblyzer cosine of the
converted audio to the target voice and to the source voice, whether it is closer to the target,
and DNSMOS OVRL when ``speechmos`` is installed) and ``OUT/spectrograms.png`` (source vs converted
mels, when matplotlib is installed). The target voice's Resemblyzer reference is its shipped
ARCTIC clip, or the centroid of the 3 references for the one-shot voice; the source voice's is
the source clip itself.

:func:`run_training_demo` (``clsvc demo --train``) is the whole pipeline from scratch on a machine
with no data of the user's:

1. Synthesise a small multi-voice parallel corpus with espeak-ng (Harvard sentences; several
   accents, variants, pitches and speeds). The last voice is kept out of training.
2. Preprocess it (the last 10 sentences of every voice held out).
3. Train ``configs/cpu.yaml`` for a number of steps (:data:`DEFAULT_STEPS`), printing after the
   first steps how long the rest will take at the measured speed (and a warning when that is more
   than twice what an idle 2-core machine needs).
4. Convert held-out sentences: each training voice into the next one (many-to-many) and into the
   unseen voice from 3 reference utterances (one-shot).
5. Score each conversion with Resemblyzer: cosine to the target voice vs to the source voice, and
   write ``results.md`` / ``results.json`` next to the wavs.

Each step of ``--train`` is skipped when its output is already there (a stopped training run
continues up to ``--steps``), so a second run only re-scores.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ClsvcError
from .files import atomic_path, atomic_write_text, read_utf8
from .pretrained import DEFAULT_VOCODER, vocoder_file

#: The shipped VC model that ``clsvc demo`` uses when ``--checkpoint`` is not given.
DEFAULT_CHECKPOINT = "arctic"
#: The folder of the shipped demo clips (16 kHz mono FLAC, ``clips.json``, ``CREDITS.md``).
CLIPS_DIR = Path(__file__).resolve().parent / "resources" / "demo"
CREDIT = ("clips: LibriSpeech test-other (CC BY 4.0, Panayotov et al. 2015) and ARCTIC (CMU ARCTIC licence; "
          "cathy CC0)")

# (espeak-ng voice+variant, pitch 0-99, words per minute, gender). Distinct accents, variants,
# pitches and speeds, so that the voices differ the way speakers do.
VOICES = [
    ("en-us+m1", 40, 160, "M"), ("en-gb+f2", 70, 165, "F"), ("en-us+m3", 50, 150, "M"),
    ("en-gb-scotland+f4", 75, 155, "F"), ("en-029+m5", 35, 160, "M"), ("en-us+f1", 60, 170, "F"),
    ("en-gb-x-rp+m7", 45, 150, "M"), ("en-us+f5", 65, 160, "F"), ("en-gb+m2", 55, 165, "M"),
    ("en-us+f3", 70, 150, "F"), ("en-gb-x-rp+m6", 30, 155, "M"), ("en-us+Linda", 68, 160, "F"),
]
HELD_OUT = 10  # last sentences of every voice, never trained on
#: Training steps of ``clsvc demo --train``. The former 12-minute budget reached 2,000-3,000
#: steps on an idle 2-core machine and converted (BENCHMARKS.md: 7/7 seen, 6/7 one-shot closer to
#: the target); 185 steps under load did not. This is the top of that range.
DEFAULT_STEPS = 3000
#: Seconds per step of configs/cpu.yaml on an idle 2-core machine (12 minutes / 3,000 steps): the
#: expected duration printed before training, and the speed a warning compares the measured one to.
EXPECTED_S_PER_STEP = 0.24
MEASURE_STEPS = 20  # steps timed (after the first logged row) for the printed estimate
QUICK_STEPS = 30  # --quick


# ---------------------------------------------------------------------------------------------
# clsvc demo: the shipped clips through a pretrained model


@dataclass(frozen=True)
class DemoClip:
    """One shipped clip (an entry of ``clips.json``): a 16 kHz mono FLAC file of 2.5-5 s.

    ``roles``: ``source`` (converted into every target voice), ``voice`` (the Resemblyzer
    reference of an ARCTIC voice) and/or ``one-shot`` (a reference clip of the unseen target).
    """

    path: Path
    speaker: str
    roles: tuple[str, ...]
    gender: str
    corpus: str
    transcript: str | None


@dataclass(frozen=True)
class Target:
    """A voice to convert into: by training-speaker ``name`` (``kind`` ``"seen"``) or one-shot
    from ``refs`` (``"one-shot"``); ``refs`` are also its Resemblyzer reference."""

    name: str
    kind: str
    refs: tuple[DemoClip, ...]


def demo_clips(folder: Path = CLIPS_DIR) -> list[DemoClip]:
    """The clips listed in ``folder/clips.json``; a missing or damaged list is one ClsvcError line."""
    path = folder / "clips.json"
    reinstall = "reinstall clsvc (pip install --force-reinstall clsvc)"
    if not path.is_file():
        raise ClsvcError(f"{path}: the demo's clip list is missing; {reinstall}")
    try:
        rows = json.loads(read_utf8(path, "demo clip list"))["clips"]
        clips = [DemoClip(folder / r["file"], str(r["speaker"]), tuple(r["roles"]), str(r["gender"]),
                          str(r["corpus"]), r.get("transcript")) for r in rows]
    except (ValueError, KeyError, TypeError) as e:
        raise ClsvcError(f"{path}: the demo's clip list is damaged ({type(e).__name__}: {e}); {reinstall}") from None
    for c in clips:
        if not c.path.is_file():
            raise ClsvcError(f"{c.path}: a demo clip listed in {path.name} is missing; {reinstall}")
    return clips


def plan_targets(clips: Sequence[DemoClip], speakers: Sequence[str], by_name: bool,
                 one_shot: bool) -> tuple[list[Target], list[str]]:
    """The voices a model converts into, and notes on what it cannot do.

    Each ARCTIC voice (a ``voice`` clip) is taken by name when the model has it among its
    ``speakers`` and a speaker table (``by_name``), else one-shot from its clip when the model
    takes reference audio (``one_shot``); the unseen speaker of the ``one-shot`` clips needs
    ``one_shot``. A model with no voice to offer is one ClsvcError line.
    """
    targets: list[Target] = []
    notes: list[str] = []
    for clip in (c for c in clips if "voice" in c.roles):
        if by_name and clip.speaker in speakers:
            targets.append(Target(clip.speaker, "seen", (clip,)))
        elif one_shot:
            targets.append(Target(clip.speaker, "one-shot", (clip,)))
            notes.append(f"{clip.speaker} is not a training speaker of this model: converted one-shot from its "
                         f"clip, which is also its similarity reference (flatters the cosine)")
        else:
            notes.append(f"{clip.speaker} skipped: not a training speaker of this model, which has no one-shot")
    refs = tuple(c for c in clips if "one-shot" in c.roles)
    if refs:
        if one_shot:
            targets.append(Target(refs[0].speaker, "one-shot", refs))
        else:
            notes.append(f"{refs[0].speaker} (one-shot) skipped: this model converts only into its training "
                         "speakers")
    if not targets:
        raise ClsvcError("this model has none of the demo's voices (bdl, slt, cathy) among its training speakers "
                         "and no one-shot conversion; pass a ClsVC or AutoVC model to --checkpoint")
    return targets, notes


def _missing_model(checkpoint: str) -> ClsvcError:
    train = ("run `clsvc demo --train` to train a small model from scratch first (about "
             f"{_duration(DEFAULT_STEPS * EXPECTED_S_PER_STEP)} on 2 CPU cores) or pass --checkpoint PATH "
             "(a checkpoint or exported model)")
    if checkpoint == DEFAULT_CHECKPOINT:
        return ClsvcError(f"the demo's pretrained model {checkpoint!r} does not ship with this version of clsvc "
                          f"(`clsvc models` lists what does); {train}")
    return ClsvcError(f"{checkpoint}: no such checkpoint file and no shipped model of that name (`clsvc models` "
                      f"lists them); {train}")


def _dnsmos_scorer() -> Callable[[np.ndarray, int], dict[str, float]] | None:
    """DNSMOS (:func:`clsvc.evaluation.quality.dnsmos`) when speechmos can be imported, else None."""
    from .evaluation.inputs import require
    from .evaluation.quality import dnsmos

    try:
        require("speechmos.dnsmos", "dnsmos")
    except ClsvcError:
        return None
    return dnsmos


def _check_out(out: Path, force: bool) -> None:
    """Refuse (one ClsvcError line) an ``out`` that already holds a demo's results, unless ``force``."""
    if out.exists() and not out.is_dir():
        raise ClsvcError(f"{out}: is a file, not a folder; choose another --out")
    if not force and any((out / p).exists() for p in ("results.json", "results.md", "converted")):
        raise ClsvcError(f"{out}: already holds a demo's results; pass --force to replace them or choose "
                         "another --out")


def _prepare_out(out: Path) -> None:
    """Make ``out/converted`` and ``out/originals``, emptied of the wavs of an earlier demo."""
    if out.is_dir():
        for sub in ("converted", "originals"):
            for f in (out / sub).glob("*.wav") if (out / sub).is_dir() else ():
                f.unlink()
    try:
        for sub in ("converted", "originals"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{out}: cannot create the demo folder ({e.strerror}); choose another --out") from None


def run_demo(out: Path, checkpoint: str | None = None, vocoder: str = DEFAULT_VOCODER,
             force: bool = False) -> dict[str, Any]:
    """Convert the shipped clips with ``checkpoint`` (default: the shipped ``arctic`` model) and
    score them into ``out``; returns what ``results.json`` holds. See the module docstring.

    Torch runs on one thread meanwhile (restored after): batch-1 inference gains little from
    more, and on a busy 2-core machine a second thread made it 5x slower (99 s against 20 s)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_demo(out, checkpoint, vocoder, force)
    finally:
        torch.set_num_threads(threads)


def _run_demo(out: Path, checkpoint: str | None, vocoder: str, force: bool) -> dict[str, Any]:
    from .audio import save_wav
    from .dvector import embed_wav
    from .evaluation.similarity import centroid, cosine
    from .inference import load
    from .pretrained import shipped

    began = time.monotonic()
    vocoder_file(vocoder)  # an unknown --vocoder is reported before anything is written
    name = checkpoint or DEFAULT_CHECKPOINT
    if not Path(name).is_file() and shipped(name, "vc") is None:
        raise _missing_model(name)
    vocoder_file(vocoder, name)  # and so is a broken card's ("auto": the model's own vocoder)
    clips = demo_clips()
    _check_out(out, force)

    vc = load(name, vocoder=vocoder)
    vocoder = vc.vocoder_name  # "auto" as resolved: the model's own vocoder
    _prepare_out(out)
    print(f"[1/4] loaded {name} ({vc.system}, {vc.step:,} training steps; vocoder {vocoder})")
    targets, notes = plan_targets(clips, vc.speakers, vc.speaker_table is not None, vc.one_shot)
    sources = [c for c in clips if "source" in c.roles]
    pairs = [(s, t) for s in sources for t in targets if s.speaker != t.name]
    print(f"[2/4] converting {len(sources)} real clips into {len(targets)} voices ({len(pairs)} conversions: "
          f"{', '.join(f'{t.name} ({t.kind})' for t in targets)}) -> {out / 'converted'}")
    for note in notes:
        print(f"      note: {note}")
    for c in clips:  # every shipped clip as wav, to listen against the conversions
        save_wav(out / "originals" / f"{c.path.stem}.wav", vc.reference(c.path).audio(), vc.sample_rate)
    src_refs = {s.speaker: vc.reference(s.path) for s in sources}
    voices = {t.name: vc.speaker_embedding(t.name) if t.kind == "seen" else vc.embed([c.path for c in t.refs])
              for t in targets}
    results: list[dict[str, Any]] = []
    mels: dict[tuple[str, str], np.ndarray] = {}
    for s, t in pairs:
        mel = vc.convert_mel(src_refs[s.speaker], voices[t.name])
        wav = vc.vocode(mel)
        path = out / "converted" / f"{s.speaker}_to_{t.name}.wav"
        save_wav(path, wav, vc.sample_rate)
        mels[(s.speaker, t.name)] = mel
        results.append({"source": s.speaker, "target": t.name, "kind": t.kind,
                        "file": str(path.relative_to(out)), "wav": wav})

    scorer = _dnsmos_scorer()
    print("[3/4] scoring: Resemblyzer cosine to the target and source voices"
          + (", DNSMOS" if scorer else " (DNSMOS skipped: speechmos not installed)"))
    clip_emb = {c.path: embed_wav(c.path) for c in clips}
    prints = {t.name: centroid([clip_emb[c.path] for c in t.refs]) for t in targets}
    prints.update({s.speaker: clip_emb[s.path] for s in sources})
    for r in results:
        wav = r.pop("wav")
        emb = embed_wav(wav, vc.sample_rate)
        r["cos_target"] = cosine(emb, prints[r["target"]])
        r["cos_source"] = cosine(emb, prints[r["source"]])
        r["closer_to_target"] = r["cos_target"] > r["cos_source"]
        r["cos_target_before"] = cosine(prints[r["source"]], prints[r["target"]])  # the source clip itself
        if scorer is not None:
            r["dnsmos_ovrl"] = scorer(wav, vc.sample_rate)["ovrl"]
    source_ovrl = ({s.speaker: scorer(src_refs[s.speaker].audio(), vc.sample_rate)["ovrl"] for s in sources}
                   if scorer is not None else {})

    summary: dict[str, dict[str, float]] = {}
    for kind in ("seen", "one-shot"):
        rs = [r for r in results if r["kind"] == kind]
        if rs:
            summary[kind] = {"n": len(rs), **{k: float(np.mean([r[k] for r in rs])) for k in
                                              ("cos_target", "cos_source", "closer_to_target", "cos_target_before")
                                              + (("dnsmos_ovrl",) if scorer else ())}}
    print("[4/4] writing results.md, results.json" + (", spectrograms.png" if _has_matplotlib() else ""))
    figure = _spectrograms(out / "spectrograms.png", {k: v.mel for k, v in src_refs.items()}, mels, targets,
                           vc.mel_cfg)
    doc = {"model": {"checkpoint": name, "system": vc.system, "step": vc.step}, "vocoder": vocoder,
           "dnsmos": scorer is not None, "results": results, "summary": summary,
           "source_dnsmos_ovrl": source_ovrl, "notes": notes, "credit": CREDIT,
           "seconds": round(time.monotonic() - began, 1)}
    table = _table(results, summary, scorer is not None)
    md = [f"# clsvc demo: {name}\n",
          f"Real clips converted by `{name}` ({vc.system}, {vc.step:,} steps) with the {vocoder} vocoder. "
          "Resemblyzer cosine of each converted file to the target voice (its shipped ARCTIC clip, or the "
          "centroid of the 3 reference clips of the one-shot voice) and to the source voice (the source clip); "
          "*closer* = more like the target than like the source.\n"]
    if scorer is None:
        md.append("DNSMOS OVRL is omitted: speechmos is not installed (pip install 'clsvc[eval]').\n")
    md += [table, ""]
    if source_ovrl:
        md.append("DNSMOS OVRL of the sources themselves: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in source_ovrl.items()) + ".\n")
    md += [f"Note: {n}.\n" for n in notes]
    md.append(f"Listen: `converted/` (SRC_to_TGT.wav), `originals/` (the clips). {CREDIT}; see CREDITS.md in "
              "clsvc/resources/demo.\n")
    atomic_write_text(out / "results.md", "\n".join(md))
    atomic_write_text(out / "results.json", json.dumps(doc, indent=2) + "\n")
    print(table)
    print(f"\nconverted wavs in {out / 'converted'} (originals in {out / 'originals'}); table in {out / 'results.md'}"
          + (f"; spectrograms in {figure}" if figure else " (no spectrograms.png: matplotlib not installed)"))
    print(f"done in {doc['seconds']:.0f} s. {CREDIT}.")
    return doc


def _table(results: list[dict[str, Any]], summary: dict[str, dict[str, float]], dnsmos: bool) -> str:
    """The markdown results table and one summary line per kind."""
    head = "| conversion | kind | cos to target | cos to source | closer to target |" + (" DNSMOS OVRL |" if dnsmos
                                                                                       else "")
    lines = [head, "|---|---|---|---|---|" + ("---|" if dnsmos else "")]
    for r in results:
        lines.append(f"| {r['source']} → {r['target']} | {r['kind']} | {r['cos_target']:.3f} | "
                     f"{r['cos_source']:.3f} | {'yes' if r['closer_to_target'] else 'no'} |"
                     + (f" {r['dnsmos_ovrl']:.2f} |" if dnsmos else ""))
    lines.append("")
    for kind, s in summary.items():
        q = f"; DNSMOS OVRL {s['dnsmos_ovrl']:.2f}" if "dnsmos_ovrl" in s else ""
        lines.append(f"**{kind}**: {s['n']:.0f} conversions, mean cosine to target {s['cos_target']:.3f} vs to source "
                     f"{s['cos_source']:.3f} (source clip to target: {s['cos_target_before']:.3f}); "
                     f"{100 * s['closer_to_target']:.0f}% closer to the target{q}.")
    return "\n".join(lines)


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _spectrograms(path: Path, sources: dict[str, np.ndarray], mels: dict[tuple[str, str], np.ndarray],
                  targets: Sequence[Target], mel_cfg: Any) -> Path | None:
    """``path``: source mel | converted mel for one conversion into each target (a different source
    each time where possible). ``sources``: speaker -> mel (frames, n_mels) in [0, 1]; ``mels``:
    (source, target) -> converted mel of the same shape. None (nothing written) without matplotlib."""
    if not _has_matplotlib():
        return None
    from matplotlib.figure import Figure

    rows: list[tuple[str, str]] = []
    names = list(sources)
    for i, t in enumerate(targets):
        order = names[i % len(names):] + names[:i % len(names)]
        src = next((s for s in order if (s, t.name) in mels), None)
        if src is not None:
            rows.append((src, t.name))
    kinds = {t.name: t.kind for t in targets}
    fig = Figure(figsize=(10, 2.2 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 2, squeeze=False)
    for (src, tgt), (a, b) in zip(rows, axes, strict=True):
        for ax, mel, title in ((a, sources[src], f"source: {src}"),
                               (b, mels[(src, tgt)], f"{src} → {tgt} ({kinds[tgt]})")):
            ax.imshow(np.asarray(mel).T, origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="magma")
            ax.set_title(title, fontsize=9)
            ax.set_ylabel("mel bin", fontsize=8)
            ax.tick_params(labelsize=7)
        a.set_xlabel(f"frame ({mel_cfg.hop_length / mel_cfg.sample_rate * 1000:.0f} ms)", fontsize=8)
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path


# ---------------------------------------------------------------------------------------------
# clsvc demo --train: synthesise, train from scratch, convert, score


def _duration(seconds: float) -> str:
    """``"about"``-style duration: ``"40 s"``, ``"11 min"``, ``"1 h 20 min"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


class StepTimer:
    """``on_log`` callback of :func:`clsvc.training.train` that measures the speed of training.

    It times the :data:`MEASURE_STEPS` steps after the first logged row (the first steps pay
    for start-up) and then prints, once, how long all ``steps`` will take at that speed (and
    how long is left), with a warning when the speed is under half of ``expected`` seconds per
    step (a busy or slow machine). ``write`` prints a line (``tqdm.write`` beside a progress bar).
    """

    def __init__(self, steps: int, expected: float = EXPECTED_S_PER_STEP, measure: int = MEASURE_STEPS,
                 write: Callable[[str], None] = print):
        self.steps, self.expected, self.measure, self.write = steps, expected, measure, write
        self.first: tuple[int, float] | None = None  # (step, minutes) of the first logged row
        self.s_per_step: float | None = None

    def __call__(self, kind: str, step: int, row: dict[str, float]) -> None:
        if kind != "train" or self.s_per_step is not None or "minutes" not in row:
            return
        if self.first is None:
            self.first = (step, row["minutes"])
            return
        step0, minutes0 = self.first
        if step - step0 < self.measure or step >= self.steps:
            return
        self.s_per_step = s = max((row["minutes"] - minutes0) * 60 / (step - step0), 0.0)
        self.write(f"training {self.steps:,} steps, about {_duration(self.steps * s)} at {s:.2f} s/step "
                   f"(measured over steps {step0}-{step}; {_duration((self.steps - step) * s)} left)")
        if s > 2 * self.expected:
            self.write(f"warning: {s:.2f} s/step is more than twice the {self.expected:.2f} s/step of an idle 2-core "
                       f"machine: this machine is busy or slow, and training will take about "
                       f"{_duration(self.steps * s)} instead of {_duration(self.steps * self.expected)}. Ctrl-C stops "
                       "it (the model is saved); `clsvc demo --train` again continues, or pass fewer --steps")


def sentences() -> list[str]:
    """The demo's sentences (Harvard sentences shipped with the package)."""
    text = resources.files("clsvc").joinpath("resources/harvard.txt").read_text()
    return [s.strip() for s in text.splitlines() if s.strip()]


def synthesise(corpus: Path, n_voices: int, n_sentences: int) -> None:
    """Write ``corpus/vNN/vNN_MMM.wav`` (espeak-ng), ``speakers.tsv`` and ``sentences.txt``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise ClsvcError(
            "espeak-ng not found; install it (Debian/Ubuntu: sudo apt-get install espeak-ng, "
            "macOS: brew install espeak-ng) and run `clsvc demo --train` again"
        )
    texts = sentences()[:n_sentences]
    corpus.mkdir(parents=True, exist_ok=True)
    jobs = []
    for v in range(n_voices):
        name = f"v{v:02d}"
        voice, pitch, speed, _ = VOICES[v]
        (corpus / name).mkdir(exist_ok=True)
        for i, text in enumerate(texts, start=1):
            out = corpus / name / f"{name}_{i:03d}.wav"
            if not out.exists():
                jobs.append((voice, pitch, speed, text, out))

    def run(job):
        voice, pitch, speed, text, out = job
        tmp = out.with_name(f".{out.name}")
        r = subprocess.run([exe, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(tmp), text],
                           capture_output=True, text=True)
        if r.returncode != 0 or not tmp.exists():
            raise ClsvcError(f"espeak-ng failed for voice {voice}: {r.stderr.strip() or r.returncode}")
        tmp.replace(out)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(run, jobs))
    (corpus / "sentences.txt").write_text("\n".join(texts) + "\n")
    rows = [f"v{v:02d}\t{VOICES[v][0]}\t{VOICES[v][3]}" for v in range(n_voices)]
    (corpus / "speakers.tsv").write_text("speaker\tvoice\tgender\n" + "\n".join(rows) + "\n")


def run_training_demo(out: Path, steps: int | None = None, voices: int = 8, force: bool = False,
                      quick: bool = False, vocoder: str = DEFAULT_VOCODER) -> dict:
    """Synthesise voices, train ``steps`` steps (default :data:`DEFAULT_STEPS`, or
    :data:`QUICK_STEPS` with ``quick``), convert held-out sentences and score them into ``out``."""
    from tqdm import tqdm

    from .audio import load_wav, save_wav
    from .checkpoint import load_checkpoint
    from .config import load_config
    from .data import SplitSpec, preprocess
    from .dvector import embed_wav
    from .evaluation.similarity import centroid, cosine
    from .inference import load
    from .training import train

    if not 4 <= voices <= len(VOICES):
        raise ClsvcError(f"--voices must be between 4 and {len(VOICES)}")
    if steps is None:
        steps = QUICK_STEPS if quick else DEFAULT_STEPS
    if steps < 1:
        raise ClsvcError(f"--steps {steps}: give a positive number of training steps (default {DEFAULT_STEPS:,})")
    vocoder_file(vocoder)  # an unknown --vocoder is reported before minutes of training
    n_sent = 14 if quick else 40
    held = 2 if quick else HELD_OUT
    if quick:
        voices = 4
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ClsvcError(f"{out}: cannot create the demo folder ({e.strerror}); choose another --out") from None

    print(f"[1/5] synthesising {voices} voices x {n_sent} sentences with espeak-ng -> {out / 'corpus'}")
    corpus = out / "corpus"
    synthesise(corpus, voices, n_sent)
    names = [f"v{v:02d}" for v in range(voices)]
    unseen, seen = names[-1], names[:-1]

    print("[2/5] preprocessing")
    feats = out / "features"
    budget = [f"train.max_steps={steps}", "train.max_minutes=0", "train.log_every=10"]
    cfg = load_config("cpu", budget + ([f"train.ckpt_every={steps}", f"train.val_every={steps}"] if quick else []))
    first_test = n_sent - held + 1
    regex = "_(" + "|".join(f"{i:03d}" for i in range(first_test, n_sent + 1)) + ")$"
    preprocess(corpus, feats, cfg.mel, split=SplitSpec(unseen=[unseen], holdout_regex=regex),
               progress=not quick)

    run = out / "run"
    last = run / "checkpoints" / "last.pt"
    if force and run.exists():
        shutil.rmtree(run)
    done = int(load_checkpoint(last)["step"]) if last.exists() else 0
    timer = StepTimer(steps, write=tqdm.write)
    if done >= steps:
        print(f"[3/5] found a trained model in {run} ({done:,} steps; pass --force to retrain)")
    else:
        left = steps - done
        start = f"continuing the model in {run} from step {done:,} to" if done else "training configs/cpu.yaml for"
        print(f"[3/5] {start} {steps:,} steps: about {_duration(left * EXPECTED_S_PER_STEP)} on an idle 2-core "
              f"machine ({EXPECTED_S_PER_STEP:.2f} s/step); the estimate at this machine's speed follows after "
              f"about {10 + MEASURE_STEPS} steps ({'' if quick else 'progress bar below; '}TensorBoard: {run / 'tb'})")
        if done:
            train(None, feats, run, resume=True, progress=not quick, on_log=timer, overrides=budget)
        else:
            train(cfg, feats, run, progress=not quick, on_log=timer)

    print("[4/5] converting held-out sentences")
    vc = load(last, vocoder=vocoder)
    conv_dir = out / "converted"
    conv_dir.mkdir(exist_ok=True)
    test_ids = list(range(first_test, n_sent + 1))

    def wav(v: str, i: int) -> Path:
        return corpus / v / f"{v}_{i:03d}.wav"

    refs = [wav(unseen, i) for i in (1, 2, 3)]
    jobs = []
    for k, src in enumerate(seen):
        sent = test_ids[k % len(test_ids)]
        jobs.append((src, seen[(k + 1) % len(seen)], sent, "seen"))
        jobs.append((src, unseen, test_ids[(k + 1) % len(test_ids)], "one-shot"))
    results: list[dict[str, Any]] = []
    for src, tgt, sent, kind in jobs:
        if kind == "seen":
            y = vc.convert(wav(src, sent), target_speaker=tgt)
        else:
            y = vc.convert(wav(src, sent), refs)
        path = conv_dir / f"{src}-to-{tgt}_{sent:03d}.wav"
        save_wav(path, y, vc.sample_rate)
        results.append({"source": src, "target": tgt, "sentence": sent, "kind": kind,
                        "file": str(path.relative_to(out)), "wav": y})

    print("[5/5] scoring with Resemblyzer (cosine to each voice's centroid of training sentences)")
    train_ids = range(1, 4 if quick else min(11, first_test))
    cents = {v: centroid([embed_wav(load_wav(wav(v, i), vc.mel_cfg)) for i in train_ids]) for v in names}
    for r in results:
        emb = embed_wav(r.pop("wav"))
        r["cos_target"] = cosine(emb, cents[r["target"]])
        r["cos_source"] = cosine(emb, cents[r["source"]])
        r["closer_to_target"] = r["cos_target"] > r["cos_source"]
    summary = {}
    for kind in ("seen", "one-shot"):
        rs = [r for r in results if r["kind"] == kind]
        summary[kind] = {
            "n": len(rs),
            "cos_target": float(np.mean([r["cos_target"] for r in rs])),
            "cos_source": float(np.mean([r["cos_source"] for r in rs])),
            "closer_to_target": float(np.mean([r["closer_to_target"] for r in rs])),
        }
    lines = ["| conversion | kind | cos to target | cos to source | closer to target |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['file']} | {r['kind']} | {r['cos_target']:.3f} | {r['cos_source']:.3f} | "
                     f"{'yes' if r['closer_to_target'] else 'no'} |")
    lines.append("")
    for kind, s in summary.items():
        lines.append(f"**{kind}**: {s['n']} conversions, mean cosine to target {s['cos_target']:.3f} vs "
                     f"to source {s['cos_source']:.3f}; {100 * s['closer_to_target']:.0f}% closer to the target.")
    table = "\n".join(lines)
    training = {"steps": vc.step, "s_per_step": timer.s_per_step}
    atomic_write_text(out / "results.md",
                      "# clsvc demo --train\n\nResemblyzer cosine of each converted file to the target voice and to "
                      "the source voice (centroids of real training sentences), after "
                      f"{vc.step:,} training steps.\n\n" + table + "\n")
    atomic_write_text(out / "results.json",
                      json.dumps({"results": results, "summary": summary, "training": training}, indent=2))
    print(table)
    print(f"\nconverted wavs in {conv_dir}; table in {out / 'results.md'}")
    return summary
