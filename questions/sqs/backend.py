"""A `django.tasks` backend that sends each enqueued task to an SQS queue.

`run_sqs_worker` is its worker. Django's task queue name "default" maps to `SQS_QUEUE_NAME`,
"webhooks" to `SQS_WEBHOOK_QUEUE_NAME`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
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
    from mypy_boto3_sqs.type_defs import SendMessageBatchRequestEntryTypeDef


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
        get_sqs_client().send_message(
            QueueUrl=get_queue_url(sqs_queue_name(task.queue_name)),
            MessageBody=encode_message(
                task_path=task.module_path,
                result_id=result.id,
                args=result.args,
                kwargs=result.kwargs,
                enqueued_at=now.isoformat(),
            ),
            MessageAttributes=trace_attributes(),
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    def enqueue_many(self, task: Task, kwargs_list: Sequence[dict[str, Any]]) -> list[bool]:
        """Send many calls of one task, 10 per SendMessageBatch; which ones SQS took (a batch
        that fails altogether, SQS down, counts as not sent, never raises)."""
        self.validate_task(task)
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
