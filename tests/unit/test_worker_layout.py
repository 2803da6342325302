"""Imports run one way: the import-linter contracts in pyproject.toml (`make lint` runs the same
command), and the transport stays small."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import ROOT

SQS = ROOT / "questions" / "sqs"


def test_import_contracts_are_kept():
    lint_imports = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Transport and integrations never import the domain KEPT" in result.stdout
    assert "The domain never imports delivery KEPT" in result.stdout
    assert "The domain never imports questions.worker KEPT" in result.stdout
    assert "no circle through" in result.stdout


def test_no_sqs_module_is_over_250_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in SQS.glob("*.py")}
    assert max(sizes.values()) <= 250, sizes
