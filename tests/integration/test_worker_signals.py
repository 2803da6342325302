"""Signals as systemd, Kubernetes and a terminal send them (Celery's warm shutdown).

`run_sqs_worker` runs as a real subprocess in a session of its own, so a signal can go to the
supervisor alone (Kubernetes, Docker, ECS: PID 1) or to its whole process group (systemd's
control-group kill, `kill -- -PGID`, Ctrl-C). The fake LLM is slow, so every job is mid-call when
the signal comes. SIGTERM, however often and to whichever, is one graceful stop: every job
finishes, paid once, exit 0. Ctrl-C twice or SIGQUIT forces: non-zero at once, and what it cut
off is finished later by another worker.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import pytest

from questions.models import Question
from tests.factories import ask, ask_many
from tests.support import WorkerProcess, alive, child_pids, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}
LATENCY = 4.0  # each call; OPENAI_TIMEOUT is 10 s in these tests


def logged(worker: WorkerProcess, text: str, times: int) -> Callable[[], bool]:
    return lambda: worker.output.count(text) >= times


def start(worker_process: Callable[..., WorkerProcess], processes: int) -> WorkerProcess:
    """`processes` worker processes of 2 slots each, in a process group of their own."""
    worker = worker_process(
        f"--processes={processes}",
        "--concurrency=2",
        "--requeue-interval=0",
        "--visibility-timeout=2",
        new_session=True,
    )
    wait_until(logged(worker, "consuming", processes), timeout=60, what=f"{processes} to consume")
    return worker


def deliver(worker: WorkerProcess, delivery: str) -> None:
    """Send the graceful stop as `delivery` names it, waiting until each signal was seen."""
    processes = 1 + len(child_pids(worker.output))  # the supervisor, if any, and its children
    if delivery == "SIGTERM to the supervisor":
        worker.signal(signal.SIGTERM)
    elif delivery == "SIGTERM to the group":
        worker.signal_group(signal.SIGTERM)
    elif delivery == "SIGTERM to the group three times":
        worker.signal_group(signal.SIGTERM)
        wait_until(logged(worker, "SIGTERM received", processes), timeout=10, what="SIGTERM")
        # The supervisor logs each further SIGTERM (a child may see its two copies as one).
        for _ in range(2):
            repeats = worker.output.count("again: already stopping")
            worker.signal_group(signal.SIGTERM)
            wait_until(logged(worker, "again: already stopping", repeats + 1), timeout=10)
    elif delivery == "Ctrl-C once (SIGINT to the group)":
        worker.signal_group(signal.SIGINT)
    elif delivery == "one process, SIGTERM three times":
        for seen in range(1, 3):
            worker.signal(signal.SIGTERM)
            wait_until(logged(worker, "SIGTERM", seen), timeout=10, what=f"SIGTERM {seen}")
        worker.signal(signal.SIGTERM)
    else:  # pragma: no cover - a typo in a parameter
        raise AssertionError(delivery)


@pytest.mark.parametrize(
    ("delivery", "processes"),
    [
        ("SIGTERM to the supervisor", 2),
        ("SIGTERM to the group", 2),
        ("SIGTERM to the group three times", 2),
        ("Ctrl-C once (SIGINT to the group)", 2),
        ("one process, SIGTERM three times", 1),
    ],
)
def test_a_graceful_stop_finishes_every_job_in_flight_paid_once(
    user, queues, fake_llm, worker_process, delivery, processes
):
    fake_llm.configure(latency=LATENCY)
    worker = start(worker_process, processes)
    questions = ask_many(user, 2 * processes)
    assert fake_llm.wait_for_in_flight(2 * processes, timeout=30), worker.output

    deliver(worker, delivery)
    assert worker.wait(timeout=40) == 0, worker.output

    assert not any(alive(pid) for pid in child_pids(worker.output))
    rows = Question.objects.filter(pk__in=[q.pk for q in questions])
    assert sorted(rows.values_list("status", "attempts")) == [(Question.Status.SUCCEEDED, 1)] * len(
        questions
    )
    assert fake_llm.calls == len(questions)  # none paid twice
    assert not Question.objects.filter(
        status__in=[Question.Status.QUEUED, Question.Status.RUNNING]
    ).exists()
    assert queues.depth() == EMPTY
    assert "forced" not in worker.output


def test_a_long_poll_in_flight_at_the_stop_gives_its_message_back(
    user, queues, fake_llm, worker_process
):
    """The idle children are in a long poll when Ctrl-C reaches the group (SIGINT from the tty,
    SIGTERM from the supervisor: one graceful stop); a question asked just then is received by
    that poll, and must be handed back, not carried away."""
    worker = worker_process(
        "--processes=2",
        "--wait-time=5",
        "--requeue-interval=0",
        "--visibility-timeout=60",
        new_session=True,
    )
    wait_until(logged(worker, "consuming", 2), timeout=60, what="both children to consume")
    worker.signal_group(signal.SIGINT)
    # Asked once both children took the stop (on a busy machine a handler may run late, and a
    # question received before it is a job that rightly runs): their polls are still waiting.
    stopping = "received: finishing jobs in flight"
    wait_until(logged(worker, stopping, 2), timeout=10, what="both children to stop")
    question = ask(user)
    assert worker.wait(timeout=30) == 0, worker.output

    # With a 60 s visibility timeout a message received and kept would show as in flight.
    assert queues.depth() == {"visible": 1, "in_flight": 0, "delayed": 0}
    row = Question.objects.get(pk=question.pk)
    assert (row.status, row.attempts) == (Question.Status.QUEUED, 0)
    assert fake_llm.calls == 0


def force(worker: WorkerProcess, how: str) -> None:
    processes = 1 + len(child_pids(worker.output))
    if how == "Ctrl-C twice (SIGINT to the group)":
        worker.signal_group(signal.SIGINT)
        # Each process logs the first SIGINT once ("received", or "again" after the SIGTERM
        # the supervisor passed on).
        wait_until(logged(worker, "SIGINT", processes), timeout=10, what="the first SIGINT")
        worker.signal_group(signal.SIGINT)
    elif how == "SIGINT twice to the supervisor":
        worker.signal(signal.SIGINT)
        wait_until(logged(worker, "SIGTERM received", processes - 1), timeout=10, what="copies")
        worker.signal(signal.SIGINT)
    elif how in ("SIGQUIT to the supervisor", "SIGQUIT to one process"):
        worker.signal(signal.SIGQUIT)
    else:  # pragma: no cover - a typo in a parameter
        raise AssertionError(how)


@pytest.mark.parametrize(
    ("how", "processes"),
    [
        ("Ctrl-C twice (SIGINT to the group)", 2),
        ("SIGINT twice to the supervisor", 2),
        ("SIGQUIT to the supervisor", 2),
        ("SIGQUIT to one process", 1),
    ],
)
def test_a_forced_stop_exits_at_once_and_what_it_cut_off_is_redelivered(
    user, queues, fake_llm, worker_process, settings: Any, how, processes
):
    settings.OPENAI_TIMEOUT = 5.0  # the lease: 6 s after the claim
    settings.QUESTIONS_CLAIM_MARGIN = 1
    jobs = 2 * processes
    fake_llm.enqueue(*[{"hang": True}] * jobs)  # the first calls never answer; later ones do
    worker = start(worker_process, processes)
    questions = ask_many(user, jobs)
    assert fake_llm.wait_for_in_flight(jobs, timeout=30), worker.output
    children = child_pids(worker.output)

    force(worker, how)
    assert worker.wait(timeout=5) != 0, worker.output  # not the 30 s grace period
    wait_until(lambda: not any(alive(pid) for pid in children), timeout=2, what="children gone")
    rows = Question.objects.filter(pk__in=[q.pk for q in questions])
    assert set(rows.values_list("status", flat=True)) == {Question.Status.RUNNING}
    assert "forc" in worker.output

    again = worker_process("--visibility-timeout=2", "--burst", "--requeue-interval=0")
    assert again.wait(timeout=60) == 0, again.output
    assert (
        sorted(rows.values_list("status", "attempts"))
        == [
            (Question.Status.SUCCEEDED, 2)  # the cut-off call and the one that answered
        ]
        * jobs
    )
    assert fake_llm.calls == 2 * jobs
    assert queues.depth() == EMPTY
    assert queues.dlq_messages() == []
