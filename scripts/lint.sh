#!/usr/bin/env bash
# Static checks: ruff (style, imports, bugbear, pyupgrade) and mypy, both configured in
# pyproject.toml. Runs both and exits non-zero if either reports anything.
#   VENV  the virtual environment holding ruff and mypy (default ./.venv; `pip install -e .[dev]`)
set -uo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
for tool in ruff mypy; do
    if [ ! -x "$VENV/bin/$tool" ]; then
        echo "lint: $VENV/bin/$tool not found; install the dev extras: $VENV/bin/pip install -e '.[dev]'" >&2
        exit 2
    fi
done

status=0
echo "== ruff check src tests benchmarks"
"$VENV/bin/ruff" check src tests benchmarks || status=1
echo "== mypy (files from [tool.mypy] in pyproject.toml)"
"$VENV/bin/mypy" || status=1

if [ "$status" -ne 0 ]; then
    echo "lint: findings above" >&2
fi
exit "$status"
