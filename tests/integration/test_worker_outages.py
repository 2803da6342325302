"""The worker rides out SQS and PostgreSQL going away and carries on when they return.

Real outages, not mocks: a private moto server that is stopped and started again on the same
port, and a TCP proxy between the worker and PostgreSQL that drops every connection and refuses
new ones for a while.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from questions.models import Question
from questions.services import question_create
from questions.sqs.client import reset_sqs_client
from questions.sqs.queues import queues_create
from tests.factories import reloaded, wait_for_status
from tests.fakes.sqs import start_moto
from tests.support import database_proxy, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_sqs_going_away_and_coming_back(user, fake_llm, worker_process, settings, monkeypatch):
    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{port}")
    reset_sqs_client()
    suffix = uuid.uuid4().hex[:8]
    settings.SQS_QUEUE_NAME, settings.SQS_DLQ_NAME = f"outage-{suffix}", f"outage-dlq-{suffix}"
    names = {
        "queue_name": settings.SQS_QUEUE_NAME,
        "dlq_name": settings.SQS_DLQ_NAME,
        "visibility_timeout": 30,
        "max_receive_count": 10,
    }
    sqs = start_moto(port)
    try:
        wait_until(lambda: _try(lambda: queues_create(**names)), timeout=30, what="moto")
        worker = worker_process("--requeue-interval=0")
        first, _ = question_create(owner=user, text="Before the outage?")
        wait_for_status(first, Question.Status.SUCCEEDED, timeout=30, what="the first answer")

        sqs.terminate()
        sqs.wait(timeout=10)
        wait_until(
            lambda: "receive_message failed" in worker.output,
            timeout=30,
            what="the worker to notice",
        )
        assert worker.process.poll() is None, worker.output

        sqs = start_moto(port)  # a fresh server: the queues are created again, same URLs
        wait_until(lambda: _try(lambda: queues_create(**names)), timeout=30, what="moto again")
        second, _ = question_create(owner=user, text="After the outage?")
        wait_for_status(
            second, Question.Status.SUCCEEDED, timeout=60, what="the answer after the outage"
        )
    finally:
        sqs.terminate()
        sqs.wait(timeout=10)
        reset_sqs_client()
    assert worker.process.poll() is None, "the worker died"
    assert fake_llm.calls == 2


def test_postgresql_going_away_and_coming_back(user, queues, fake_llm, worker_process):
    proxy, via_proxy = database_proxy()
    try:
        worker = worker_process("--requeue-interval=0", env={"DATABASE_URL": via_proxy})
        first, _ = question_create(owner=user, text="Before the outage?")
        wait_for_status(first, Question.Status.SUCCEEDED, timeout=30, what="the first answer")

        proxy.cut()
        second, _ = question_create(
            owner=user, text="During the outage?"
        )  # this test's own DB link
        wait_until(
            lambda: "the message will be delivered again" in worker.output,
            timeout=30,
            what="the worker to hit the outage",
        )
        assert reloaded(second).status == Question.Status.QUEUED
        assert worker.process.poll() is None, worker.output

        proxy.restore()
        wait_for_status(
            second, Question.Status.SUCCEEDED, timeout=60, what="the answer after the outage"
        )
    finally:
        proxy.cut()
    assert worker.process.poll() is None, "the worker died"
    assert fake_llm.calls == 2
    assert reloaded(second).attempts == 1  # the outage cost no LLM attempt


def _try(action: Any) -> bool:
    try:
        action()
    except Exception:
        return False
    return True
