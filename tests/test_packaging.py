"""The wheel is self-contained: built-in configs and resources are real files inside it, and an
installed copy trains and converts without the source tree.

The wheel is built with ``pip wheel --no-deps --no-build-isolation`` from the repository, with
setuptools' build and egg-info folders redirected to a temp dir (``DIST_EXTRA_CONFIG``) so the
build neither writes into the checkout nor packs stale files left in ``build/lib``. It is then
unzipped and run in a subprocess whose only ``clsvc`` is the unzipped one.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import TINY

REPO = Path(__file__).resolve().parents[1]

REQUIRED = [
    "clsvc/__init__.py",
    "clsvc/__main__.py",
    "clsvc/configs/cpu.yaml",
    "clsvc/configs/cpu-paper.yaml",
    "clsvc/configs/paper.yaml",
    "clsvc/configs/experiments/bench-cpu.yaml",
    "clsvc/resources/harvard.txt",
    "clsvc/resources/demo/clips.json",
    "clsvc/resources/demo/CREDITS.md",
    "clsvc/pretrained/README.md",
]

# Runs `python -m clsvc ...` with the unzipped wheel as the only place clsvc can come from: the
# wheel dir goes first on sys.path, the editable install's entries (a plain `.pth` path to
# REPO/src today, a meta-path finder with newer setuptools' strict/compat modes) are removed.
BOOTSTRAP = r"""
import os, runpy, sys
wheel_dir, src_dir = sys.argv[1], os.path.realpath(sys.argv[2])
sys.path[:] = [wheel_dir] + [p for p in sys.path if p and os.path.realpath(p) != src_dir and p != wheel_dir]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in type(f).__module__]
sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
if sys.argv[3] == "--where":
    import clsvc, clsvc.config
    print(os.path.realpath(clsvc.__file__))
    print(os.path.realpath(clsvc.config.BUILTIN_CONFIG_DIR))
    raise SystemExit(0)
sys.argv = ["clsvc"] + sys.argv[3:]
runpy.run_module("clsvc", run_name="__main__", alter_sys=True)
"""


def _build_wheel(tmp: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    extra = tmp / "setuptools-extra.cfg"
    extra.write_text(f"[build]\nbuild_base = {tmp / 'build'}\n[egg_info]\negg_base = {tmp}\n")
    env = {**os.environ, "DIST_EXTRA_CONFIG": str(extra), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    dist = tmp / "dist"
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(dist), str(REPO)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    wheels = list(dist.glob("clsvc-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_is_self_contained(features, corpus, tmp_path):
    wheel = _build_wheel(tmp_path / "wheel")

    with zipfile.ZipFile(wheel) as z:
        infos = z.infolist()
        names = {i.filename for i in infos}
        missing = [n for n in REQUIRED if n not in names]
        assert not missing, f"wheel lacks {missing}; has {sorted(names)}"
        # Every built-in config and experiment in the source tree ships (nothing left behind).
        src_configs = REPO / "src" / "clsvc" / "configs"
        for f in src_configs.rglob("*.yaml"):
            assert f"clsvc/configs/{f.relative_to(src_configs).as_posix()}" in names
        # Zip entries with the S_IFLNK file type are symlinks; a wheel must hold real files.
        links = [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
        assert not links, f"symlink entries in the wheel: {links}"
        unpacked = tmp_path / "unpacked"
        z.extractall(unpacked)

    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(PYTHONPATH=str(unpacked), PYTHONDONTWRITEBYTECODE="1", PYTHONHASHSEED="0")

    def run(*args: str | Path, timeout: int = 120) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-c", BOOTSTRAP, str(unpacked), str(REPO / "src"), *map(str, args)]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, env=env, timeout=timeout)

    r = run("--where")
    assert r.returncode == 0, r.stderr
    module_file, config_dir = (Path(line) for line in r.stdout.split())
    root = unpacked.resolve()
    assert module_file.is_relative_to(root), f"clsvc imported from {module_file}, not the unzipped wheel"
    assert config_dir == root / "clsvc" / "configs"

    run_dir = tmp_path / "run"
    r = run("train", "--config", "cpu", "--data", features, "--out", run_dir, "--quiet", "--device", "cpu",
            *TINY, "train.max_steps=4")
    assert r.returncode == 0, r.stdout + r.stderr
    ckpt = run_dir / "checkpoints" / "last.pt"
    assert ckpt.is_file(), r.stdout + r.stderr

    source = sorted((corpus / "spk_a").glob("*.wav"))[0]
    target = sorted((corpus / "spk_b").glob("*.wav"))[0]
    out = tmp_path / "out.wav"
    r = run("convert", "--checkpoint", ckpt, "--source", source, "--target", target, "--out", out, "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert out.is_file() and out.stat().st_size > 44, r.stdout + r.stderr
