"""A `django.tasks` backend that sends each enqueued task to an SQS queue.

`run_sqs_worker` is its worker. Django's task queue name "default" maps to `SQS_QUEUE_NAME`,
"webhooks" to `SQS_WEBHOOK_QUEUE_NAME`. A message sent inside `message_group(id)` (or given a
group by `enqueue_many`) carries that SQS MessageGroupId: on a standard queue, SQS fair queues
then keep one tenant's flood of messages from delaying the others' (consumers need no change).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task, TaskResult, TaskResultStatus
from django.tasks.signals import task_enqueued
from django.utils import timezone

from questions.sqs.client import get_queue_url, get_sqs_client
from questions.sqs.messages import encode_message, trace_attributes

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        SendMessageBatchRequestEntryTypeDef,
        SendMessageRequestTypeDef,
    )

_message_group: ContextVar[str | None] = ContextVar("sqs_message_group", default=None)


@contextmanager
def message_group(group_id: str | None) -> Iterator[None]:
    """Messages enqueued inside carry this MessageGroupId (None: none)."""
    token = _message_group.set(group_id)
    try:
        yield
    finally:
        _message_group.reset(token)


def sqs_queue_name(task_queue_name: str) -> str:
    if task_queue_name == "default":
        return settings.SQS_QUEUE_NAME
    if task_queue_name == "webhooks":
        return settings.SQS_WEBHOOK_QUEUE_NAME
    return task_queue_name


class SQSTaskBackend(BaseTaskBackend):
    supports_defer = False
    supports_async_task = True
    supports_get_result = False
    supports_priority = False

    def enqueue(self, task: Task, args: Any, kwargs: Any) -> TaskResult:
        self.validate_task(task)
        now = timezone.now()
        result: TaskResult[..., Any] = TaskResult(
            task=task,
            id=uuid.uuid4().hex,
            status=TaskResultStatus.READY,
            enqueued_at=now,
            started_at=None,
            last_attempted_at=None,
            finished_at=None,
            args=list(args),
            kwargs=dict(kwargs),
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        message: SendMessageRequestTypeDef = {
            "QueueUrl": get_queue_url(sqs_queue_name(task.queue_name)),
            "MessageBody": encode_message(
                task_path=task.module_path,
                result_id=result.id,
                args=result.args,
                kwargs=result.kwargs,
                enqueued_at=now.isoformat(),
            ),
            "MessageAttributes": trace_attributes(),
        }
        group_id = _message_group.get()
        if group_id:
            message["MessageGroupId"] = group_id
        get_sqs_client().send_message(**message)
        task_enqueued.send(type(self), task_result=result)
        return result

    def enqueue_many(
        self,
        task: Task,
        kwargs_list: Sequence[dict[str, Any]],
        *,
        group_ids: Sequence[str | None] | None = None,
    ) -> list[bool]:
        """Send many calls of one task, 10 per SendMessageBatch; which ones SQS took (a batch
        that fails altogether, SQS down, counts as not sent, never raises). `group_ids`, one per
        call, are their MessageGroupIds."""
        self.validate_task(task)
        if group_ids is not None and len(group_ids) != len(kwargs_list):
            raise ValueError("one group id per call")
        url: str | None = None
        sent: list[bool] = []
        now = timezone.now().isoformat()
        attributes = trace_attributes()
        for start in range(0, len(kwargs_list), 10):
            chunk = kwargs_list[start : start + 10]
            entries: list[SendMessageBatchRequestEntryTypeDef] = []
            for i, kwargs in enumerate(chunk):
                entry: SendMessageBatchRequestEntryTypeDef = {
                    "Id": str(i),
                    "MessageBody": encode_message(
                        task_path=task.module_path,
                        result_id=uuid.uuid4().hex,
                        args=[],
                        kwargs=dict(kwargs),
                        enqueued_at=now,
                    ),
                }
                if attributes:
                    entry["MessageAttributes"] = attributes
                group_id = group_ids[start + i] if group_ids is not None else None
                if group_id:
                    entry["MessageGroupId"] = group_id
                entries.append(entry)
            try:
                url = url or get_queue_url(sqs_queue_name(task.queue_name))
                response = get_sqs_client().send_message_batch(QueueUrl=url, Entries=entries)
            except (BotoCoreError, ClientError):
                sent += [False] * len(chunk)
                continue
            failed = {int(f["Id"]) for f in response.get("Failed", [])}
            sent += [i not in failed for i in range(len(chunk))]
        return sent
