"""Fair share per user: every path that puts a job on the queue sends it with its owner's
opaque MessageGroupId (questions.attribution.queue_group_id), which SQS fair queues use to keep
one user's flood from delaying everyone else's. Read back from the real SQS server (moto keeps
the group on standard queues and returns it as a system attribute)."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from questions.attribution import provider_user_id, queue_group_id
from questions.models import Question
from questions.sqs.client import get_sqs_client
from tests.factories import QuestionFactory

pytestmark = pytest.mark.django_db(transaction=True)


def received(queue_url: str) -> dict[str, str | None]:
    """Job id → MessageGroupId of every message on the queue (left invisible for a minute)."""
    groups: dict[str, str | None] = {}
    for _ in range(10):
        messages = (
            get_sqs_client()
            .receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=10,
                WaitTimeSeconds=0,
                VisibilityTimeout=60,
                MessageSystemAttributeNames=["MessageGroupId"],
            )
            .get("Messages", [])
        )
        if not messages:
            break
        for message in messages:
            job_id = json.loads(message["Body"])["kwargs"]["job_id"]
            groups[job_id] = message.get("Attributes", {}).get("MessageGroupId")
    return groups


def test_the_group_is_an_opaque_stable_id_per_user(user, other_user, settings):
    group = queue_group_id(user_id=user.pk)
    assert group == queue_group_id(user_id=user.pk)
    assert group != queue_group_id(user_id=other_user.pk)
    assert re.fullmatch(r"g-[0-9a-f]{32}", group)
    # Keyed by SECRET_KEY: nobody without it can compute a user's group from their id.
    settings.SECRET_KEY = "another-" + settings.SECRET_KEY
    assert queue_group_id(user_id=user.pk) != group
    # Not the id the LLM provider sees: the two cannot be matched with each other.
    assert group.removeprefix("g-") != provider_user_id(user_id=user.pk).removeprefix("u-")


def test_api_ask_sends_the_owners_group(api, user, queues):
    response = api.post("/api/questions/", {"question": "Fair?"}, format="json")
    assert response.status_code == 202
    assert received(queues.url) == {response.json()["id"]: queue_group_id(user_id=user.pk)}


def test_page_ask_sends_the_owners_group(user, client_for, queues):
    client = client_for(user)
    request_id = re.search(
        r'name="request_id" value="([0-9a-f-]+)"', client.get("/").content.decode()
    )[1]
    assert client.post("/", {"question": "Fair?", "request_id": request_id}).status_code == 302
    question = Question.objects.get()
    assert received(queues.url) == {str(question.pk): queue_group_id(user_id=user.pk)}


def test_requeue_jobs_sends_each_jobs_own_group(user, other_user, queues):
    old = timezone.now() - timedelta(hours=1)
    unsent = [
        QuestionFactory(owner=owner, enqueued_at=None, created_at=old)
        for owner in (user, other_user, user)
    ]
    failed = QuestionFactory(owner=other_user, failed=True)

    call_command("requeue_jobs", "--failed", stdout=None)

    expected = {str(q.pk): queue_group_id(user_id=q.owner_id) for q in [*unsent, failed]}
    assert received(queues.url) == expected


def test_admin_retry_sends_the_owners_group(superuser_client, user, queues):
    failed = QuestionFactory(owner=user, failed=True)
    response = superuser_client.post(
        "/admin/questions/question/",
        {"action": "retry_failed", "_selected_action": [failed.pk]},
        follow=True,
    )
    assert response.status_code == 200
    assert received(queues.url) == {str(failed.pk): queue_group_id(user_id=user.pk)}


def test_redrive_dlq_keeps_the_group(user, queues):
    question = QuestionFactory(owner=user)
    body = json.dumps(
        {"v": 1, "task": "t", "id": "r", "args": [], "kwargs": {"job_id": str(question.pk)}}
    )
    group = queue_group_id(user_id=user.pk)
    get_sqs_client().send_message(QueueUrl=queues.dlq_url, MessageBody=body, MessageGroupId=group)

    call_command("redrive_dlq", stdout=None)

    assert received(queues.url) == {str(question.pk): group}


def test_a_message_the_worker_dead_letters_keeps_its_group(user, queues, run_worker):
    """The worker's own copy to the DLQ (a job that can never succeed) keeps the group, so
    redrive_dlq sends it back into it."""
    group = queue_group_id(user_id=user.pk)
    missing = "00000000-0000-0000-0000-000000000000"
    body: dict[str, Any] = {
        "v": 1,
        "task": "questions.tasks.answer_question",
        "id": "r",
        "args": [],
        "kwargs": {"job_id": missing},
    }
    get_sqs_client().send_message(
        QueueUrl=queues.url, MessageBody=json.dumps(body), MessageGroupId=group
    )
    run_worker("--concurrency=1")
    assert received(queues.dlq_url) == {missing: group}
