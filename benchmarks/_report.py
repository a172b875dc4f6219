"""How the benchmark scripts hand back what they measured: a JSON result file, the Markdown table
beside it (same name, ``.md``), and the table printed.

The scripts import this module as ``from _report import write_result``: run as
``python benchmarks/X.py`` (from any working directory) Python puts ``benchmarks/`` first on
``sys.path``; a script loaded by file path (the tests) puts it there itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clsvc.files import atomic_write_text


def markdown_path(out: Path) -> Path:
    """The Markdown file that goes with JSON result file ``out``: ``out`` with suffix ``.md``."""
    return Path(out).with_suffix(".md")


def write_result(out: Path, result: dict[str, Any], markdown_lines: list[str]) -> None:
    """Write ``result`` to ``out`` as JSON (indent 2, a final newline) and ``markdown_lines`` to
    :func:`markdown_path` (``out``) (lines joined by newlines, a final newline), each atomically
    (a reader sees the old file or the new one, never half of one), creating ``out``'s folder;
    then print the Markdown. Values JSON cannot hold as numbers (NaN, inf) are written as Python's
    ``json`` writes them: callers that want strict JSON clean them first."""
    out = Path(out)
    md = "\n".join(markdown_lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    atomic_write_text(markdown_path(out), md + "\n")
    print(md)
