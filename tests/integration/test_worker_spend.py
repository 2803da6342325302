"""A paid answer is never paid for twice and never lost: the database cut during the call, an
answer PostgreSQL cannot store as it is, and two workers whose clocks disagree."""

from __future__ import annotations

import pytest

from questions.models import Question
from questions.services import question_enqueue
from tests.factories import ask, reloaded, wait_for_status
from tests.support import database_proxy, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

EMPTY = {"visible": 0, "in_flight": 0, "delayed": 0}


def test_the_database_cut_during_the_llm_call_costs_no_second_call(
    user, queues, fake_llm, worker_process
):
    proxy, via_proxy = database_proxy()
    fake_llm.configure(latency=2.0, answer="Worth keeping.")
    try:
        worker = worker_process(
            "--requeue-interval=0", "--visibility-timeout=30", env={"DATABASE_URL": via_proxy}
        )
        question = ask(user)
        assert fake_llm.wait_for_calls(1, timeout=20), worker.output
        proxy.cut()  # every connection the worker holds is dropped mid-call
        wait_until(
            lambda: "could not store the answer" in worker.output,
            timeout=20,
            what="the worker to fail storing the paid answer",
        )
        proxy.restore()
        wait_for_status(
            question,
            Question.Status.SUCCEEDED,
            timeout=60,
            what="the answer to be stored after the outage",
        )
    finally:
        proxy.cut()
    row = reloaded(question)
    assert (row.answer, row.attempts) == ("Worth keeping.", 1)
    assert fake_llm.calls == 1


def test_an_answer_with_a_nul_and_a_500_character_model_is_stored_cleaned_after_one_call(
    user, queues, fake_llm, worker_process
):
    fake_llm.configure(answer="Half\x00and half")
    question = ask(user)

    worker = worker_process("--visibility-timeout=5", "--burst", env={"OPENAI_MODEL": "m" * 500})
    assert worker.wait(timeout=30) == 0, worker.output

    row = reloaded(question)
    assert (row.status, row.answer, row.model) == ("succeeded", "Halfand half", "m" * 200)
    assert fake_llm.calls == 1
    assert queues.depth() == EMPTY


def test_two_workers_whose_clocks_differ_by_60_seconds_never_call_twice(
    user, queues, fake_llm, worker_process, settings
):
    settings.OPENAI_TIMEOUT = 8.0
    settings.QUESTIONS_CLAIM_MARGIN = 1  # a 9 s lease, far shorter than the 60 s skew
    fake_llm.configure(latency=4.0)
    question = ask(user)
    assert question_enqueue(question_id=question.pk)  # the job on the queue twice

    on_time = worker_process("--visibility-timeout=30", "--concurrency=1", "--requeue-interval=0")
    assert fake_llm.wait_for_calls(1, timeout=20), on_time.output
    ahead = worker_process(
        "--visibility-timeout=30",
        "--burst",
        "--requeue-interval=0",
        env={
            "DJANGO_SETTINGS_MODULE": "tests.integration.skewed_settings",
            "TEST_CLOCK_SKEW_SECONDS": "60",
        },
    )
    wait_until(
        lambda: (
            "running under another worker's claim" in ahead.output
            or reloaded(question).status == Question.Status.SUCCEEDED
        ),
        timeout=30,
        what="the worker whose clock is ahead to see the duplicate",
    )
    assert ahead.wait(timeout=60) == 0, ahead.output

    row = reloaded(question)
    assert (row.status, row.attempts) == (Question.Status.SUCCEEDED, 1)
    assert fake_llm.calls == 1
    assert queues.depth() == EMPTY
