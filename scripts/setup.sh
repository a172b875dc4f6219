#!/usr/bin/env bash
# Install clsvc into ./.venv on a fresh Debian/Ubuntu machine, with espeak-ng for `clsvc demo --train`.
#   --browser   also chromium + chromium-driver, for the browser test of `clsvc serve` (CI passes it;
#               tests/test_serve_browser.py skips without them)
#   TORCH_SPEC  the torch requirement to install first (default torch==2.13.0; on a GPU machine
#               pick the build for your CUDA from pytorch.org)
#   PYTHON      the interpreter for the venv (default python3, 3.10 or newer)
set -euo pipefail
cd "$(dirname "$0")/.."

browser=0
for arg in "$@"; do
    case "$arg" in
        --browser) browser=1 ;;
        *) echo "scripts/setup.sh: unknown option $arg (known: --browser)" >&2; exit 2 ;;
    esac
done

# System packages, each only when missing: espeak-ng for `clsvc demo --train`; with --browser,
# chromium and chromium-driver (a few hundred MB: only for the browser test).
apt_pkgs=()
command -v espeak-ng >/dev/null 2>&1 || apt_pkgs+=(espeak-ng)
if [ "$browser" = 1 ]; then
    command -v chromium >/dev/null 2>&1 || apt_pkgs+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || apt_pkgs+=(chromium-driver)
fi
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
