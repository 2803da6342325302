"""The transport stays a transport: nothing under questions/sqs/ imports the domain."""

from __future__ import annotations

import ast

from tests.support import ROOT

SQS = ROOT / "questions" / "sqs"
DOMAIN = (
    "questions.services",
    "questions.selectors",
    "questions.llm",
    "questions.tasks",
    "questions.models",
    "questions.answering",
    "questions.dbpool",
)


def _imports(path: object) -> set[str]:
    tree = ast.parse(path.read_text())  # type: ignore[attr-defined]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_sqs_imports_nothing_of_the_domain():
    files = sorted(SQS.glob("*.py"))
    assert len(files) >= 6
    offending = {
        path.name: sorted(name for name in _imports(path) if name.startswith(DOMAIN))
        for path in files
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_no_sqs_module_is_over_250_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in SQS.glob("*.py")}
    assert max(sizes.values()) <= 250, sizes
