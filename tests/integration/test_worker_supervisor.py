"""`run_sqs_worker --processes 2`: the supervisor forwards SIGTERM, restarts a child killed with
-9, and serves one metrics endpoint for both children."""

from __future__ import annotations

import os
import re
import signal
import urllib.request

import pytest

from questions.models import Question
from tests.factories import ask_many
from tests.support import alive, child_pids, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def answered(questions: list[Question]) -> bool:
    done = Question.objects.filter(
        pk__in=[q.pk for q in questions], status=Question.Status.SUCCEEDED
    )
    return done.count() == len(questions)


def test_two_processes_restart_a_killed_child_share_metrics_and_stop_on_sigterm(
    user, queues, fake_llm, worker_process
):
    port = free_port()
    # A short visibility: a receive the killed child had on its way may still take a message.
    supervisor = worker_process(
        "--processes=2", f"--metrics-port={port}", "--requeue-interval=0", "--visibility-timeout=3"
    )
    wait_until(lambda: len(child_pids(supervisor.output)) == 2, timeout=20, what="two children")
    wait_until(
        lambda: supervisor.output.count("consuming") >= 2, timeout=30, what="both to consume"
    )
    first = ask_many(user, 6, "Before")
    wait_until(lambda: answered(first), timeout=30, what="the first answers")

    victim = child_pids(supervisor.output)[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(child_pids(supervisor.output)) == 3, timeout=20, what="a restart")
    assert f"Worker process {victim} died" in supervisor.output
    second = ask_many(user, 6, "After")
    wait_until(lambda: answered(second), timeout=30, what="the answers after the restart")

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    finished = sum(
        float(value)
        for value in re.findall(
            r'^questions_jobs_finished_total\{outcome="succeeded"\} (\S+)$', text, re.M
        )
    )
    # The killed child's counts may be lost with it; the live children's add up in one scrape.
    assert finished >= 6

    children = [pid for pid in child_pids(supervisor.output) if pid != victim]
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait(timeout=30) == 0, supervisor.output
    assert not any(alive(pid) for pid in children)
    assert fake_llm.calls == 12
