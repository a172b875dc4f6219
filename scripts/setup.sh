#!/usr/bin/env bash
# Install clsvc into ./.venv on a fresh Debian/Ubuntu machine, with espeak-ng for `clsvc demo --train`
# and chromium + chromium-driver for the browser test of `clsvc serve`.
#   TORCH_SPEC  the torch requirement to install first (default torch==2.13.0; on a GPU machine
#               pick the build for your CUDA from pytorch.org)
#   PYTHON      the interpreter for the venv (default python3, 3.10 or newer)
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages, each only when missing: espeak-ng for `clsvc demo --train`; chromium and
# chromium-driver for the browser test of `clsvc serve` (tests/test_serve_browser.py skips without them).
apt_pkgs=()
command -v espeak-ng >/dev/null 2>&1 || apt_pkgs+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || apt_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || apt_pkgs+=(chromium-driver)
if [ "${#apt_pkgs[@]}" -gt 0 ]; then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=""
        [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
    else
        echo "note: no apt-get; install ${apt_pkgs[*]} with your package manager" \
             "(espeak-ng: \`clsvc demo --train\`; chromium + its chromedriver: the browser test of \`clsvc serve\`)" >&2
    fi
fi

PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --upgrade pip "setuptools<80" wheel
# torch first: a bare `torch` dependency would pull a multi-GB CUDA build on CPU-only machines.
.venv/bin/pip install -q "${TORCH_SPEC:-torch==2.13.0}"
.venv/bin/pip install -q -e ".[dev]"
echo "clsvc installed in .venv ($(.venv/bin/clsvc --version))"
