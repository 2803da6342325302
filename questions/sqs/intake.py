"""The runner's intake: the receive loop that fills free slots with messages and starts their
jobs. It asks for the slots free when it starts a receive (nothing is over-fetched) and polls
briefly while jobs run, long while none does. At most `concurrency` jobs run, and at most
`concurrency` acknowledged messages wait for their delete.

(Several receives under way at once, one per 10 slots, were measured against this one loop in
bench/RESULTS.md, "Worker v3": no gain beyond the machine's noise, so the one loop stays.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from questions import metrics
from questions.backoff import CONNECTION_BACKOFF
from questions.sqs.consumer import SQS_ERRORS, Consumer

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger("questions.sqs.worker")


class Intake:
    consumer: Consumer
    concurrency: int
    batch_size: int
    wait_time: int
    burst: bool
    _in_flight: int
    _pending_deletes: int
    _deferred_until: float
    _tracked: dict[str, list[Any]]
    _jobs: set[asyncio.Task[None]]
    _stop_event: asyncio.Event
    _slot_freed: asyncio.Event
    _sqs: Callable[..., Any]
    _pause: Callable[[float], Coroutine[Any, Any, None]]
    _run_one: Callable[[MessageTypeDef], Coroutine[Any, Any, None]]

    async def _receive_loop(self) -> None:
        """Receive into free slots until stopped (or, with burst, until the queue is empty)."""
        failures = 0
        while not self._stop_event.is_set():
            free = self._free_slots()
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            # While jobs run, poll briefly so freed slots are refilled promptly; idle, poll long.
            wait = self.wait_time if not self._in_flight else min(self.wait_time, 1)
            try:
                messages = await self._sqs(self.consumer.receive, min(free, self.batch_size), wait)
                failures = 0
            except SQS_ERRORS as exc:
                failures += 1
                delay = CONNECTION_BACKOFF.delay(failures)
                logger.warning(
                    "receive_message failed; retrying in %.1fs",
                    delay,
                    extra={"error": type(exc).__name__},
                )
                await self._pause(delay)
                continue
            if self._stop_event.is_set():
                await self._sqs(self.consumer.give_back, [m["ReceiptHandle"] for m in messages])
                break
            if not messages:
                if (
                    self.burst
                    and not self._in_flight
                    and time.monotonic() > self._deferred_until
                    and await self._sqs(self.consumer.is_empty)
                ):
                    logger.info("Queue is empty; exiting (--burst).")
                    break
                continue
            now = time.monotonic()
            for message in messages:
                self._in_flight += 1
                self._tracked[message["MessageId"]] = [message["ReceiptHandle"], now]
                job = asyncio.create_task(self._run_one(message))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
            metrics.JOBS_IN_FLIGHT.set(self._in_flight)

    def _free_slots(self) -> int:
        # At most `concurrency` jobs running and `concurrency` deletes due.
        return min(self.concurrency - self._in_flight, self.concurrency - self._pending_deletes)
