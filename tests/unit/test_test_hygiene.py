"""The tests' own structure: shared helpers live in helper modules (tests/helpers.py and the
non-test modules beside the tests), never in a test module another one imports, and no test reaches
into private attributes of the app, the fleet or Textual (the app offers public accessors:
`notifications()`, `screen_text()`, `quote_for`)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import REPO

TESTS = REPO / "tests"
PRIVATE = re.compile(r"\b(?:app|fleet|registry|poller|screen)\._[a-z]\w*")


def _modules() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__snapshots__" not in p.parts)


def _imported(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_no_module_imports_a_test_module_or_conftest() -> None:
    offenders = []
    for path in _modules():
        for name in _imported(ast.parse(path.read_text(encoding="utf-8"))):
            last = name.split(".")[-1]
            if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                offenders.append(f"{path.relative_to(REPO)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_no_test_touches_private_attributes_of_the_app_or_textual() -> None:
    offenders = []
    for path in _modules():
        text = path.read_text(encoding="utf-8")
        if path.name == Path(__file__).name:
            continue
        for lineno, line in enumerate(text.splitlines(), start=1):
            if PRIVATE.search(line) or re.search(r"\btextual(\.\w+)*\._\w+", line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
