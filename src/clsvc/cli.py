"""The ``clsvc`` command: thin subcommands over the library.

Every user error is one line on stderr (``clsvc: error: ...``) and exit status 2; nothing is
left half-written. Outputs are published atomically and, without ``--force``, exclusively: of
two commands writing the same new file one wins and the other stops with "already exists".
Output to a closed pipe (``clsvc info X | head -1``) ends quietly with status 141. Run
``clsvc COMMAND --help`` for the options of each command.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import EvalConfig, add_dataclass_arguments, config_from_dict, dataclass_from_namespace
from .errors import ClsvcError
from .files import atomic_path
from .pretrained import DEFAULT_VOCODER

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .data.manifest import Entry


VOCODER_HELP = ("auto (default): the model's own, i.e. the shipped vocoder a shipped model's card names (see "
                "`clsvc info MODEL`), else griffin-lim; or griffin-lim, the checkpoint/exported file of a trained "
                "vocoder (clsvc train --config vocoder-cpu), or a shipped vocoder's name (clsvc models)")
CHECKPOINT_HELP = "checkpoint or exported model file, or a shipped model's name (clsvc models)"
GV_HELP = ("global-variance compensation: spread each mel band of the conversion as the model flattens "
           "it (measured on its reconstruction of the source), at most X times; 0 = off (default: the "
           "model's convert.gv_max; the shipped arctic: see `clsvc info arctic`)")

CONTRAST_HELP = ("speaker contrast: push the target voice vector away from the source's own by C "
                 "((t + C(t - s)) re-normalised), offsetting the source voice the content code still carries; "
                 "0 = off (default: the model's convert.contrast; the shipped arctic: see `clsvc info arctic`)")

CONTOUR_HELP = ("level contour: give the conversion its source's frame-by-frame loudness movement, which the "
                "decoder smooths (and the words with it), with weight W; 0 = off, 1 = all of it (default: the "
                "model's convert.contour; the shipped arctic: see `clsvc info arctic`)")


def _finishing(a: argparse.Namespace) -> dict[str, float]:
    """The finishing settings given on the command line (--gv-max, --contrast, --contour), by
    ConvertConfig field; those not given are left to the model."""
    return {k: v for k in ("gv_max", "contrast", "contour") if (v := getattr(a, k, None)) is not None}


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _writable_output(path: Path, force: bool, flag: str = "--out") -> None:
    """Refuse to overwrite without --force and fail before any work if ``path`` can't be written;
    ``flag`` names the argument in the hint."""
    if path.is_dir():
        raise ClsvcError(f"{path}: is a folder; give a file name such as {path / 'converted.wav'}")
    if path.exists() and not force:
        raise ClsvcError(f"{path}: already exists; pass --force to overwrite it or choose another {flag}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ClsvcError(f"{path}: folder {parent} does not exist; create it first or choose another {flag}")
    if not os.access(parent, os.W_OK):
        raise ClsvcError(f"{path}: folder {parent} is not writable; choose another {flag}")


def _device(name: str) -> torch.device:
    """``--device`` checked before any work: an unknown name or a missing GPU is one line."""
    from .devices import pick_device

    return pick_device(name)


def _save_wav(out: Path, wav: np.ndarray, sample_rate: int, force: bool) -> None:
    """Write ``out`` atomically; without ``force`` only if nothing is there when it is published."""
    from .audio import save_wav

    with atomic_path(out, suffix=".tmp.wav", exclusive=not force) as tmp:
        save_wav(tmp, wav, sample_rate)


# One row of a --list: source, target files (or None), target speaker (or None), out, CSV line.
_Job = tuple[str, list[str] | None, str | None, Path, str]


def _list_jobs(a: argparse.Namespace) -> tuple[list[_Job], int]:
    """Every row of ``--list`` checked before anything is converted: (jobs, rows skipped because
    their output exists). Outputs (relative to the CSV) must lie inside ``--out-root`` (default:
    the CSV's folder, symlinks followed) unless ``--allow-outside``; two rows may not write the
    same file; an existing output is complete (outputs are atomic) and is skipped unless --force."""
    from .inference import iter_pairs

    rows = list(iter_pairs(a.list))
    base = Path(a.list).parent
    root = Path(a.out_root) if a.out_root else base
    if a.out_root and not root.is_dir():
        raise ClsvcError(f"--out-root {root}: not a folder; create it first or choose another")
    root_real = root.resolve()
    jobs: list[_Job] = []
    writers: dict[Path, str] = {}
    skipped = 0
    for row in rows:
        where = f"{a.list} line {row['line']}"
        targets = [t for t in row.get("target", "").split(";") if t]
        targets = [t if Path(t).is_absolute() else str(base / t) for t in targets]
        spk = row.get("target_speaker") or None
        if not row.get("source") or not row.get("out") or bool(targets) == bool(spk):
            raise ClsvcError(f"{where}: needs source, out and exactly one of target / target_speaker")
        src = row["source"] if Path(row["source"]).is_absolute() else str(base / row["source"])
        out = Path(row["out"]) if Path(row["out"]).is_absolute() else base / row["out"]
        real = out.resolve()
        if not a.allow_outside and not real.is_relative_to(root_real):
            raise ClsvcError(
                f"{where}: out {row['out']} resolves to {real}, outside the output root {root_real}; "
                "write inside it, choose another --out-root DIR, or pass --allow-outside"
            )
        if real in writers:
            raise ClsvcError(f"{a.list} lines {writers[real]} and {row['line']}: both write {out}; "
                             "give every row its own out")
        writers[real] = row["line"]
        if out.exists() and not out.is_dir() and not a.force:
            skipped += 1  # written by an earlier run (atomically, so complete)
            continue
        try:
            _writable_output(out, a.force)
        except ClsvcError as e:
            raise ClsvcError(f"{where}: {e}") from None
        jobs.append((src, targets or None, spk, out, row["line"]))
    return jobs, skipped


# ------------------------------------------------------------------------------- subcommands


def cmd_preprocess(a: argparse.Namespace) -> None:
    """`clsvc preprocess`: corpus folder(s) -> mel features + manifest."""
    from .config import load_config
    from .data import SplitSpec, preprocess

    cfg = load_config(a.config)
    spec = SplitSpec(unseen=_csv_list(a.unseen or ""), num_unseen=a.num_unseen,
                     holdout_per_speaker=a.holdout_per_speaker, holdout_regex=a.holdout_regex or "",
                     seed=a.seed)
    entries = preprocess(a.corpus, a.out, cfg.mel, kind=a.corpus_kind, split=spec, trim_db=a.trim_db,
                         min_frames=a.min_frames, jobs=a.jobs,
                         speakers=_csv_list(a.speakers) if a.speakers else None, merge=a.merge,
                         keep_wav=a.keep_wav, f0=a.f0, phones=a.phones, phone_loop=a.phone_loop,
                         progress=not a.quiet)
    counts: dict[str, int] = {}
    for e in entries:
        counts[e.split] = counts.get(e.split, 0) + 1
    speakers = {s: len({e.speaker for e in entries if e.split == s}) for s in counts}
    summary = ", ".join(f"{counts[s]} {s} ({speakers[s]} speakers)" for s in sorted(counts))
    print(f"wrote {a.out}/manifest.tsv: {summary}")
    skipped = Path(a.out) / "skipped.tsv"
    if skipped.exists():
        n = len(skipped.read_text().splitlines()) - 1
        print(f"skipped {n} unusable file(s); reasons in {skipped}")


def cmd_train(a: argparse.Namespace) -> None:
    """`clsvc train`: train (or `--resume`) a system on preprocessed features, or start from the
    weights of another run (`--init`)."""
    from .config import load_config
    from .training import train

    if a.init is not None and a.resume:
        raise ClsvcError("--init starts a new run from another checkpoint's weights, --resume continues this "
                         "run; pass only one of them")
    if a.config is None and not a.resume:
        raise ClsvcError("pass --config (e.g. --config cpu or --config configs/paper.yaml)")
    # On --resume without --config the run's own config is used (overrides still apply).
    cfg = load_config(a.config, a.overrides) if a.config is not None else None
    last = train(cfg, a.data, a.out, resume=a.resume, device=a.device, progress=not a.quiet,
                 overrides=a.overrides if cfg is None else None, init=a.init, init_partial=a.init_partial)
    print(f"saved {last}")


def cmd_reconstruct(a: argparse.Namespace) -> None:
    """`clsvc reconstruct`: a copy of a feature folder whose mels are a VC model's own
    reconstructions (each utterance decoded with its own voice), for fine-tuning a vocoder."""
    from .data.reconstruct import reconstruct_features
    from .inference import load
    from .models import Reference

    vc = load(a.checkpoint, device=_device(a.device), vocoder="griffin-lim")  # the vocoder is not used

    def own_voice(mel: np.ndarray, wav: np.ndarray, e: Entry) -> np.ndarray:
        ref = Reference(mel, wav=wav, key=f"{e.speaker}/{e.utt_id}")
        # A model without one-shot voices (a speaker table) takes the speaker's own row.
        return vc.convert_mel(ref, vc.voice([ref]) if vc.one_shot else vc.speaker_embedding(e.speaker))

    about = {k: vc.origin[k] for k in ("system", "step", "weights_sha256")} | {"checkpoint": vc.origin["path"]}
    done = reconstruct_features(a.data, a.out, own_voice, vc.mel_cfg, about, force=a.force, progress=not a.quiet)
    kept = f", {done.skipped} kept from an earlier run" if done.skipped else ""
    print(f"wrote {done.out / 'manifest.tsv'}: {done.made + done.skipped} utterances reconstructed by "
          f"{a.checkpoint} ({done.made} now{kept}; waveforms {done.linked} hard-linked, {done.copied} copied)")


def cmd_convert(a: argparse.Namespace) -> None:
    """`clsvc convert`: one source (or a `--list` of rows) into a target voice."""
    from .inference import load

    if a.list is None:
        if a.source is None or a.out is None:
            raise ClsvcError("pass --source and --out (or --list pairs.csv)")
        if not a.target and not a.target_speaker:
            raise ClsvcError("pass --target FILE [FILE ...] or --target-speaker NAME")
        if a.target and a.target_speaker:
            raise ClsvcError("pass either --target or --target-speaker, not both")
        if a.out_root is not None or a.allow_outside:
            raise ClsvcError("--out-root and --allow-outside apply to --list only")
        out = Path(a.out)
        _writable_output(out, a.force)
        vc = load(a.checkpoint, device=_device(a.device), vocoder=a.vocoder, **_finishing(a))
        wav = vc.convert(a.source, a.target or None, a.target_speaker)
        _save_wav(out, wav, vc.sample_rate, a.force)
        print(f"wrote {a.out} ({len(wav) / vc.sample_rate:.2f} s)")
        return
    device = _device(a.device)
    jobs, skipped = _list_jobs(a)  # every row is checked before anything is converted
    note = f"; skipped {skipped} existing (pass --force to redo them)" if skipped else ""
    if not jobs:
        print(f"wrote 0 files{note}")
        return
    vc = load(a.checkpoint, device=device, vocoder=a.vocoder, **_finishing(a))
    from tqdm import tqdm

    done = 0
    for src, targets, spk, out, line in tqdm(jobs, desc="convert", unit="file", disable=a.quiet):
        try:
            wav = vc.convert(src, targets, spk)
        except ClsvcError as e:
            kept = f"; the {done} file(s) written before it are kept and a rerun skips them" if done else ""
            raise ClsvcError(f"{a.list} line {line}: {e}{kept}") from None
        _save_wav(out, wav, vc.sample_rate, a.force)
        done += 1
    print(f"wrote {done} file(s){note}")


def cmd_embed(a: argparse.Namespace) -> None:
    """`clsvc embed`: voice vectors of wav files, written as .npz."""
    import numpy as np

    from .inference import load

    out = Path(a.out)
    if out.suffix != ".npz":
        raise ClsvcError(f"{out}: embeddings are written as .npz; use a name ending in .npz")
    _writable_output(out, a.force)
    vc = load(a.checkpoint, device=_device(a.device))
    embs = np.stack([vc.embed(w) for w in a.wavs])
    mean = embs.mean(0)
    mean = mean / max(float(np.linalg.norm(mean)), 1e-8)
    with atomic_path(out, suffix=".tmp.npz", exclusive=not a.force) as tmp:
        np.savez(tmp, embeddings=embs, files=np.array([str(w) for w in a.wavs]), mean=mean)
    print(f"wrote {out}: {len(embs)} embedding(s) of {embs.shape[1]} dims and their mean")


def _print_card(name: str, card: dict[str, Any]) -> None:
    """A shipped model's card (:class:`clsvc.pretrained.Card`) as a few lines."""
    print(f"{name}: shipped {card['kind']} model: {card['description']}")
    data = "; ".join(f"{d['name']} ({d['licence']}{', ' + d['url'] if d.get('url') else ''})" for d in card["data"])
    print(f"  training data: {data or 'not stated'}")
    config = f" (config {card['training']['config']})" if card["training"].get("config") else ""
    print(f"  trained with: {card['training']['command']}{config}; {card['steps']} steps")
    bench = ", ".join(f"{k} {v:g}" for k, v in card["bench"].items())
    print(f"  benchmark: {bench or 'none recorded'}")
    if card["kind"] == "vc":
        print(f"  speakers to pick (--target-speaker): {', '.join(card['speakers']) or 'none (one-shot only)'}")
        print(f"  vocoder (--vocoder auto, the default): {card.get('vocoder') or 'griffin-lim'}")


def cmd_info(a: argparse.Namespace) -> None:
    """`clsvc info`: what a checkpoint, exported model or shipped model (with its card) holds."""
    import yaml

    from .checkpoint import is_inference_only
    from .pretrained import card, is_shipped, load_checkpoint

    ckpt, path = load_checkpoint(a.checkpoint)
    name = is_shipped(path)
    if name is not None:
        _print_card(name, card(name))
    spk = ckpt.get("speakers", [])
    kind = "exported model (inference only)" if is_inference_only(ckpt) else "training checkpoint"
    print(f"{path if name else a.checkpoint}: {kind}, step {ckpt['step']}, "
          f"{ckpt.get('elapsed', 0) / 60:.1f} min of training, saved {ckpt.get('saved_at', '?')}")
    init = ckpt.get("init")
    if isinstance(init, dict):  # a run started with --init: its steps come on top of that checkpoint's
        fresh = f"; started fresh: {', '.join(init['fresh'])}" if init.get("fresh") else ""
        print(f"started from {Path(str(init.get('path'))).name} (its step {init.get('step')}, weights_sha256 "
              f"{str(init.get('weights_sha256'))[:12]}...){fresh}")
    n = sum(v.numel() for v in ckpt["model"].values())
    print(f"weights: {n:,} values stored as {ckpt.get('dtype', 'float32')}")
    print(f"{len(spk)} training speakers: {', '.join(spk[:20])}{' ...' if len(spk) > 20 else ''}")
    try:  # the config as the model runs it: settings newer than the file at their defaults (convert.gv_max)
        shown = config_from_dict(ckpt["config"], str(path)).to_dict()
    except ClsvcError:
        shown = ckpt["config"]
    print(yaml.safe_dump(shown, sort_keys=False).rstrip())


def cmd_models(a: argparse.Namespace) -> None:
    """`clsvc models`: the pretrained models shipped with clsvc (names for --checkpoint / --vocoder)."""
    from .pretrained import available, folder

    models = available()
    if not models:
        print(f"no pretrained models ship with this clsvc yet (they are in training; folder {folder()}); "
              "pass a checkpoint file to --checkpoint, and griffin-lim or a vocoder file to --vocoder")
        return
    width = max(len(m.name) for m in models)
    for m in models:
        print(f"{m.name:<{width}}  {m.kind:<7}  {m.description}")
    print(f"use a name with --checkpoint (vc) or --vocoder (vocoder); `clsvc info NAME` shows its card; "
          f"files in {folder()}")


def cmd_export(a: argparse.Namespace) -> None:
    """`clsvc export`: the inference-only file of a training checkpoint (``--fp16``: float16
    weights; ``--card``: plus the card that makes it a model to ship)."""
    import torch

    from .checkpoint import export_model

    out = Path(a.out)
    _writable_output(out, a.force, flag="OUT")
    dtype = torch.float16 if a.fp16 else torch.float32
    if a.card is not None:
        from .config import read_yaml
        from .pretrained import ship

        if not a.fp16:
            raise ClsvcError("--card writes a model to ship, whose weights are float16; add --fp16")
        card_path = Path(a.card)
        if not card_path.is_file():
            raise ClsvcError(f"{card_path}: card not found; give a YAML or JSON file with description, data, "
                             "training and bench")
        _writable_output(out.with_suffix(".json"), a.force, flag="OUT")
        pt, js = ship(a.checkpoint, out, read_yaml(card_path, "card"), force=a.force,
                      griffin_lim_iters=a.griffin_lim_iters, convert=_finishing(a))
        print(f"wrote {pt} ({pt.stat().st_size / 2**20:.1f} MB, float16) and its card {js}; copy both into "
              "clsvc/pretrained/ to ship the model by name")
        return
    with atomic_path(out, suffix=".tmp.pt", exclusive=not a.force) as tmp:
        # save_checkpoint writes straight into this block's temp
        export_model(a.checkpoint, tmp, dtype=dtype, griffin_lim_iters=a.griffin_lim_iters,
                     convert=_finishing(a))
    half = ", float16 weights" if a.fp16 else ""
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB{half}): weights, config and speakers for inference")


def cmd_evaluate(a: argparse.Namespace) -> None:
    """`clsvc evaluate`: convert and score the seeded pair protocol (or export it)."""
    from .data import read_manifest
    from .evaluation.suite import build_protocol, evaluate, write_pairs

    cfg = dataclass_from_namespace(EvalConfig, a)
    if a.export_pairs:
        out = Path(a.export_pairs)
        _writable_output(out, a.force, flag="--export-pairs")
        protocol = build_protocol(read_manifest(a.data), cfg)
        if not protocol.pairs:
            raise ClsvcError(f"{a.data}: no pairs could be made ({'; '.join(protocol.notes)})")
        with atomic_path(out, suffix=".tmp.csv", exclusive=not a.force) as tmp:
            write_pairs(tmp, protocol.pairs)
        print(f"wrote {out}: {len(protocol.pairs)} pairs; convert each source into the target voice, "
              "write the file named in the `converted` column (relative to the CSV), then run "
              f"`clsvc evaluate --data {a.data} --pairs {out} --out DIR`")
        return
    if a.out is None:
        raise ClsvcError("pass --out DIR (the report folder)")
    device = str(_device(a.device))
    metrics = evaluate(a.out, a.data, checkpoint=a.checkpoint, pairs_csv=a.pairs, cfg=cfg, device=device,
                       vocoder=a.vocoder, reference_cache=not a.no_reference_cache, convert=_finishing(a),
                       force=a.force, progress=not a.quiet, title=a.title)
    for group, kinds in metrics["summary"].items():
        if "/" in group or "converted" not in kinds:
            continue
        m = kinds["converted"]
        parts = [f"{group}: n={m['cos_tgt']['n']}"]
        for key, label in (("mcd_audio", "MCD audio"), ("mcd_feat", "MCD log-mel"), ("cos_tgt", "cos tgt"),
                           ("cos_src", "cos src"), ("closer", "closer"), ("wer", "WER")):
            if key in m:
                v = m[key]["mean"]
                parts.append(f"{label} {100 * v:.0f}%" if key == "closer" else f"{label} {v:.3f}")
        print("  ".join(parts))
    print(f"wrote {a.out}/report.md")


def cmd_experiment(a: argparse.Namespace) -> None:
    """`clsvc experiment`: train and evaluate the systems of an experiment file."""
    from .experiment import run_experiment

    run_experiment(a.file, work=a.work, only=_csv_list(a.only) if a.only else None, progress=not a.quiet,
                   vocoder=a.vocoder,
                   force_eval=a.force_eval)


def cmd_demo(a: argparse.Namespace) -> None:
    """`clsvc demo`: the shipped real clips converted by a pretrained model and scored (no training);
    `--train`: synthesise voices, train from scratch, convert and score."""
    from .demo import run_demo, run_training_demo

    if a.train:
        if a.checkpoint is not None:
            raise ClsvcError("--checkpoint picks the model of `clsvc demo`; `clsvc demo --train` trains its own: "
                             "pass only one of them")
        run_training_demo(Path(a.out), steps=a.steps, voices=8 if a.voices is None else a.voices, force=a.force,
                          quick=a.quick, vocoder=a.vocoder)
        return
    extra = [flag for flag, given in (("--steps", a.steps is not None), ("--voices", a.voices is not None),
                                      ("--quick", a.quick)) if given]
    if extra:
        raise ClsvcError(f"{', '.join(extra)}: for the from-scratch demo; add --train (or leave "
                         f"{'it' if len(extra) == 1 else 'them'} out to convert with the pretrained model)")
    run_demo(Path(a.out), checkpoint=a.checkpoint, vocoder=a.vocoder, force=a.force)


def cmd_serve(a: argparse.Namespace) -> None:
    """`clsvc serve`: the model loaded once, converting over HTTP (the API and a web page) until Ctrl-C."""
    from .serve import ServeLimits, create_app, run_server  # without the `serve` extra: one ClsvcError line
    from .serve.app import listen, url_of

    limits = ServeLimits(max_upload_bytes=int(a.max_upload_mb * 1024 * 1024), max_seconds=a.max_seconds,
                         workers=a.workers, queue=a.queue, timeout_s=a.timeout)
    device = _device(a.device)
    sock = listen(a.host, a.port)  # before the model loads: a port in use fails at once
    try:
        import torch

        from .inference import load

        # Each worker thread converts a whole request; splitting the cores between them keeps
        # `workers` conversions from oversubscribing the CPU.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // a.workers))
        vc = load(a.checkpoint, device=device, vocoder=a.vocoder)
        app = create_app(vc, limits, model_name=Path(str(a.checkpoint)).name)
        url = url_of(sock)

        def ready() -> None:
            print(f"clsvc: serving {Path(str(a.checkpoint)).name} at {url} (Ctrl-C stops)", flush=True)

        run_server(app, sock, on_ready=ready)
    finally:
        sock.close()


# ------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The `clsvc` argument parser with every subcommand."""
    p = argparse.ArgumentParser(prog="clsvc", description="ClsVC voice conversion")
    p.add_argument("--version", action="version", version=f"clsvc {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("preprocess", help="corpus -> mel features + manifest")
    s.add_argument("corpus", nargs="+", help="corpus folder(s): VCTK, LibriSpeech or one folder per speaker")
    s.add_argument("--out", required=True, help="feature folder to write (re-runs skip finished files)")
    s.add_argument("--merge", action="store_true",
                   help="add this corpus to an --out folder that already holds features of another corpus "
                        "(its rows and splits are kept); without it such a folder is refused")
    s.add_argument("--keep-wav", action="store_true",
                   help="also keep each utterance's waveform aligned to its frames (for training a vocoder)")
    s.add_argument("--f0", action="store_true",
                   help="also keep each utterance's F0 contour, one value per frame (for model.f0_condition)")
    s.add_argument("--phones", action="store_true",
                   help="also keep each transcribed utterance's phone labels, one per frame, by forced alignment "
                        "with PocketSphinx (for loss.phone)")
    s.add_argument("--phone-loop", action="store_true",
                   help="--phones, and label the utterances without a transcript (or whose alignment fails) by "
                        "PocketSphinx's phone-loop decoding, no words needed (noisier than alignment)")
    s.add_argument("--corpus-kind", default="auto", choices=["auto", "vctk", "librispeech", "folders"])
    s.add_argument("--config", default=None, help="config whose mel section to use (default: the paper's)")
    s.add_argument("--unseen", help="comma-separated speakers kept out of training (one-shot tests)")
    s.add_argument("--num-unseen", type=int, default=0, help="draw this many more unseen speakers (seeded)")
    s.add_argument("--holdout-per-speaker", type=int, default=0,
                   help="utterances per training speaker held out for validation")
    s.add_argument("--holdout-regex", help="utterance ids matching this are held out for validation")
    s.add_argument("--trim-db", type=float, default=40.0, help="trim leading/trailing silence (0 = off)")
    s.add_argument("--min-frames", type=int, default=32, help="skip utterances shorter than this")
    s.add_argument("--speakers", help="only these comma-separated speakers")
    s.add_argument("--jobs", type=int, default=0, help="worker processes (default: all cores)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_preprocess)

    s = sub.add_parser("train", help="train ClsVC (torchrun -m clsvc train ... for several GPUs)")
    s.add_argument("--config", help="YAML config or built-in name (paper, cpu, cpu-paper, ...)")
    s.add_argument("--data", required=True, help="folder written by `clsvc preprocess`")
    s.add_argument("--out", required=True, help="run folder (checkpoints, logs, TensorBoard)")
    s.add_argument("--resume", action="store_true", help="continue OUT/checkpoints/last.pt exactly")
    s.add_argument("--init", metavar="CKPT",
                   help="start a new run from the weights of CKPT (a training checkpoint or exported file of the "
                        "same system and model structure; fresh optimizer, step 0), e.g. to fine-tune a vocoder "
                        "on `clsvc reconstruct` features. A vocoder's generator-step counter comes with its "
                        "weights, so one trained past vocoder.warmup_steps trains adversarially from the first "
                        "step (raise vocoder.warmup_steps above its count for a reconstruction-only phase first, or "
                        "set vocoder.adversarial=false for no discriminators at all; an exported vocoder holds "
                        "no discriminators: they start fresh)")
    s.add_argument("--init-partial", action="store_true",
                   help="with --init: copy only the weights whose name and shape fit this config's model (e.g. a "
                        "wider decoder on a trained encoder; add train.freeze=[encoder.] to keep it fixed); the "
                        "rest start fresh and are listed atop the run's config.yaml")
    s.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("overrides", nargs="*", help="section.key=value, e.g. train.max_steps=1000")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("reconstruct", help="features whose mels are a VC model's own reconstructions "
                                           "(to fine-tune a vocoder on)")
    s.add_argument("--data", required=True, help="feature folder written by `clsvc preprocess --keep-wav`")
    s.add_argument("--checkpoint", required=True, help="the VC model (training checkpoint or exported file)")
    s.add_argument("--out", required=True,
                   help="feature folder to write: the same manifest, splits and waveforms (hard-linked), each mel "
                        "decoded from its own content and voice; a rerun resumes (finished files are kept)")
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1 ...")
    s.add_argument("--force", action="store_true",
                   help="write into an --out holding something else (e.g. another model's reconstructions) and "
                        "make every file again")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("convert", help="convert speech into another voice")
    s.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    s.add_argument("--source", help="utterance whose words are kept")
    s.add_argument("--target", nargs="+", help="one or more utterances of the target voice")
    s.add_argument("--target-speaker", help="a training speaker's name instead of --target")
    s.add_argument("--out", help="output wav")
    s.add_argument("--list", help="CSV with columns source,target,out (target: files joined by ';') "
                                  "or source,target_speaker,out; paths relative to the CSV")
    s.add_argument("--out-root", metavar="DIR",
                   help="with --list: every output must lie inside DIR (default: the CSV's folder)")
    s.add_argument("--allow-outside", action="store_true",
                   help="with --list: allow outputs outside --out-root (../ or absolute paths)")
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1 ...")
    s.add_argument("--force", action="store_true",
                   help="overwrite existing outputs (a --list rerun otherwise skips rows already written)")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--vocoder", default=DEFAULT_VOCODER, help=VOCODER_HELP)
    s.add_argument("--gv-max", type=float, metavar="X", help=GV_HELP)
    s.add_argument("--contrast", type=float, metavar="C", help=CONTRAST_HELP)
    s.add_argument("--contour", type=float, metavar="W", help=CONTOUR_HELP)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("embed", help="speaker embeddings of wav files")
    s.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    s.add_argument("--out", required=True, help=".npz with embeddings (N, dim), files and mean")
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1 ...")
    s.add_argument("--force", action="store_true")
    s.add_argument("wavs", nargs="+")
    s.set_defaults(func=cmd_embed)

    s = sub.add_parser("info", help="what a checkpoint holds (a shipped model: its card too)")
    s.add_argument("checkpoint", help=CHECKPOINT_HELP)
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("models", help="list the pretrained models shipped with clsvc")
    s.set_defaults(func=cmd_models)

    s = sub.add_parser("export", help="write an inference-only model file (no optimizer, no discriminators)")
    s.add_argument("checkpoint", help="training checkpoint (RUN/checkpoints/last.pt)")
    s.add_argument("out", help="model file to write (.pt); `clsvc convert --checkpoint OUT` and clsvc.load take it")
    s.add_argument("--fp16", action="store_true",
                   help="store the weights as float16 (half the size; loading upcasts them to float32)")
    s.add_argument("--card", metavar="FILE",
                   help="with --fp16: also write OUT's card (OUT with .json), making OUT.pt + OUT.json a model "
                        "to ship in clsvc/pretrained/; FILE (YAML or JSON) gives description, data, training, "
                        "bench and speakers; kind, steps and the weights' SHA-256 are filled in")
    s.add_argument("--griffin-lim-iters", type=int, metavar="N",
                   help="store N Griffin-Lim iterations with the model (what converting with it uses when no "
                        "neural vocoder is given; shapes no feature) instead of the training run's")
    s.add_argument("--gv-max", type=float, metavar="X",
                   help="store X as the model's global-variance compensation (convert.gv_max: what converting "
                        "with it uses unless told otherwise; 0 = off) instead of the training run's")
    s.add_argument("--contrast", type=float, metavar="C",
                   help="store C as the model's speaker contrast (convert.contrast: what converting with it "
                        "uses unless told otherwise; 0 = off) instead of the training run's")
    s.add_argument("--contour", type=float, metavar="W",
                   help="store W as the model's level-contour weight (convert.contour: what converting with it "
                        "uses unless told otherwise; 0 = off) instead of the training run's")
    s.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("evaluate", help="convert a fixed protocol of pairs and score it (report.md)")
    s.add_argument("--data", required=True, help="folder written by `clsvc preprocess` (the test corpus)")
    s.add_argument("--checkpoint", help=f"model to evaluate: {CHECKPOINT_HELP}")
    s.add_argument("--pairs", help="score another system: pair list (from --export-pairs) whose "
                                   "`converted` column points at its wav files")
    s.add_argument("--export-pairs", metavar="CSV", help="only write the protocol's pair list and exit")
    s.add_argument("--out", help="report folder (report.md, metrics.json, plots/, samples/)")
    add_dataclass_arguments(s.add_argument_group("protocol and scorers"), EvalConfig)
    s.add_argument("--title", help="report title")
    s.add_argument("--device", default="cpu")
    s.add_argument("--force", action="store_true", help="replace an existing report folder")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--vocoder", default=DEFAULT_VOCODER, help=VOCODER_HELP)
    s.add_argument("--gv-max", type=float, metavar="X", help=GV_HELP)
    s.add_argument("--contrast", type=float, metavar="C", help=CONTRAST_HELP)
    s.add_argument("--contour", type=float, metavar="W", help=CONTOUR_HELP)
    s.add_argument("--no-reference-cache", action="store_true",
                   help="neither read nor write DATA/eval-cache.npz (the speakers' Resemblyzer centroids and "
                        "pitch levels, which depend only on the recordings, kept between evaluations)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("experiment", help="train and evaluate several systems, write the comparison")
    s.add_argument("file", help="experiment YAML (e.g. configs/experiments/bench-cpu.yaml or bench-cpu)")
    s.add_argument("--work", help="work folder (default runs/experiments/NAME)")
    s.add_argument("--only", help="comma-separated system names to run (the comparison covers these)")
    s.add_argument("--force-eval", action="store_true", help="re-evaluate finished systems")
    s.add_argument("--quiet", action="store_true")
    s.add_argument("--vocoder", default=DEFAULT_VOCODER, help=VOCODER_HELP)
    s.set_defaults(func=cmd_experiment)

    from .demo import DEFAULT_STEPS, EXPECTED_S_PER_STEP

    s = sub.add_parser("demo", help="convert real clips with a pretrained model and score them (seconds, no "
                                    "training); --train: train a small model from scratch first")
    s.add_argument("--out", default="demo", help="output folder")
    s.add_argument("--checkpoint", help="VC model to convert with (default: the shipped model arctic): "
                                        f"{CHECKPOINT_HELP}")
    s.add_argument("--vocoder", default=DEFAULT_VOCODER, help=VOCODER_HELP)
    s.add_argument("--force", action="store_true",
                   help="replace the results of an earlier demo in OUT (with --train: retrain its model)")
    s.add_argument("--train", action="store_true",
                   help="synthesise voices with espeak-ng, train configs/cpu.yaml from scratch, convert and score")
    s.add_argument("--steps", type=int,
                   help=f"with --train: training steps (default {DEFAULT_STEPS:,}, about "
                        f"{DEFAULT_STEPS * EXPECTED_S_PER_STEP / 60:.0f} min on 2 idle CPU cores; the time at this "
                        "machine's speed is printed after about 30 steps)")
    s.add_argument("--voices", type=int, help="with --train: synthetic voices to create (>= 4, default 8)")
    s.add_argument("--quick", action="store_true", help="with --train: a seconds-long smoke run (for tests)")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("serve", help="convert over HTTP: a JSON/multipart API and a web page (pip install "
                                     "'clsvc[serve]')")
    s.add_argument("--checkpoint", default="arctic", help=f"{CHECKPOINT_HELP} (default: arctic)")
    s.add_argument("--vocoder", default=DEFAULT_VOCODER, help=VOCODER_HELP)
    s.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0: every interface)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port)")
    s.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:1 ...")
    s.add_argument("--workers", type=int, default=1,
                   help="conversions run at once (threads sharing the one loaded model; default 1)")
    s.add_argument("--queue", type=int, default=4,
                   help="further conversions that may wait for a worker; beyond them requests get 503 with "
                        "Retry-After (default 4)")
    s.add_argument("--max-upload-mb", type=float, default=20.0,
                   help="most MiB of audio files in one request (default 20; larger uploads get 413)")
    s.add_argument("--max-seconds", type=float, default=60.0,
                   help="longest audio accepted per file, in seconds (default 60; longer gets 413)")
    s.add_argument("--timeout", type=float, default=120.0,
                   help="seconds a conversion may take from being queued (default 120; then 504, and a queued job "
                        "is dropped, a running one stopped at its next stage)")
    s.set_defaults(func=cmd_serve)
    return p


def _version() -> str:
    from . import __version__

    return __version__


# OSErrors that mean "the disk cannot take it": a last line of defence for writes that do not
# go through clsvc.files (whose own errors already name the file).
_STORAGE_ERRNOS = {getattr(errno, n) for n in ("ENOSPC", "EDQUOT", "EROFS", "EFBIG") if hasattr(errno, n)}


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """clsvc's own notes (e.g. audio normalised to full scale) as one ``clsvc: note:`` line;
    other libraries' warnings as Python prints them."""
    if category.__module__.startswith("clsvc"):
        print(f"clsvc: note: {message}", file=sys.stderr)
    else:
        _default_show_warning(message, category, filename, lineno, file, line)


_default_show_warning = warnings.showwarning


def _run(argv: list[str] | None) -> int:
    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClsvcError as e:
        print(f"clsvc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        # Ctrl-C, or clsvc.training.TrainingStopped (training stopped on SIGINT/SIGTERM after
        # saving its last completed step): its message says so; .signum gives 130 / 143.
        print(f"clsvc: {e}" if str(e) else "clsvc: interrupted", file=sys.stderr)
        return 128 + int(getattr(e, "signum", 2))
    except OSError as e:
        if e.errno not in _STORAGE_ERRNOS:
            raise
        where = f"{os.fsdecode(e.filename)}: " if e.filename is not None else ""
        print(f"clsvc: error: {where}could not write ({e.strerror}); free space or choose another location",
              file=sys.stderr)
        return 2
    return 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # not a real file (captured in-process): nothing to flush
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print one line and return 2, Ctrl-C returns 130, a closed
    output pipe (``clsvc info X | head -1``) returns 141 (128 + SIGPIPE) without a message."""
    try:
        try:
            code = _run(argv)
        except SystemExit:  # --help, --version, usage errors: argparse printed already
            sys.stdout.flush()
            raise
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        _silence_stdout()
        return 141


if __name__ == "__main__":
    sys.exit(main())
