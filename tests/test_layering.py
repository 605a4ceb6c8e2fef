"""The rules of the house, read from the source: each step imports only common/ and itself; common/ imports no step."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("train", "serve", "eval")
KIT = (*STEPS, "common", "supportkit")


def kit_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every import of a kit package in the file, function-level imports included."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return [(line, top) for line, top in found if top in KIT]


@pytest.mark.parametrize("package", [*STEPS, "common"])
def test_each_package_imports_only_what_the_layering_allows(package):
    allowed = {"common", package}
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {top}"
             for path in sorted((ROOT / package).rglob("*.py"))
             for line, top in kit_imports(path) if top not in allowed]
    assert not wrong, "\n".join(wrong)


def test_nobody_writes_import_eval():
    """`import eval` shadows the builtin; `from eval.x import y` is the way."""
    offenders = []
    for package in (*KIT, "tests", "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import) and any(a.name == "eval" for a in node.names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders


def test_the_check_sees_a_crossing(tmp_path):
    """The test above can fail: a step importing another step is found, even inside a function."""
    path = tmp_path / "x.py"
    path.write_text("import json\nfrom common.records import Message\n\ndef f():\n    from serve.chat import ChatService\n")
    assert kit_imports(path) == [(2, "common"), (5, "serve")]
