"""The SQS worker loop behind `manage.py run_sqs_worker`.

- Receives only as many messages as it has free slots (no hidden buffer of invisible messages),
  long-polling when idle; runs each on a thread of its own (the work is I/O). A slot is freed
  only once its message is settled with SQS (deleted, delayed for a retry, or dead-lettered), so
  the worker never holds more than `concurrency` messages invisible.
- A heartbeat extends the visibility of every running message before it lapses.
- A message is deleted only after its task returned, in batches (short linger).
- A task asks for a retry with `RetryLater` (the message's visibility becomes the delay) or for
  the DLQ with `DeadLetter`; a message that cannot be parsed goes to the DLQ; an unexpected error
  (PostgreSQL down, say) is retried with backoff and, past the redrive limit, ends in the DLQ.
- First SIGTERM/SIGINT: stop receiving, give back what was received but not started, let the
  running jobs finish within the grace period, exit 0. Jobs still running after it have their
  messages given back and `run()` returns False (the command then exits 1 without waiting for
  their threads). A second signal exits at once; what it cuts off is redelivered.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import FrameType
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.db import close_old_connections
from django.tasks.base import Task, TaskContext, TaskResult, TaskResultStatus
from django.tasks.signals import task_finished, task_started
from django.utils import timezone
from django.utils.module_loading import import_string
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind

from config.logging import bind_job_id
from questions import metrics
from questions.llm.errors import backoff_delay
from questions.services import questions_requeue
from questions.sqs.client import get_queue_url, get_sqs_client
from questions.sqs.exceptions import DeadLetter, RetryLater
from questions.sqs.messages import MalformedMessage, TaskMessage, decode_message, trace_carrier
from questions.sqs.queues import queue_depth

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)

MAX_VISIBILITY_SECONDS = 12 * 60 * 60  # SQS's own limit
_SQS_ERRORS = (BotoCoreError, ClientError)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerTaskContext(TaskContext):
    """Django's task context, plus the worker's retry policy for tasks that want it."""

    max_attempts: int


@dataclass(slots=True)
class InFlight:
    message_id: str
    receipt_handle: str
    extended_at: float = field(default_factory=time.monotonic)


class Heartbeat(threading.Thread):
    """Keeps running messages invisible: extends each before its visibility timeout lapses."""

    def __init__(self, *, queue_url: str, visibility_timeout: int, interval: float) -> None:
        super().__init__(name="sqs-heartbeat", daemon=True)
        self.queue_url = queue_url
        self.visibility_timeout = visibility_timeout
        self.interval = interval
        self._tracked: dict[str, InFlight] = {}
        # Held while a batch is sent, so that once untrack() returns the message is never
        # extended again (a retry's own visibility is not overwritten).
        self._lock = threading.Lock()
        self._halt = threading.Event()

    def track(self, entry: InFlight) -> None:
        with self._lock:
            self._tracked[entry.message_id] = entry

    def untrack(self, message_id: str) -> None:
        with self._lock:
            self._tracked.pop(message_id, None)

    def tracked(self) -> list[InFlight]:
        with self._lock:
            return list(self._tracked.values())

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        tick = min(self.interval / 2, 1.0)
        while not self._halt.wait(tick):
            try:
                self._beat()
            except Exception:
                logger.exception("heartbeat failed; will try again")

    def _beat(self) -> None:
        with self._lock:
            now = time.monotonic()
            due = [e for e in self._tracked.values() if now - e.extended_at >= self.interval]
            for chunk in iter_chunks(due, 10):
                response = get_sqs_client().change_message_visibility_batch(
                    QueueUrl=self.queue_url,
                    Entries=[
                        {
                            "Id": str(i),
                            "ReceiptHandle": e.receipt_handle,
                            "VisibilityTimeout": self.visibility_timeout,
                        }
                        for i, e in enumerate(chunk)
                    ],
                )
                failed = {f["Id"] for f in response.get("Failed", [])}
                for i, entry in enumerate(chunk):
                    if str(i) in failed:
                        logger.warning(
                            "could not extend a message's visibility",
                            extra={"message_id": entry.message_id},
                        )
                    else:
                        entry.extended_at = now
                metrics.SQS_MESSAGES.labels(action="extended").inc(len(chunk) - len(failed))


class Acker(threading.Thread):
    """Deletes handled messages in batches of up to 10, lingering briefly to fill a batch."""

    def __init__(
        self,
        *,
        queue_url: str,
        linger: float = 0.05,
        on_done: Callable[[int], None] | None = None,
        held: Callable[[], int] | None = None,
        saturated: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(name="sqs-acker", daemon=True)
        self.queue_url = queue_url
        self.linger = linger
        # How many messages the worker holds (running or awaiting deletion): once the batch has
        # them all, no running job can join it, so lingering would only keep slots busy.
        self._held = held or (lambda: 10)
        # True while every slot is taken: then a slot is only freed by this deletion, so waiting
        # for a fuller batch would idle the worker; take what is already there and send.
        self._saturated = saturated or (lambda: False)
        # Called with the number of messages of each batch once it is settled (deleted, or
        # given up on), so the worker frees their slots only when SQS no longer holds them for it.
        self._on_done = on_done or (lambda count: None)
        self._pending: queue.Queue[InFlight | None] = queue.Queue()

    def delete(self, entry: InFlight) -> None:
        self._pending.put(entry)

    def close(self) -> None:
        """Flush what is pending and stop."""
        self._pending.put(None)
        self.join(timeout=30)

    def run(self) -> None:
        closing = False
        while not closing:
            first = self._pending.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + self.linger
            while len(batch) < min(10, self._held()):
                remaining = 0.0 if self._saturated() else deadline - time.monotonic()
                try:
                    item = (
                        self._pending.get(timeout=max(remaining, 0))
                        if remaining > 0
                        else (self._pending.get_nowait())
                    )
                except queue.Empty:
                    break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            try:
                self._delete_batch(batch)
            finally:
                self._on_done(len(batch))

    def _delete_batch(self, batch: list[InFlight]) -> None:
        entries = [{"Id": str(i), "ReceiptHandle": e.receipt_handle} for i, e in enumerate(batch)]
        for attempt in range(3):
            try:
                response = get_sqs_client().delete_message_batch(
                    QueueUrl=self.queue_url, Entries=entries
                )
            except _SQS_ERRORS:
                logger.warning("delete_message_batch failed", exc_info=True)
                time.sleep(0.5 * (attempt + 1))
                continue
            failed = response.get("Failed", [])
            metrics.SQS_MESSAGES.labels(action="deleted").inc(len(entries) - len(failed))
            for failure in failed:
                # The message will be delivered again; the job's claim makes that harmless.
                logger.warning(
                    "SQS did not delete a message",
                    extra={"code": failure.get("Code"), "sqs_message": failure.get("Message")},
                )
            return
        logger.error("gave up deleting %d messages; they will be redelivered", len(entries))


class Worker:
    """Consumes one SQS queue and runs the `django.tasks` tasks its messages name."""

    def __init__(
        self,
        *,
        queue_name: str,
        dlq_name: str,
        concurrency: int = 4,
        batch_size: int = 10,
        wait_time: int = 20,
        visibility_timeout: int = 60,
        max_attempts: int = 5,
        burst: bool = False,
        shutdown_timeout: float = 30.0,
        requeue_interval: float = 60.0,
        queue_stats_interval: float = 15.0,
    ) -> None:
        self.queue_name = queue_name
        self.dlq_name = dlq_name
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.wait_time = wait_time
        self.visibility_timeout = visibility_timeout
        self.max_attempts = max_attempts
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.requeue_interval = requeue_interval
        self.queue_stats_interval = queue_stats_interval
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self._running = True
        self._stop_event = threading.Event()
        self._signals = 0
        self._in_flight = 0
        self._slots = threading.Condition()
        self._processed = 0
        self._next_requeue = time.monotonic() + min(requeue_interval, 5.0)
        self._next_queue_stats = 0.0
        self.unfinished = 0  # jobs still running when the grace period ran out

    # --- public ---------------------------------------------------------------------------

    @property
    def processed(self) -> int:
        return self._processed

    def stop(self) -> None:
        """Ask the loop to stop receiving and wind down (thread-safe)."""
        self._running = False
        self._stop_event.set()
        with self._slots:
            self._slots.notify_all()

    def install_signal_handlers(self) -> dict[int, Any]:
        """Route SIGTERM/SIGINT to a graceful stop (main thread only); returns the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }

    def run(self) -> bool:
        """Consume until stopped (or, with burst, until the queue is empty).

        Returns False when jobs were still running at the end of the grace period: their threads
        are still alive, so the caller should exit the process (their messages were given back).
        """
        queue_url = self._resolve_queue_url()
        if queue_url is None:
            return True
        dlq_url = self._resolve_dlq_url()
        heartbeat = Heartbeat(
            queue_url=queue_url,
            visibility_timeout=self.visibility_timeout,
            interval=max(self.visibility_timeout / 3, 0.5),
        )
        acker = Acker(
            queue_url=queue_url,
            on_done=self._release,
            held=lambda: self._in_flight,
            saturated=lambda: self._in_flight >= self.concurrency,
        )
        heartbeat.start()
        acker.start()
        executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="job")
        logger.info(
            f"Worker {self.worker_id} consuming {self.queue_name} "
            f"(concurrency {self.concurrency}, batch {self.batch_size}, wait {self.wait_time}s, "
            f"visibility {self.visibility_timeout}s, max attempts {self.max_attempts})"
        )
        try:
            self._loop(queue_url, dlq_url, executor, heartbeat, acker)
        finally:
            self._wind_down(queue_url, executor, heartbeat, acker)
        logger.info(f"Worker stopped after {self._processed} messages.")
        return not self.unfinished

    # --- the loop -------------------------------------------------------------------------

    def _loop(
        self,
        queue_url: str,
        dlq_url: str | None,
        executor: ThreadPoolExecutor,
        heartbeat: Heartbeat,
        acker: Acker,
    ) -> None:
        failures = 0
        while self._running:
            self._periodic(queue_url)
            free = self._wait_for_free_slots()
            if not self._running:
                break
            try:
                messages = self._receive(queue_url, min(free, self.batch_size))
                failures = 0
            except _SQS_ERRORS as exc:
                failures += 1
                delay = min(2 ** min(failures, 5), 10)
                logger.warning(
                    "receive_message failed; retrying in %ss",
                    delay,
                    extra={"error": type(exc).__name__},
                )
                self._stop_event.wait(delay)
                continue
            if not self._running:
                self._give_back(queue_url, messages)
                break
            if not messages:
                if self.burst and self._idle() and self._queue_is_empty(queue_url):
                    logger.info("Queue is empty; exiting (--burst).")
                    break
                continue
            metrics.SQS_MESSAGES.labels(action="received").inc(len(messages))
            for message in messages:
                entry = InFlight(message["MessageId"], message["ReceiptHandle"])
                heartbeat.track(entry)
                with self._slots:
                    self._in_flight += 1
                    metrics.JOBS_IN_FLIGHT.set(self._in_flight)
                executor.submit(self._handle, message, entry, queue_url, dlq_url, heartbeat, acker)

    def _wait_for_free_slots(self) -> int:
        with self._slots:
            while self._running and self._in_flight >= self.concurrency:
                self._slots.wait(timeout=1.0)
            return self.concurrency - self._in_flight

    def _idle(self) -> bool:
        with self._slots:
            return self._in_flight == 0

    def _receive(self, queue_url: str, count: int) -> list[dict[str, Any]]:
        # While jobs run, poll briefly so finished slots are refilled promptly; idle, poll long.
        wait = self.wait_time if self._idle() else min(self.wait_time, 1)
        response = get_sqs_client().receive_message(
            QueueUrl=queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            VisibilityTimeout=self.visibility_timeout,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        return response.get("Messages", [])

    # --- one message ----------------------------------------------------------------------

    def _handle(
        self,
        message: dict[str, Any],
        entry: InFlight,
        queue_url: str,
        dlq_url: str | None,
        heartbeat: Heartbeat,
        acker: Acker,
    ) -> None:
        receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
        parent = propagate.extract(trace_carrier(message.get("MessageAttributes")))
        token = otel_context.attach(parent)
        handed_to_acker = False
        try:
            close_old_connections()
            with tracer.start_as_current_span(
                f"{self.queue_name} process",
                kind=SpanKind.CONSUMER,
                attributes={
                    "messaging.system": "aws_sqs",
                    "messaging.operation.type": "process",
                    "messaging.destination.name": self.queue_name,
                    "messaging.message.id": entry.message_id,
                },
            ) as span:
                outcome = self._run_task(message, receive_count, span)
            heartbeat.untrack(entry.message_id)
            handed_to_acker = self._apply(
                outcome, message, entry, queue_url, dlq_url, acker, receive_count
            )
        except Exception:
            logger.exception("could not handle a message; it will be delivered again")
            heartbeat.untrack(entry.message_id)
        finally:
            try:
                close_old_connections()
            except Exception:
                logger.warning("could not close database connections", exc_info=True)
            otel_context.detach(token)
            with self._slots:
                self._processed += 1
            if not handed_to_acker:
                # Otherwise the acker frees the slot once the message is deleted: until then
                # SQS still holds it invisible for this worker, so it still counts.
                self._release(1)

    def _release(self, count: int) -> None:
        with self._slots:
            self._in_flight -= count
            metrics.JOBS_IN_FLIGHT.set(self._in_flight)
            self._slots.notify_all()

    def _run_task(self, message: dict[str, Any], receive_count: int, span: Any) -> Outcome:
        try:
            task_message = decode_message(message.get("Body", ""))
            task = self._resolve_task(task_message.task_path)
            _check_arguments(task, task_message)
        except (MalformedMessage, DeadLetter) as exc:
            return Outcome.dead_letter(str(exc))
        job_id = str(task_message.kwargs.get("job_id", ""))
        span.set_attribute("questions.job_id", job_id)
        with bind_job_id(job_id):
            result = self._task_result(task, task_message, receive_count)
            task_started.send(sender=type(self), task_result=result)
            try:
                if task.takes_context:
                    context = WorkerTaskContext(task_result=result, max_attempts=self.max_attempts)
                    task.call(context, *task_message.args, **task_message.kwargs)
                else:
                    task.call(*task_message.args, **task_message.kwargs)
                outcome = Outcome.ack()
            except RetryLater as retry:
                outcome = Outcome.retry(retry.delay, retry.reason)
            except DeadLetter as dead:
                outcome = Outcome.dead_letter(dead.reason)
            except Exception as exc:
                delay = backoff_delay(receive_count)
                logger.exception("task raised; the message will be delivered again")
                span.record_exception(exc)
                outcome = Outcome.retry(delay, type(exc).__name__)
            status = (
                TaskResultStatus.SUCCESSFUL if outcome.kind == "ack" else TaskResultStatus.FAILED
            )
            object.__setattr__(result, "status", status)
            object.__setattr__(result, "finished_at", timezone.now())
            task_finished.send(sender=type(self), task_result=result)
        return outcome

    def _resolve_task(self, task_path: str) -> Task:
        try:
            candidate = import_string(task_path)
        except ImportError:
            raise DeadLetter(f"unknown task {task_path!r}") from None
        if not isinstance(candidate, Task) or candidate.module_path != task_path:
            raise DeadLetter(f"{task_path!r} is not a task")
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

    def _apply(
        self,
        outcome: Outcome,
        message: dict[str, Any],
        entry: InFlight,
        queue_url: str,
        dlq_url: str | None,
        acker: Acker,
        receive_count: int,
    ) -> bool:
        """Settle the message with SQS; True if it was handed to the acker for deletion."""
        client = get_sqs_client()
        if outcome.kind == "ack":
            acker.delete(entry)
            return True
        if outcome.kind == "retry":
            delay = min(max(math.ceil(outcome.delay), 0), MAX_VISIBILITY_SECONDS)
            client.change_message_visibility(
                QueueUrl=queue_url, ReceiptHandle=entry.receipt_handle, VisibilityTimeout=delay
            )
            metrics.SQS_MESSAGES.labels(action="retried").inc()
            return False
        if dlq_url is None:
            # No DLQ to move it to: leave it; the queue's redrive policy (if any) applies.
            logger.error("no DLQ configured; leaving a poison message on the queue")
            return False
        attributes = dict(message.get("MessageAttributes") or {})
        attributes["dead_letter_reason"] = {
            "DataType": "String",
            "StringValue": outcome.reason[:256] or "unknown",
        }
        client.send_message(
            QueueUrl=dlq_url,
            MessageBody=message.get("Body", "") or "(empty)",
            MessageAttributes=attributes,
        )
        acker.delete(entry)
        metrics.SQS_MESSAGES.labels(action="dead_lettered").inc()
        logger.error(
            "message moved to the DLQ",
            extra={
                "message_id": entry.message_id,
                "reason": outcome.reason,
                "receive_count": receive_count,
            },
        )
        return True

    # --- periodic chores ------------------------------------------------------------------

    def _periodic(self, queue_url: str) -> None:
        now = time.monotonic()
        if self.requeue_interval > 0 and now >= self._next_requeue:
            self._next_requeue = now + self.requeue_interval
            self._requeue()
        if self.queue_stats_interval > 0 and now >= self._next_queue_stats:
            self._next_queue_stats = now + self.queue_stats_interval
            self._poll_queue_stats(queue_url)

    def _requeue(self) -> None:
        now = timezone.now()
        try:
            close_old_connections()
            report = questions_requeue(
                unsent_before=now - timedelta(seconds=10),
                sent_before=now - timedelta(seconds=settings.QUESTIONS_REQUEUE_AFTER),
            )
        except Exception as exc:
            logger.warning("periodic requeue failed", extra={"error": type(exc).__name__})
            return
        if report.total:
            logger.info(f"Requeued {report.total} stale jobs.")

    def _poll_queue_stats(self, queue_url: str) -> None:
        try:
            depth = queue_depth(queue_url)
        except _SQS_ERRORS:
            return
        for state, value in depth.items():
            metrics.QUEUE_MESSAGES.labels(queue="main", state=state).set(value)

    def _queue_is_empty(self, queue_url: str) -> bool:
        try:
            return not any(queue_depth(queue_url).values())
        except _SQS_ERRORS:
            return False

    # --- start and stop -------------------------------------------------------------------

    def _resolve_queue_url(self) -> str | None:
        delay = 1.0
        while self._running:
            try:
                return get_queue_url(self.queue_name)
            except _SQS_ERRORS as exc:
                logger.warning(
                    "queue %s not reachable yet; retrying in %.0fs",
                    self.queue_name,
                    delay,
                    extra={"error": type(exc).__name__},
                )
                self._stop_event.wait(delay)
                delay = min(delay * 2, 30)
        return None

    def _resolve_dlq_url(self) -> str | None:
        try:
            return get_queue_url(self.dlq_name)
        except _SQS_ERRORS:
            logger.warning("DLQ %s not found; poison messages stay on the queue", self.dlq_name)
            return None

    def _give_back(self, queue_url: str, messages: list[dict[str, Any]]) -> None:
        """Make received-but-unstarted messages visible again at once."""
        for chunk in iter_chunks(messages, 10):
            try:
                get_sqs_client().change_message_visibility_batch(
                    QueueUrl=queue_url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                        for i, m in enumerate(chunk)
                    ],
                )
            except _SQS_ERRORS:
                logger.warning("could not give messages back; they return after their timeout")
        if messages:
            metrics.SQS_MESSAGES.labels(action="given_back").inc(len(messages))
            logger.info(f"Gave back {len(messages)} unstarted messages.")

    def _wind_down(
        self, queue_url: str, executor: ThreadPoolExecutor, heartbeat: Heartbeat, acker: Acker
    ) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._slots:
            if self._in_flight:
                logger.info(f"Finishing {self._in_flight} jobs in flight...")
            while self._in_flight and time.monotonic() < deadline:
                self._slots.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0.01)))
            unfinished = self._in_flight
        self.unfinished = unfinished
        if unfinished:
            logger.info(f"{unfinished} jobs did not finish in time; their messages return to SQS.")
            self._give_back(
                queue_url,
                [{"ReceiptHandle": e.receipt_handle} for e in heartbeat.tracked()],
            )
        heartbeat.stop()
        executor.shutdown(wait=False, cancel_futures=True)
        acker.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        name = signal.Signals(signum).name
        if self._signals > 1:
            logger.info(f"Second {name}: exiting now; unfinished messages will be redelivered.")
            flush_and_exit(1)
        logger.info(f"{name} received: finishing jobs in flight, then exiting (again to force).")
        self.stop()


@dataclass(frozen=True, slots=True)
class Outcome:
    kind: str  # "ack" | "retry" | "dead_letter"
    delay: float = 0.0
    reason: str = ""

    @classmethod
    def ack(cls) -> Outcome:
        return cls("ack")

    @classmethod
    def retry(cls, delay: float, reason: str) -> Outcome:
        return cls("retry", delay, reason)

    @classmethod
    def dead_letter(cls, reason: str) -> Outcome:
        return cls("dead_letter", 0.0, reason)


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


def flush_and_exit(code: int) -> None:
    """Exit the process now, without waiting for job threads (after flushing output)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def iter_chunks[T](items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
