"""The chaos soak's judge (bench/soak/invariants.py) on made-up runs: a clean run passes every
check, and each kind of breakage fails the check that names it (so the soak can fail)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from bench.soak.chaos import Fault, Samples
from bench.soak.invariants import Check, JobRow, evaluate
from bench.soak.load import Posted, User
from bench.soak.plan import short

PLAN = short()
PRICE = Decimal(100) / 1_000_000


def _run(**changes: Any) -> dict[str, Check]:
    users = [User(1, "soak-0", "t0", Decimal("0.40")), User(2, "soak-1", "t1", None)]
    posted = [Posted(n=n, user=users[n % 2], job_id=f"job-{n}") for n in range(4)]
    rows = {
        p.job_id: JobRow(p.job_id, p.user.id, "succeeded", True, "", 1, Decimal("0.01"))
        for p in posted
        if p.job_id
    }
    calls = [
        {"n": n, "received_at": 100.0 + n, "status": 200, "content_at": 101.0 + n,
         "ended_at": 102.0 + n, "outcome": "answered", "prompt_words": 30}
        for n in range(4)
    ]  # fmt: skip
    faults = [Fault(50.0, "kill -9", {"pid": 123}), Fault(60.0, "SIGTERM group", {"exit_code": 0})]
    samples = Samples(pg=[(t, 10) for t in range(20)])
    run: dict[str, Any] = {
        "posted": posted, "rows": rows, "calls": calls, "faults": faults, "samples": samples,
        "ledger": {"rows": 4}, "pool": 31, "final_exits": {"worker-0": 0},
    }  # fmt: skip
    for key, change in changes.items():
        if callable(change):
            change(run[key])
        else:
            run[key] = change
    checks, _ = evaluate(plan=PLAN, price_per_token=PRICE, **run)
    return {check.name.split(" (")[0]: check for check in checks}


def _failed(checks: dict[str, Check]) -> set[str]:
    return {name for name, check in checks.items() if check.ok is False}


def test_a_clean_run_passes_every_check() -> None:
    assert _failed(_run()) == set()


def test_a_job_paid_twice_fails_unless_a_kill_cut_its_first_call() -> None:
    second_pay = {"n": 0, "received_at": 110.0, "status": 200, "content_at": 111.0,
                  "ended_at": 112.0, "outcome": "answered", "prompt_words": 30}  # fmt: skip

    def paid_again(calls: list[dict[str, Any]]) -> None:
        calls[0]["outcome"] = "cut"  # the first call was cut ...
        calls.append(second_pay)  # ... and the job paid again

    failed = _failed(_run(calls=paid_again, ledger={"rows": 5}))
    assert failed == {"paid calls per job", "jobs paid more than 1 + kills mid-call"}

    def killed_at_100_5(faults: list[Fault]) -> None:
        faults.append(Fault(100.5, "kill -9", {"pid": 7}))  # ... by a kill -9 during it

    assert _failed(_run(calls=paid_again, faults=killed_at_100_5, ledger={"rows": 5})) == set()


@pytest.mark.parametrize(
    ("status", "failed"),
    [
        ("running", {"jobs finished", "jobs lost"}),
        ("queued", {"jobs finished", "jobs lost"}),
    ],
)
def test_a_job_left_open_is_lost(status: str, failed: set[str]) -> None:
    def left_open(rows: dict[str, JobRow]) -> None:
        rows["job-1"].status = status

    assert _failed(_run(rows=left_open)) == failed


def test_a_failed_job_needs_a_reason() -> None:
    def failed_silently(rows: dict[str, JobRow]) -> None:
        rows["job-2"].status, rows["job-2"].error = "failed", ""

    assert _failed(_run(rows=failed_silently)) == {"jobs finished"}


def test_the_ledger_must_match_the_providers_count() -> None:
    assert _failed(_run(ledger={"rows": 3})) == {"ledger rows = provider's calls"}
    assert _failed(_run(ledger={"rows": 5})) == {"ledger rows = provider's calls"}

    def cut_by_a_kill(calls: list[dict[str, Any]]) -> None:
        calls[3].update(outcome="cut", content_at=None, status=None, ended_at=103.6)

    def killed_at_103_5(faults: list[Fault]) -> None:
        faults.append(Fault(103.5, "kill -9", {"pid": 7}))

    # the worker that made a call died with it: that call may have no row
    assert _failed(_run(calls=cut_by_a_kill, faults=killed_at_103_5, ledger={"rows": 3})) == set()
    # without a ledger table the jobs' costs stand in, and say so
    assert _failed(_run(ledger=None)) == set()
    assert "ledger = provider's paid calls" in _failed(
        _run(ledger=None, rows=lambda rows: setattr(rows["job-0"], "cost", None))
    )


def test_a_stall_past_the_timeout_a_pool_overrun_and_a_hard_stop_fail() -> None:
    def stalled(calls: list[dict[str, Any]]) -> None:
        calls[3]["content_at"] = calls[3]["received_at"] + PLAN.openai_timeout + 10

    assert _failed(_run(calls=stalled)) == {"longest call without content"}
    assert _failed(_run(samples=Samples(pg=[(0, 10), (2, 32)]))) == {"PostgreSQL sessions"}
    assert _failed(_run(final_exits={"worker-0": 1})) == {
        "SIGTERM to a worker's group: a graceful stop"
    }


def test_a_user_billed_past_the_budget_fails() -> None:
    def expensive(calls: list[dict[str, Any]]) -> None:
        calls[0]["prompt_words"] = 10_000  # about $1 a call: two of them pass $0.40 + one call
        calls[2]["prompt_words"] = 10_000

    assert _failed(_run(calls=expensive, ledger={"rows": 4})) == {"users above budget + one call"}


def test_a_kill_covers_only_the_calls_of_the_process_it_killed() -> None:
    """With the killed child's connections known, a call cut at that moment through another
    process's connection (a SIGTERM cutting it, say) is not excused."""

    def two_cut_then_paid_again(calls: list[dict[str, Any]]) -> None:
        for n, port in ((0, 5555), (1, 6666)):
            calls[n].update(outcome="cut", client_port=port, ended_at=calls[n]["received_at"] + 2)
            calls.append({**calls[n], "received_at": 120.0 + n, "content_at": 121.0 + n,
                          "ended_at": 122.0 + n, "outcome": "answered"})  # fmt: skip

    def killed(faults: list[Fault]) -> None:
        faults.append(Fault(101.5, "kill -9", {"pid": 7, "ports": [5555]}))

    checks = _run(calls=two_cut_then_paid_again, faults=killed, ledger={"rows": 6})
    assert _failed(checks) == {"paid calls per job", "jobs paid more than 1 + kills mid-call"}
    assert checks["jobs paid more than 1 + kills mid-call"].value.startswith("1 ")


def test_a_kill_while_the_worker_still_held_a_fully_sent_answer_counts() -> None:
    """The fake had sent the whole answer, but the killed worker had not stored it yet (its
    connection was still open): the job may pay again."""

    def sent_then_paid_again(calls: list[dict[str, Any]]) -> None:
        calls[0]["client_port"] = 5555  # answered 100 → 102
        calls.append({**calls[0], "received_at": 120.0, "content_at": 121.0, "ended_at": 122.0,
                      "client_port": 7777})  # fmt: skip

    def killed_just_after(faults: list[Fault]) -> None:
        faults.append(Fault(102.3, "kill -9", {"pid": 7, "ports": [5555]}))

    assert _failed(_run(calls=sent_then_paid_again, ledger={"rows": 5})) == {
        "paid calls per job", "jobs paid more than 1 + kills mid-call"
    }  # fmt: skip
    assert (
        _failed(_run(calls=sent_then_paid_again, faults=killed_just_after, ledger={"rows": 5}))
        == set()
    )
