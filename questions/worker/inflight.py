"""The claimed jobs of this worker process, watched together from their claim to their end.

A job is watched for as long as it holds its claim, whatever it waits on: the provider's rate
limit (a 429's pause can outlast a lease), the LLM call, the store. Every `CANCEL_POLL_SECONDS`
one query finds which of them were cancelled (Stop) and cuts off what they are waiting on (the
rate-limit wait, the call); every third of the lease one UPDATE extends all their leases
(`claim_expires_at`, on the database's clock), the job side of the heartbeat. One small task
per event loop does both, and only while jobs are claimed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from typing import Any

from questions.runtime import JobStopped
from questions.selectors import questions_cancelled_among
from questions.services import questions_extend_leases
from questions.worker.dbpool import run_db

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5


@dataclass(slots=True, eq=False)
class Watch:
    question_id: uuid.UUID
    cancelled: bool = False
    # What Stop cuts off now: the rate-limit wait or the call; None while the job stores.
    _target: asyncio.Future[Any] | None = None

    def stop(self) -> None:
        self.cancelled = True
        if self._target is not None:
            self._target.cancel()  # closes the provider's stream, or ends the wait

    async def stoppable[T](self, work: Awaitable[T]) -> T:
        """Await `work`; raises `JobStopped` if Stop comes first (or came already). The
        worker's own cancellation (shutdown) passes through as CancelledError."""
        if self.cancelled:
            if asyncio.iscoroutine(work):
                work.close()
            raise JobStopped
        task = asyncio.ensure_future(work)
        self._target = task
        try:
            return await task
        except asyncio.CancelledError:
            if self.cancelled and task.cancelled():
                current = asyncio.current_task()
                if current is None or not current.cancelling():
                    raise JobStopped from None
            raise
        finally:
            self._target = None


class InFlightJobs:
    def __init__(self) -> None:
        self._watches: dict[uuid.UUID, Watch] = {}
        self._lease = 60.0
        self._task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def watching(self, question_id: uuid.UUID, lease: float) -> Iterator[Watch]:
        """Watch a claimed job (lease extended, Stop polled) until the block ends."""
        watch = Watch(question_id)
        self._watches[question_id] = watch
        self._lease = lease
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        try:
            yield watch
        finally:
            # Only this watch: a job re-claimed in this process (a lost claim) has a newer one.
            if self._watches.get(question_id) is watch:
                del self._watches[question_id]

    async def _run(self) -> None:
        extended_at = time.monotonic()
        while self._watches:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            ids = list(self._watches)
            if not ids:
                break
            try:
                for question_id in await run_db(questions_cancelled_among, question_ids=ids):
                    watch = self._watches.get(question_id)
                    if watch is not None and not watch.cancelled:
                        watch.stop()
                if time.monotonic() - extended_at >= self._lease / 3:
                    extended_at = time.monotonic()
                    await run_db(
                        questions_extend_leases, question_ids=ids, lease_seconds=self._lease
                    )
            except Exception as exc:
                logger.warning("could not check claimed jobs", extra={"error": type(exc).__name__})


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InFlightJobs] = (
    weakref.WeakKeyDictionary()
)


def in_flight() -> InFlightJobs:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = InFlightJobs()
    return registry
