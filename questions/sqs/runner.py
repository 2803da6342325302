"""Slots, heartbeat, acknowledgements, signals and the grace period; nothing of questions.

Jobs run as coroutines on one asyncio event loop (on a thread of its own), so hundreds can wait
on the network at once without a thread each; the blocking SQS calls go to a small thread pool.

- Receives only as many messages as it has free slots. A slot is freed once its job's outcome is
  stored: a retry's or a dead letter's message is settled with SQS first, an acknowledged one is
  deleted afterwards in batches (a lost delete is a duplicate delivery, which the job's claim
  turns away). So at most `concurrency` jobs run, and at most `concurrency` deletes wait.
- The receivers: questions.sqs.intake; heartbeat, batched deletes and the wind-down:
  questions.sqs.upkeep.
- Stop (`stop()`, from the worker's SIGTERM/SIGINT; again changes nothing): call `on_stop` on
  the loop (the handler hands back jobs that have not started), stop receiving, give back what
  arrived after it (a long poll in flight at the stop is waited for), then wind down: `run()`
  returns False if jobs were still running at the end of the grace period. `on_loop_end` runs
  on the loop after its last job, before the loop closes (the handler's connections).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any

import uvloop

from questions.backoff import CONNECTION_BACKOFF
from questions.sqs.consumer import SQS_ERRORS, Consumer
from questions.sqs.executor import Outcome
from questions.sqs.intake import Intake
from questions.sqs.liveness import AliveFile
from questions.sqs.upkeep import Upkeep

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageTypeDef

logger = logging.getLogger("questions.sqs.worker")

Handler = Callable[["MessageTypeDef"], Awaitable[Outcome]]


class Runner(Intake, Upkeep):
    def __init__(
        self,
        *,
        consumer: Consumer,
        handler: Handler,
        concurrency: int = 4,
        batch_size: int = 10,
        wait_time: int = 20,
        burst: bool = False,
        shutdown_timeout: float = 30.0,
        alive_file: str | None = None,
        on_stop: Callable[[], None] | None = None,
        on_loop_end: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.consumer = consumer
        self.on_stop = on_stop  # on the loop at the stop: lets go of what has not started
        self.on_loop_end = on_loop_end  # on the loop after the last job: closes what it opened
        self.alive = AliveFile(alive_file)
        self.handler = handler
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.wait_time = wait_time
        self.burst = burst
        self.shutdown_timeout = shutdown_timeout
        self.processed = 0
        self.unfinished = 0
        self._stopping = False
        self._stopped_at: float | None = None  # monotonic time of the first stop()
        self._loop: asyncio.AbstractEventLoop | None = None
        # The receivers, plus the deletes, the heartbeat and the settling of retries.
        self._sqs_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sqs")
        self._in_flight = 0
        self._pending_deletes = 0  # acknowledged, their delete not yet sent
        self._tracked: dict[str, list[Any]] = {}  # message id → [receipt handle, extended at]
        self._jobs: set[asyncio.Task[None]] = set()
        self._abandoned = False
        # --burst: a message put back for later is work, though SQS may count it nowhere then.
        self._deferred_until = 0.0

    # --- from any thread ----------------------------------------------------------------

    def stop(self) -> None:
        if self._stopped_at is None:
            self._stopped_at = time.monotonic()
        self._stopping = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_all)

    def run(self) -> bool:
        """Consume until stopped (or, with burst, until the queue is empty); False if jobs were
        still running at the end of the grace period (they are left running on the loop)."""
        # uvloop (libuv): less CPU per socket read and write than asyncio's own loop; with the
        # LLM calls on aiohttp's protocols, 0.3-0.7 ms less per job at C = 512 (bench/RESULTS.md).
        loop = uvloop.new_event_loop()
        finished = threading.Event()
        outcome: list[bool] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                outcome.append(loop.run_until_complete(self._main()))
            finally:
                finished.set()
            if self._jobs:  # cut off by the grace period: let them end on their own
                loop.run_until_complete(asyncio.wait(self._jobs))
            if self.on_loop_end is not None:
                try:
                    loop.run_until_complete(self.on_loop_end())
                except Exception:
                    logger.exception("the loop-end hook failed")
            loop.close()

        self._loop = loop
        thread = threading.Thread(target=serve, name="sqs-runner", daemon=True)
        thread.start()
        while not finished.wait(0.5):
            pass
        if thread.is_alive() and not self._jobs:
            thread.join(timeout=5)
        self._sqs_pool.shutdown(wait=False, cancel_futures=True)
        return bool(outcome and outcome[0])

    # --- on the loop ----------------------------------------------------------------------

    def _wake_all(self) -> None:
        if self.on_stop is not None:
            try:
                self.on_stop()
            except Exception:
                logger.exception("the stop hook failed")
        if hasattr(self, "_stop_event"):  # else _main sees `_stopping` when it starts
            self._stop_event.set()
            self._slot_freed.set()

    async def _sqs(self, method: Callable[..., Any], *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._sqs_pool, partial(method, *args))

    async def _main(self) -> bool:
        self._stop_event = asyncio.Event()
        self._slot_freed = asyncio.Event()
        self._heartbeat_lock = asyncio.Lock()
        self._acks: asyncio.Queue[str | None] = asyncio.Queue()
        if self._stopping:
            self._stop_event.set()
        self.alive.touch()
        if not await self._connect():
            return True
        heartbeat = asyncio.create_task(self._heartbeat())
        acker = asyncio.create_task(self._acker())
        try:
            await self._receive_loop()
        finally:
            await self._wind_down(heartbeat, acker)
        logger.info(f"Worker stopped after {self.processed} messages.")
        return not self.unfinished

    async def _connect(self) -> bool:
        attempt = 0
        while not self._stop_event.is_set():
            try:
                await self._sqs(self.consumer.connect)
                return True
            except SQS_ERRORS as exc:
                attempt += 1
                delay = CONNECTION_BACKOFF.delay(attempt)
                logger.warning(
                    "queue %s not reachable yet; retrying in %.1fs",
                    self.consumer.queue_name,
                    delay,
                    extra={"error": type(exc).__name__},
                )
                await self._pause(delay)
        return False

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    async def _run_one(self, message: MessageTypeDef) -> None:
        message_id, handle = message["MessageId"], message["ReceiptHandle"]
        try:
            outcome = await self.handler(message)
            async with self._heartbeat_lock:  # never extended again once settled
                self._tracked.pop(message_id, None)
            if self._abandoned:
                return  # given back at the end of the grace period
            if outcome.kind == "retry":
                await self._sqs(self.consumer.retry_later, handle, outcome.delay, outcome.reason)
                back_at = time.monotonic() + outcome.delay + self.wait_time + 1
                self._deferred_until = max(self._deferred_until, back_at)
            elif outcome.kind == "ack" or await self._sqs(
                self.consumer.dead_letter, message, outcome.reason
            ):
                # The outcome is stored: the slot is free now, while the delete lingers for a
                # fuller batch. A delete that is lost is a duplicate delivery, which the claim
                # turns away without a call.
                self._acks.put_nowait(handle)
                self._pending_deletes += 1
        except SQS_ERRORS as exc:  # settling it: the job itself was handled
            logger.warning(
                "could not settle a message (SQS unreachable); it returns after its visibility "
                "timeout",
                extra={"error": type(exc).__name__},
            )
            self._tracked.pop(message_id, None)
        except Exception:
            logger.exception("could not handle a message; it will be delivered again")
            self._tracked.pop(message_id, None)
        finally:
            self.processed += 1
            if not self._abandoned:
                self._release(1)
