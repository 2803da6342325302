"""observability/alerts.yml, checked and unit-tested by Debian's promtool: the oldest queued
job's age alarms on the max over the worker pods (each reports the same database figure), and
the absence of every worker alarms too."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from tests.support import ROOT

ALERTS = ROOT / "observability" / "alerts.yml"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    result = _promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr


def _unit_test(tmp_path: Path, tests: list[dict]) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": tests})
    )
    return _promtool("test", "rules", str(spec))


TWO_WORKERS_WAITING = {
    "interval": "1m",
    "input_series": [
        # Two worker pods report the same database figure; a third has just started (0 → it
        # saw the queue later). Summing them would double the age; max() does not.
        {"series": 'questions_oldest_queued_job_age_seconds{job="worker",pod="w1"}',
         "values": "200+60x15"},
        {"series": 'questions_oldest_queued_job_age_seconds{job="worker",pod="w2"}',
         "values": "200+60x15"},
    ],
}  # fmt: skip


def test_the_oldest_job_alert_fires_on_the_max_after_five_minutes(tmp_path: Path) -> None:
    rule = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"][0]
    fired = {
        "exp_labels": {"severity": "page"},
        # 200 s + 8 × 60 s at 8m: the max, not the sum of the two pods (22m 40s).
        "exp_annotations": {
            "summary": "A question has waited 11m 20s in the queue",
            "description": rule["annotations"]["description"],
        },
    }
    result = _unit_test(
        tmp_path,
        [
            {
                **TWO_WORKERS_WAITING,
                "alert_rule_test": [
                    # 320 s old at 2m: over the line, not yet for 5 minutes.
                    {"eval_time": "4m", "alertname": "QuestionsOldestQueuedJobTooOld",
                     "exp_alerts": []},
                    {"eval_time": "8m", "alertname": "QuestionsOldestQueuedJobTooOld",
                     "exp_alerts": [fired]},
                    {"eval_time": "8m", "alertname": "QuestionsNoWorkerReporting",
                     "exp_alerts": []},
                ],
                "promql_expr_test": [
                    {"expr": "max(questions_oldest_queued_job_age_seconds)", "eval_time": "5m",
                     "exp_samples": [{"labels": "{}", "value": 500}]},
                ],
            }
        ],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_worker_reporting_alerts(tmp_path: Path) -> None:
    result = _unit_test(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [{"series": "up", "values": "1x20"}],
                "alert_rule_test": [
                    {"eval_time": "5m", "alertname": "QuestionsNoWorkerReporting",
                     "exp_alerts": []},
                    {"eval_time": "15m", "alertname": "QuestionsNoWorkerReporting",
                     "exp_alerts": [{"exp_labels": {"severity": "page"}, "exp_annotations": {
                         "summary": "No worker has reported the queue's oldest job for 10 minutes"
                     }}]},
                ],
            }
        ],
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """promtool really checks: the same series with an alert expected too early fails."""
    result = _unit_test(
        tmp_path,
        [
            {
                **TWO_WORKERS_WAITING,
                "alert_rule_test": [
                    {"eval_time": "4m", "alertname": "QuestionsOldestQueuedJobTooOld",
                     "exp_alerts": [{"exp_labels": {"severity": "page"}}]},
                ],
            }
        ],
    )  # fmt: skip
    assert result.returncode != 0


def test_dashboard_takes_the_max_of_what_every_worker_reports_alike() -> None:
    """With several worker pods, each reports the same queue depth and oldest job age: the
    dashboard takes max() of them (a sum would count the queue once per pod)."""
    from tests.integration.stack_configs import DASHBOARD, dashboard_exprs

    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    assert "max(questions_oldest_queued_job_age_seconds)" in exprs
    for expr in exprs:
        for alike in ("questions_oldest_queued_job_age_seconds", "questions_sqs_queue_messages"):
            assert f"sum({alike}" not in expr and f"sum by (state) ({alike}" not in expr, expr
