"""The package's shape: imports flow one way, inference and evaluation need nothing from
training, and no module outside ``models/`` asks which kind of system it holds."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "clsvc"


def _module_name(path: Path) -> str:
    parts = ("clsvc",) + path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    """Module -> the clsvc modules it imports (anywhere in the file, lazy imports included)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - node.level + 1]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # `from . import x` / `from .pkg import sub` may name submodules.
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def _reach(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_is_parsed():
    graph = _graph()
    assert "clsvc.models.voices" in graph["clsvc.models.clsvc"]
    assert "clsvc.checkpoint" in graph["clsvc.inference"]
    assert "clsvc.training.distributed" in graph["clsvc.training.loop"]  # `from . import distributed`


def test_no_import_cycles():
    graph = _graph()
    cycles = sorted(m for m in graph if m in _reach(graph, m))
    assert not cycles, f"modules on an import cycle: {cycles}"


@pytest.mark.parametrize("root", ["clsvc.inference", "clsvc.checkpoint", "clsvc.evaluation.suite",
                                  "clsvc.evaluation", "clsvc.models"])
def test_inference_and_evaluation_need_nothing_from_training(root):
    graph = _graph()
    roots = [m for m in graph if m == root or m.startswith(root + ".")]
    used = set().union(*(_reach(graph, r) | {r} for r in roots))
    assert not {m for m in used if m.startswith("clsvc.training")}


# What a module asking "which kind of system is this?" looks like: the flags the systems used to
# carry, or a test against a voice-part or system class.
KIND_TESTS = re.compile(r"\.embedding\s*(==|!=|in\b)|needs_source_vector|has_content|speaker_vectors\(|"
                        r"isinstance\([^)]*(Voice|ClsVC|AutoVC|VQVCPlus|VAEVC|StarGANVC2)\b")


def test_no_module_outside_models_branches_on_the_kind_of_system():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.relative_to(SRC).parts[0] == "models":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if KIND_TESTS.search(line):
                offenders.append(f"{path.relative_to(SRC)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
