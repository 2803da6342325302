"""Runs the `django.tasks` task a message names and turns what happened into an `Outcome`.

Finishing normally → ack; `RetryLater` → retry after its delay; `DeadLetter` or a message that can
never succeed (not a task message, an unknown task, arguments that do not fit) → dead-letter; any
other error (PostgreSQL down, say) → retry with the backoff policy, past the queue's redrive limit
ending in the DLQ. It knows nothing of the task's domain; an async task runs on the runner's
event loop, a sync one on a thread.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from django.tasks.base import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.module_loading import import_string
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from questions.backoff import JOB_BACKOFF, Backoff
from questions.sqs.exceptions import DeadLetter, RetryLater
from questions.sqs.messages import MalformedMessage, TaskMessage, decode_message, trace_carrier

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger("questions.sqs.worker")
tracer = trace.get_tracer("questions.sqs.worker")


# Django's TaskContext is a frozen dataclass; django-stubs 6.1.2 declares it unfrozen.
@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerTaskContext(TaskContext):  # type: ignore[misc]
    """Django's task context, plus the worker's retry policy for tasks that want it."""

    max_attempts: int


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: Literal["ack", "retry", "dead_letter"]
    delay: float = 0.0
    reason: str = ""


ACK = Outcome("ack")


class TaskExecutor:
    def __init__(
        self, *, queue_name: str, worker_id: str, max_attempts: int, backoff: Backoff = JOB_BACKOFF
    ) -> None:
        self.queue_name = queue_name
        self.worker_id = worker_id
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._tasks: dict[str, Task] = {}

    async def __call__(self, message: MessageTypeDef) -> Outcome:
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        token = otel_context.attach(
            propagate.extract(trace_carrier(message.get("MessageAttributes")))
        )
        try:
            with tracer.start_as_current_span(
                f"{self.queue_name} process",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "aws_sqs",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.queue_name,
                    "messaging.message.id": message.get("MessageId", ""),
                },
            ) as span:
                return await self._execute(message, receive_count, span)
        finally:
            otel_context.detach(token)

    async def _execute(self, message: MessageTypeDef, receive_count: int, span: Any) -> Outcome:
        try:
            task_message = decode_message(message.get("Body", ""))
            task = self._resolve(task_message.task_path)
            _check_arguments(task, task_message)
        except (MalformedMessage, DeadLetter) as exc:
            return Outcome("dead_letter", reason=str(exc))
        result = self._task_result(task, task_message, receive_count)
        task_started.send(sender=TaskExecutor, task_result=result)
        args: tuple[Any, ...] = tuple(task_message.args)
        if task.takes_context:
            args = (WorkerTaskContext(task_result=result, max_attempts=self.max_attempts), *args)
        try:
            if inspect.iscoroutinefunction(task.func):
                await task.func(*args, **task_message.kwargs)
            else:
                await asyncio.to_thread(task.func, *args, **task_message.kwargs)
            outcome = ACK
        except RetryLater as retry:
            outcome = Outcome("retry", retry.delay, retry.reason)
        except DeadLetter as dead:
            outcome = Outcome("dead_letter", reason=dead.reason)
        except Exception as exc:
            logger.exception("task raised; the message will be delivered again")
            span.record_exception(exc)
            outcome = Outcome("retry", self.backoff.delay(receive_count), type(exc).__name__)
        status = TaskResultStatus.SUCCESSFUL if outcome is ACK else TaskResultStatus.FAILED
        object.__setattr__(result, "status", status)
        object.__setattr__(result, "finished_at", timezone.now())
        task_finished.send(sender=TaskExecutor, task_result=result)
        return outcome

    def _resolve(self, task_path: str) -> Task:
        task = self._tasks.get(task_path)
        if task is not None:
            return task
        try:
            candidate = import_string(task_path)
        except ImportError:
            raise DeadLetter(f"unknown task {task_path!r}") from None
        if not isinstance(candidate, Task) or candidate.module_path != task_path:
            raise DeadLetter(f"{task_path!r} is not a task")
        self._tasks[task_path] = candidate
        return candidate

    def _task_result(self, task: Task, message: TaskMessage, receive_count: int) -> TaskResult:
        now = timezone.now()
        enqueued_at: datetime | None = None
        if message.enqueued_at:
            try:
                enqueued_at = datetime.fromisoformat(message.enqueued_at)
            except ValueError:
                enqueued_at = None
        return TaskResult(
            task=task,
            id=message.result_id,
            status=TaskResultStatus.RUNNING,
            enqueued_at=enqueued_at,
            started_at=now,
            last_attempted_at=now,
            finished_at=None,
            args=message.args,
            kwargs=message.kwargs,
            backend=task.backend,
            errors=[],
            worker_ids=[self.worker_id] * receive_count,
        )


def _check_arguments(task: Task, message: TaskMessage) -> None:
    """A message whose arguments do not fit the task can never succeed: DLQ, not retries."""
    try:
        signature = inspect.signature(task.func)
        if task.takes_context:
            signature.bind(None, *message.args, **message.kwargs)
        else:
            signature.bind(*message.args, **message.kwargs)
    except TypeError as exc:
        raise DeadLetter(f"arguments do not fit {message.task_path}: {exc}") from None
