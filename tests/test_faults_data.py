"""Faults of the data side: bad preprocess arguments, killed or interrupted preprocessing, feature
folders of another corpus, manifests naming files outside their folder, malformed feature files.

Every user-facing failure is one ClsvcError line naming the value or file and the fix; the CLI
prints it and exits 2, writing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clsvc.config import MelConfig
from clsvc.data import FeatureSet, SplitSpec, preprocess, read_manifest
from clsvc.data.manifest import MANIFEST, load_feature
from clsvc.errors import ClsvcError

from helpers import MORE_SPEAKERS, SPEAKERS, write_corpus

# ----------------------------------------------------------------------------------------------
# 1. arguments are checked before anything is written


@pytest.mark.parametrize("flag, value, message", [
    ("--holdout-regex", "([", "--holdout-regex '\\(\\[': not a valid regular expression"),
    ("--jobs", "-1", "--jobs -1: must be a whole number >= 0 \\(0 = all cores\\)"),
    ("--num-unseen", "-1", "--num-unseen -1: must be a whole number >= 0"),
])
def test_cli_bad_preprocess_flags_are_one_line_errors(cli, corpus, tmp_path, flag, value, message):
    out = tmp_path / "feats"
    code, stdout, stderr = cli("preprocess", corpus, "--out", out, flag, value, "--quiet", timeout=120)
    assert code == 2, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    import re

    assert re.search(message, stderr), stderr
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("kwargs, message", [
    ({"jobs": -2}, "--jobs -2"),
    ({"jobs": 1.5}, "--jobs 1.5"),
    ({"min_frames": 0}, "--min-frames 0: must be a whole number >= 1"),
    ({"trim_db": -3.0}, "--trim-db -3.0: must be a number >= 0"),
    ({"trim_db": float("nan")}, "--trim-db nan"),
])
def test_preprocess_settings_checked_before_writing(corpus, tmp_path, kwargs, message):
    out = tmp_path / "feats"
    with pytest.raises(ClsvcError, match=message.replace("(", "\\(").replace(".", "\\.")):
        preprocess(corpus, out, MelConfig(), progress=False, **kwargs)
    assert not out.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"holdout_regex": "(["}, "not a valid regular expression"),
    ({"holdout_regex": "a{2,1}"}, "not a valid regular expression"),
    ({"num_unseen": -1}, "--num-unseen -1"),
    ({"holdout_per_speaker": -1}, "--holdout-per-speaker -1"),
    ({"num_unseen": True}, "--num-unseen True"),
    ({"unseen": "spk_a"}, "--unseen 'spk_a': must be a list"),
])
def test_split_spec_refuses_bad_values(kwargs, message):
    with pytest.raises(ClsvcError, match=message) as e:
        SplitSpec(**kwargs)
    assert "\n" not in str(e.value)


def test_split_spec_checked_again_in_preprocess(corpus, tmp_path):
    spec = SplitSpec()
    spec.holdout_regex = "(["  # changed after construction
    with pytest.raises(ClsvcError, match="holdout-regex"):
        preprocess(corpus, tmp_path / "f", MelConfig(), split=spec, progress=False)
    assert not (tmp_path / "f").exists()


# ----------------------------------------------------------------------------------------------
# 2. killed or interrupted preprocessing leaves no workers behind, and a rerun resumes


def _stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` (children, their children, ...): pid -> start time."""
    parent_of: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                parent_of[int(entry)] = (st[0], st[2])
    found: dict[int, int] = {}
    todo = [pid]
    while todo:
        p = todo.pop()
        for child, (ppid, start) in parent_of.items():
            if ppid == p and child not in found:
                found[child] = start
                todo.append(child)
    return found


def _alive(procs: dict[int, int]) -> list[int]:
    """Those of ``procs`` still running (a zombie waiting to be reaped has stopped)."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[1] not in ("Z", "X"):
            out.append(pid)
    return out


def _wait_gone(procs: dict[int, int], limit: float = 5.0) -> tuple[list[int], float]:
    t0 = time.monotonic()
    while _alive(procs) and time.monotonic() - t0 < limit:
        time.sleep(0.02)
    return _alive(procs), time.monotonic() - t0


def _stderr(out: Path) -> str:
    return Path(f"{out}.err").read_text()


def _features(out: Path) -> list[Path]:
    return sorted(p for p in (out / "feats").rglob("*.npy") if not p.name.startswith("."))


def _temporaries(out: Path) -> list[Path]:
    return sorted(p for p in out.rglob(".*") if p.is_file())


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    """48 utterances of 2 s: a few seconds of work for two workers."""
    return write_corpus(tmp_path_factory.mktemp("big"), n_utts=12, seconds=2.0,
                        speakers={**SPEAKERS, "spk_d": MORE_SPEAKERS["spk_d"]})


def _start(corpus: Path, out: Path) -> tuple[subprocess.Popen, dict[int, int]]:
    """Start `clsvc preprocess --jobs 2` (stderr to ``out``.err); return it and its worker
    processes once the first feature file is written."""
    with open(f"{out}.err", "w") as err:  # a file, not a pipe: a stray worker cannot block the test
        proc = subprocess.Popen(
            [sys.executable, "-m", "clsvc", "preprocess", str(corpus), "--out", str(out), "--jobs", "2", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=err,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # Ctrl-C works even under nohup
    t0 = time.monotonic()
    while not _features(out):
        if proc.poll() is not None or time.monotonic() - t0 > 120:
            proc.kill()
            pytest.fail(f"preprocess ended or stalled before writing features: {_stderr(out)}")
        time.sleep(0.01)
    workers = _descendants(proc.pid)
    assert len(workers) >= 2, workers
    assert len(_features(out)) < 48, "the run finished before it could be stopped; make the corpus bigger"
    return proc, workers


def test_sigkill_leaves_no_workers_and_rerun_resumes(big_corpus, tmp_path, cli):
    out = tmp_path / "feats"
    proc, workers = _start(big_corpus, out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    left, took = _wait_gone(workers)
    assert not left, f"worker processes {left} outlived their killed parent"
    print(f"workers gone {took:.2f} s after SIGKILL")
    assert not _temporaries(out)  # workers stopped mid-write removed their temporary files
    done = {p: p.stat().st_mtime_ns for p in _features(out)}
    assert done and not (out / MANIFEST).exists()

    code, stdout, stderr = cli("preprocess", big_corpus, "--out", out, "--jobs", "2", "--quiet", timeout=300)
    assert code == 0, stderr
    assert len(read_manifest(out)) == 48
    assert {p: p.stat().st_mtime_ns for p in done} == done  # finished files kept, not recomputed
    assert not _temporaries(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_sigint_stop_workers_cleanly(big_corpus, tmp_path, sig):
    out = tmp_path / "feats"
    proc, workers = _start(big_corpus, out)
    t0 = time.monotonic()
    os.kill(proc.pid, sig)
    proc.wait(timeout=30)
    stderr = _stderr(out)
    print(f"{sig.name}: exited {proc.returncode} after {time.monotonic() - t0:.2f} s")
    assert proc.returncode == 130, stderr
    assert stderr.strip() == "clsvc: interrupted"  # no traceback, from the parent or a worker
    left, _ = _wait_gone(workers, limit=2.0)
    assert not left
    assert not (out / MANIFEST).exists() and not _temporaries(out)
    for p in _features(out):  # what was finished is whole
        assert np.load(p).shape[1] == 80


def test_dead_worker_is_one_line_error(big_corpus, tmp_path):
    out = tmp_path / "feats"
    proc, workers = _start(big_corpus, out)
    os.kill(next(iter(workers)), signal.SIGKILL)
    proc.wait(timeout=60)
    stderr = _stderr(out)
    assert proc.returncode == 2, stderr
    assert stderr.count("\n") == 1 and "worker process died" in stderr and "re-run" in stderr, stderr
    left, _ = _wait_gone(workers, limit=5.0)
    assert not left
    assert not (out / MANIFEST).exists()


def test_full_disk_stops_the_run_instead_of_skipping_every_file(tmp_path, monkeypatch):
    import errno

    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8)
    real_save = np.save

    def full(file, arr, *args, **kwargs):
        if str(file).endswith(".npy") and "/feats/" in str(file):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_save(file, arr, *args, **kwargs)

    monkeypatch.setattr(np, "save", full)
    out = tmp_path / "f"
    with pytest.raises(ClsvcError, match="spk_a_001.npy: could not write \\(No space left on device\\)") as e:
        preprocess(a, out, MelConfig(), jobs=1, progress=False)
    assert "\n" not in str(e.value)
    assert not (out / MANIFEST).exists() and not _temporaries(out) and not (out / "skipped.tsv").exists()


# ----------------------------------------------------------------------------------------------
# 3. a feature folder belongs to its corpus; each audio file is used once


def test_other_corpus_refused_unless_merge(tmp_path):
    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8)
    b = write_corpus(tmp_path / "b", n_utts=2, seconds=0.8, speakers=MORE_SPEAKERS)
    out = tmp_path / "f"
    first = preprocess(a, out, MelConfig(), jobs=1, progress=False)
    manifest, info = (out / MANIFEST).read_bytes(), (out / "features.json").read_bytes()

    with pytest.raises(ClsvcError) as e:
        preprocess(b, out, MelConfig(), jobs=1, progress=False)
    assert str(e.value) == f"{out}: holds features of {a.resolve()}; choose another --out or pass --merge"
    assert (out / MANIFEST).read_bytes() == manifest and (out / "features.json").read_bytes() == info
    assert not (out / "feats" / "spk_d").exists()  # nothing written

    again = preprocess(a, out, MelConfig(), jobs=1, progress=False)  # the same corpus resumes
    assert again == first

    both = preprocess(b, out, MelConfig(), jobs=1, progress=False, merge=True)
    assert {e.speaker for e in both} == {"spk_a", "spk_b", "spk_c", "spk_d", "spk_e"}
    assert both[:len(first)] == first  # the kept rows (and their splits) are unchanged
    assert read_manifest(out) == both
    recorded = json.loads((out / "features.json").read_text())["preprocess"]["corpus"]
    assert recorded == [str(a.resolve()), str(b.resolve())]
    # Now it holds both: a run on one of them alone would drop the other's rows.
    with pytest.raises(ClsvcError, match=f"holds features of {b.resolve()}"):
        preprocess(a, out, MelConfig(), jobs=1, progress=False)
    assert preprocess([a, b], out, MelConfig(), jobs=1, progress=False) == both
    assert preprocess(a, out, MelConfig(), jobs=1, progress=False, merge=True) == both[len(first):] + first


def test_folder_without_corpus_record_judged_by_its_manifest(tmp_path):
    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8)
    b = write_corpus(tmp_path / "b", n_utts=2, seconds=0.8, speakers=MORE_SPEAKERS)
    out = tmp_path / "f"
    preprocess(a, out, MelConfig(), jobs=1, progress=False)
    (out / "features.json").unlink()  # e.g. a folder made by hand or by another tool
    with pytest.raises(ClsvcError, match=f"^{out}: holds features of {a.resolve()}; choose another --out"):
        preprocess(b, out, MelConfig(), jobs=1, progress=False)
    assert len(preprocess(a, out, MelConfig(), jobs=1, progress=False)) == 6


def test_merge_refuses_a_speaker_of_both(tmp_path):
    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8, speakers={"spk_a": SPEAKERS["spk_a"], "spk_b": SPEAKERS["spk_b"]})
    b = write_corpus(tmp_path / "b", n_utts=2, seconds=0.8, speakers={"spk_a": SPEAKERS["spk_a"], "spk_d": MORE_SPEAKERS["spk_d"]})
    out = tmp_path / "f"
    preprocess(a, out, MelConfig(), jobs=1, progress=False)
    before = (out / MANIFEST).read_bytes()
    with pytest.raises(ClsvcError, match="speaker spk_a .* is already there"):
        preprocess(b, out, MelConfig(), jobs=1, progress=False, merge=True)
    assert (out / MANIFEST).read_bytes() == before


def test_same_corpus_twice_gives_each_file_once(tmp_path, monkeypatch):
    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8)
    link = tmp_path / "link"
    link.symlink_to(a, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    entries = preprocess([a, "a", f"{a}/", link], tmp_path / "f", MelConfig(), jobs=1, progress=False)
    assert len(entries) == 6
    assert len({e.source for e in entries}) == 6 and all(Path(e.source).is_absolute() for e in entries)
    assert len(read_manifest(tmp_path / "f")) == 6


def test_one_file_linked_twice_is_used_once(tmp_path):
    a = write_corpus(tmp_path / "a", n_utts=2, seconds=0.8)
    (a / "spk_a" / "spk_a_009.wav").symlink_to(a / "spk_a" / "spk_a_001.wav")
    entries = preprocess(a, tmp_path / "f", MelConfig(), jobs=1, progress=False)
    assert sorted(e.utt_id for e in entries if e.speaker == "spk_a") == ["spk_a_001", "spk_a_002"]


def test_feature_name_clash_refused(tmp_path):
    a = write_corpus(tmp_path / "a", n_utts=1, seconds=0.8, speakers={"spk_a": SPEAKERS["spk_a"]})
    (a / "spk_a" / "spk_a_001.wav").rename(a / "spk_a" / "x y.wav")
    shutil.copy(a / "spk_a" / "x y.wav", a / "spk_a" / "x_y.wav")
    with pytest.raises(ClsvcError, match="feature file name feats/spk_a/x_y.npy is also that of"):
        preprocess(a, tmp_path / "f", MelConfig(), jobs=1, progress=False)
    assert not (tmp_path / "f").exists()


# ----------------------------------------------------------------------------------------------
# 4. a manifest names only files inside its folder


@pytest.mark.parametrize("feature", ["/etc/passwd", "../other/feats/x.npy", "feats/../../x.npy", "..", ""])
def test_manifest_row_outside_folder_refused(features, tmp_path, feature):
    copy = tmp_path / "f"
    shutil.copytree(features, copy)
    lines = (copy / MANIFEST).read_text().splitlines()
    row = lines[3].split("\t")
    row[5] = feature
    lines[3] = "\t".join(row)
    (copy / MANIFEST).write_text("\n".join(lines) + "\n")
    with pytest.raises(ClsvcError) as e:
        read_manifest(copy)
    msg = str(e.value)
    assert "\n" not in msg and f"{copy / MANIFEST}: line 4 names feature {feature!r}, outside" in msg
    assert "re-run `clsvc preprocess`" in msg


def test_manifest_row_inside_folder_accepted(features, tmp_path):
    copy = tmp_path / "f"
    shutil.copytree(features, copy)
    text = (copy / MANIFEST).read_text().replace("\tfeats/spk_a/", "\tfeats/spk_b/../spk_a/", 1)
    (copy / MANIFEST).write_text(text)
    assert len(read_manifest(copy)) == len(read_manifest(features))


# ----------------------------------------------------------------------------------------------
# 5. feature files are validated when loaded


def _bad(mel: np.ndarray, kind: str) -> np.ndarray:
    if kind == "nan":
        mel = mel.copy()
        mel[3, 5] = np.nan
    elif kind == "inf":
        mel = mel.copy()
        mel[0, 0] = np.inf
    elif kind == "range":
        mel = mel * 40.0 - 20.0  # e.g. raw dB
    elif kind == "bands":
        mel = mel[:, :40]
    elif kind == "1d":
        mel = mel.ravel()
    elif kind == "3d":
        mel = mel[None]
    elif kind == "int":
        mel = (mel * 100).astype(np.int16)
    elif kind == "frames":
        mel = mel[:-3]
    return mel


@pytest.mark.parametrize("kind, message", [
    ("nan", "holds 1 NaN/inf value"), ("inf", "holds 1 NaN/inf value"),
    ("range", "outside the feature scale \\[0, 1\\]"), ("bands", "has 40 mel bands, the features' config has 80"),
    ("1d", "has shape"), ("3d", "has shape"), ("int", "holds int16 values, not float"),
    ("frames", "frames, the manifest says"),
])
def test_bad_feature_file_refused_and_rerun_fixes_it(features, corpus, tmp_path, kind, message):
    copy = tmp_path / "f"
    shutil.copytree(features, copy)
    entry = next(e for e in read_manifest(copy) if e.split == "train")
    path = copy / entry.feature
    np.save(path, _bad(np.load(path), kind))
    with pytest.raises(ClsvcError) as e:
        FeatureSet(copy, ("train",))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: feature file ")
    assert msg.endswith("re-run `clsvc preprocess` on the corpus")
    import re

    assert re.search(message, msg), msg
    # The advice works: the rerun makes the bad file again.
    preprocess(corpus, copy, MelConfig(), split=SplitSpec(holdout_regex=r"_006$"), jobs=1, progress=False)
    assert len(FeatureSet(copy, ("train",))) == len(FeatureSet(features, ("train",)))


def test_missing_feature_file_refused(features, tmp_path):
    copy = tmp_path / "f"
    shutil.copytree(features, copy)
    entry = read_manifest(copy)[0]
    (copy / entry.feature).unlink()
    with pytest.raises(ClsvcError, match="feature file missing or corrupt"):
        FeatureSet(copy, (entry.split,))


def test_mel_bands_follow_features_config(features, tmp_path):
    copy = tmp_path / "f"
    shutil.copytree(features, copy)
    info = json.loads((copy / "features.json").read_text())
    info["mel"]["n_mels"] = 40  # the folder says 40 bands; its files have 80
    (copy / "features.json").write_text(json.dumps(info))
    with pytest.raises(ClsvcError, match="has 80 mel bands, the features' config has 40"):
        FeatureSet(copy, ("train",))
    (copy / "features.json").unlink()  # folders without the record: 80 bands
    assert len(FeatureSet(copy, ("train",))) > 0


def test_load_feature_for_other_readers(features):
    entry = read_manifest(features)[0]
    mel = load_feature(features, entry, 80)
    assert mel.dtype == np.float32 and mel.shape == (entry.frames, 80)
