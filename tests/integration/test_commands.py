"""The ops commands against the real SQS server and PostgreSQL: what they print, what they
change, and a clear CommandError (non-zero exit) when they cannot do their job."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from questions.models import Question
from questions.sqs.client import get_sqs_client, reset_sqs_client
from tests.factories import QuestionFactory, reloaded
from tests.support import free_port

pytestmark = pytest.mark.django_db(transaction=True)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=out)
    return out.getvalue()


@pytest.fixture
def sqs_unreachable(sqs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's SQS client pointed at a closed port; restored afterwards."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{free_port()}")
    reset_sqs_client()
    yield
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", sqs_endpoint)
    reset_sqs_client()


def test_create_sqs_queues_is_idempotent(sqs_endpoint):
    name = f"q-{uuid.uuid4().hex[:8]}"
    args = ("create_sqs_queues", f"--queue={name}", f"--dlq={name}-dlq")
    first = run(*args, "--visibility-timeout=45", "--max-receive-count=4")
    second = run(*args, "--visibility-timeout=50", "--max-receive-count=6")

    assert first.splitlines()[0] == second.splitlines()[0]  # same queue URL
    assert "after 6 receives" in second
    client = get_sqs_client()
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "50"
    policy = json.loads(attributes["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == 6
    assert policy["deadLetterTargetArn"].endswith(f"{name}-dlq")
    assert len([u for u in client.list_queues()["QueueUrls"] if u.endswith(f"/{name}")]) == 1


def test_queue_stats_reports_depths_jobs_and_the_oldest_waiting(user, queues):
    QuestionFactory(owner=user, created_at=timezone.now() - timedelta(seconds=120))
    QuestionFactory(owner=user, status=Question.Status.SUCCEEDED)
    queues.send_raw("one")
    queues.send_raw("two")
    get_sqs_client().send_message(QueueUrl=queues.dlq_url, MessageBody="dead")

    output = run("queue_stats")
    assert f"Queue {queues.name}: 2 visible, 0 in flight, 0 delayed" in output
    assert f"DLQ   {queues.dlq_name}: 1 messages" in output
    assert "Jobs: 1 queued, 0 running, 1 succeeded, 0 failed" in output
    assert "Oldest waiting job: 120s old" in output or "Oldest waiting job: 121s old" in output

    data = json.loads(run("queue_stats", "--json"))
    assert data["queue"] == {"visible": 2, "in_flight": 0, "delayed": 0}
    assert data["dlq"]["visible"] == 1
    assert data["jobs"]["queued"] == 1 and data["jobs"]["oldest_waiting_seconds"] >= 120


def test_requeue_jobs_sends_unsent_and_stale_jobs_and_failed_only_on_request(user, queues):
    old = timezone.now() - timedelta(hours=1)
    unsent = QuestionFactory(owner=user, created_at=old)
    stale = QuestionFactory(owner=user, created_at=old, enqueued_at=old)
    failed = QuestionFactory(owner=user, status=Question.Status.FAILED, attempts=5, error="x")
    fresh = QuestionFactory(owner=user)  # just asked: its own send may still be on its way

    output = run("requeue_jobs")
    assert "Requeued 2 jobs: 1 never sent, 1 stale, 0 with an expired claim, 0 failed." in output
    assert queues.depth()["visible"] == 2
    for question in (unsent, stale):
        assert reloaded(question).enqueued_at > old
    assert reloaded(fresh).enqueued_at is None
    assert reloaded(failed).status == Question.Status.FAILED

    output = run("requeue_jobs", "--failed")
    assert "0 stale" in output and "1 failed." in output
    row = reloaded(failed)
    assert (row.status, row.attempts, row.error) == (Question.Status.QUEUED, 0, "")
    assert row.enqueued_at is not None
    assert queues.depth()["visible"] == 3


def test_requeue_jobs_leaves_a_job_waiting_out_its_backoff_alone(user, queues):
    due = timezone.now() + timedelta(minutes=30)  # released for a retry after a long Retry-After
    QuestionFactory(
        owner=user, created_at=timezone.now() - timedelta(hours=1), enqueued_at=due, attempts=1
    )
    assert "Requeued 0 jobs" in run("requeue_jobs", "--older-than=0")
    assert queues.depth()["visible"] == 0


def test_redrive_dlq_moves_messages_back_without_the_dead_letter_reason(queues):
    client = get_sqs_client()
    for i in range(12):
        client.send_message(
            QueueUrl=queues.dlq_url,
            MessageBody=f"body {i}",
            MessageAttributes={
                "dead_letter_reason": {"DataType": "String", "StringValue": "why"},
                "traceparent": {
                    "DataType": "String",
                    "StringValue": "00-" + "1" * 32 + "-" + "2" * 16 + "-01",
                },
            },
        )

    assert "Moved 5 messages" in run("redrive_dlq", "--limit=5")
    output = run("redrive_dlq")
    assert f"Moved 7 messages from {queues.dlq_name} to {queues.name}; 0 left in the DLQ." in output

    received: list[dict[str, Any]] = []
    while batch := client.receive_message(
        QueueUrl=queues.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
    ).get("Messages", []):
        received.extend(batch)
    assert sorted(m["Body"] for m in received) == sorted(f"body {i}" for i in range(12))
    assert all(set(m["MessageAttributes"]) == {"traceparent"} for m in received)


def test_ask_wait_prints_the_answer_from_a_real_worker(user, queues, fake_llm, worker_process):
    fake_llm.configure(answer="Forty-two.")
    worker = worker_process("--visibility-timeout=5")

    output = run("ask", "What is the answer?", f"--user={user.username}", "--wait", "--timeout=30")

    assert "queued." in output
    assert output.rstrip().endswith("Forty-two.")
    assert "Answer (gpt-4o-mini):" in output
    assert fake_llm.calls == 1, worker.output


def test_ask_reports_a_failed_job_and_a_timeout(user, queues, fake_llm, worker_process, settings):
    fake_llm.configure(always={"status": 400})
    worker_process("--visibility-timeout=5")
    with pytest.raises(CommandError, match="failed: The language model rejected the question"):
        run("ask", "Bad?", f"--user={user.username}", "--wait", "--timeout=30")

    # A queue no worker reads: nothing answers.
    unread = f"unread-{uuid.uuid4().hex[:8]}"
    run("create_sqs_queues", f"--queue={unread}", f"--dlq={unread}-dlq")
    settings.SQS_QUEUE_NAME = unread
    with pytest.raises(CommandError, match="No answer after 1s; job .* is queued"):
        run("ask", "Anyone?", f"--user={user.username}", "--wait", "--timeout=1")


def test_ask_rejects_an_unknown_user(queues):
    with pytest.raises(CommandError, match="No user named 'nobody'"):
        run("ask", "Hi?", "--user=nobody")


def test_ask_rejects_a_blank_question(user, queues):
    with pytest.raises(CommandError, match="may not be blank"):
        run("ask", "   ", f"--user={user.username}")
    assert not Question.objects.exists()


@pytest.mark.parametrize(
    ("command", "message"),
    [
        ("queue_stats", "Could not read the queues"),
        ("redrive_dlq", "Could not redrive the DLQ"),
        ("create_sqs_queues", "Could not create the queues"),
    ],
)
def test_commands_fail_clearly_when_sqs_is_unreachable(queues, sqs_unreachable, command, message):
    with pytest.raises(CommandError, match=message):
        run(command)


def test_requeue_jobs_fails_clearly_when_sqs_is_unreachable(user, queues, sqs_unreachable):
    question = QuestionFactory(owner=user, created_at=timezone.now() - timedelta(hours=1))
    with pytest.raises(CommandError, match="1 jobs could not be sent to SQS; they stay queued"):
        run("requeue_jobs")
    row = reloaded(question)
    assert (row.status, row.enqueued_at) == (Question.Status.QUEUED, None)


def test_ask_says_when_sqs_is_unreachable(user, queues, sqs_unreachable):
    output = run("ask", "Lost?", f"--user={user.username}")
    assert "could not be sent to SQS; it stays queued" in output
    assert Question.objects.get(text="Lost?").status == Question.Status.QUEUED


def test_ask_without_wait_records_and_sends_the_job(user, queues):
    output = run("ask", "Recorded?", f"--user={user.username}")
    question = Question.objects.get(text="Recorded?")
    assert output.strip() == f"Job {question.pk} queued."
    assert question.owner == user and question.enqueued_at is not None
    assert queues.depth()["visible"] == 1
