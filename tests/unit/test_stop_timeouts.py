"""The numbers that must agree (README "Stopping and deploying"): whoever stops the worker waits
longer than the worker's own graceful stop before it kills it, in docker-compose.yml and in the
systemd unit, as their command lines are written. A change to one without the other fails here.

A graceful stop lasts at most --shutdown-timeout (jobs in flight) or --wait-time (a long poll in
flight, whose messages are given back), whichever is longer, plus the time to give messages back
and exit: MARGIN.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
MARGIN = 15.0  # seconds beyond the graceful stop
DEFAULTS = {"--shutdown-timeout": 30.0, "--wait-time": 20.0}  # run_sqs_worker's own


def option(argv: list[str], name: str) -> float:
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            return float(arg.split("=", 1)[1])
        if arg == name:
            return float(argv[i + 1])
    return DEFAULTS[name]


def graceful_stop_seconds(argv: list[str]) -> float:
    assert "run_sqs_worker" in argv, argv
    return max(option(argv, "--shutdown-timeout"), option(argv, "--wait-time"))


def seconds(duration: str) -> float:
    """A compose or systemd duration: `75`, `75s`, `1m15s`, `1min 15s`."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", duration.strip())
    assert parts, duration
    return sum(float(n) * units[unit] for n, unit in parts)


def test_compose_waits_longer_than_the_workers_graceful_stop():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    worker = compose["services"]["worker"]
    argv = [str(arg) for arg in worker["command"]]
    grace = seconds(str(worker["stop_grace_period"]))
    assert grace >= graceful_stop_seconds(argv) + MARGIN, (grace, argv)
    # Exec form: the worker itself is PID 1 and gets the SIGTERM (no shell in between).
    assert argv[0] == "python"


def systemd_unit() -> dict[str, str]:
    unit: dict[str, str] = {}
    for line in (ROOT / "deploy/systemd/questions-worker.service").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            unit[key.strip()] = value.strip()
    return unit


def test_the_systemd_unit_waits_longer_than_the_workers_graceful_stop():
    unit = systemd_unit()
    argv = shlex.split(unit["ExecStart"])
    assert seconds(unit["TimeoutStopSec"]) >= graceful_stop_seconds(argv) + MARGIN, unit
    # SIGTERM, not SIGINT or SIGQUIT: the one signal that never forces, however it arrives.
    assert unit.get("KillSignal", "SIGTERM") == "SIGTERM"
    assert unit["KillMode"] in ("mixed", "control-group")
    assert unit["Restart"] == "on-failure"


def test_the_margin_is_checked_both_ways():
    """The rule itself: a stop timeout equal to the shutdown timeout is refused."""
    argv = ["python", "manage.py", "run_sqs_worker", "--shutdown-timeout=40", "--wait-time", "5"]
    assert graceful_stop_seconds(argv) == 40.0
    assert not seconds("40s") >= graceful_stop_seconds(argv) + MARGIN
    assert graceful_stop_seconds(["manage.py", "run_sqs_worker"]) == 30.0
    assert seconds("1min 15s") == seconds("1m15s") == 75.0
