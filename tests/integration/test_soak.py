"""The short chaos soak (bench/soak, 1,000 jobs, about 3 minutes): the service under load while
worker children are killed, workers stopped by SIGTERM to their group, Redis, PostgreSQL and the
events process restarted and SQS cut off, on services of its own (a private PostgreSQL cluster
and redis-server, fauxqs behind a TCP proxy). Every invariant of the report must hold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.timeout(900), pytest.mark.slow(200)]


def test_the_short_chaos_soak_keeps_every_invariant(tmp_path: Path) -> None:
    if not (ROOT / "bench" / "node_modules" / "fauxqs").is_dir():
        pytest.fail("fauxqs is missing: `make test` installs it (cd bench && npm ci)")
    report_path = tmp_path / "soak.json"
    output = tmp_path / "soak.log"
    with output.open("w") as log:
        soak = subprocess.Popen(
            [sys.executable, "-m", "bench.soak", "--short", "--json", str(report_path)],
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            returncode = soak.wait(timeout=780)
        except subprocess.TimeoutExpired:
            soak.terminate()  # SIGTERM: the soak stops what it started and removes its dirs
            soak.wait(timeout=100)
            raise
    printed = output.read_text()
    assert report_path.exists(), printed[-5000:]
    report = json.loads(report_path.read_text())
    figures = report["figures"]
    failed = [c for c in report["checks"] if c["ok"] is False]

    assert not failed, (
        "\n".join(f"{c['name']}: {c['value']} (limit {c['limit']})" for c in failed)
        + "\n"
        + printed[-3000:]
    )
    assert returncode == 0, printed[-3000:]
    # The run was the run it claims to be: the load went in (only budgets refused some), every
    # kind of fault was dealt, the watchers saw jobs end.
    jobs = figures["jobs"]
    assert jobs["asked"] == 1000
    assert jobs["accepted"] + jobs["refused"].get("budget_exceeded", 0) == 1000
    assert jobs["accepted"] >= 800
    assert figures["provider"]["paid"] >= figures["jobs"]["statuses"].get("succeeded", 0)
    assert set(figures["fault_counts"]) >= {
        "kill -9", "SIGTERM group", "restart Redis", "restart PostgreSQL", "cut SQS",
        "restart events", "provider pause",
    }  # fmt: skip
    assert "fault failed" not in figures["fault_counts"]
    assert figures["watchers"]["watched_to_end"] > 0
