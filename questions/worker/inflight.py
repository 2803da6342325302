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

from questions.runtime import JobStopped, WorkerStopping
from questions.selectors import questions_cancelled_among
from questions.services import questions_extend_leases
from questions.worker.dbpool import run_db

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5


@dataclass(slots=True, eq=False)
class Watch:
    question_id: uuid.UUID
    cancelled: bool = False
    # The worker is stopping: what has not started paying is handed back.
    handing_back: bool = False
    # What Stop cuts off now: the rate-limit wait or the call; None while the job stores.
    _target: asyncio.Future[Any] | None = None
    _paying: bool = False

    def stop(self) -> None:
        self.cancelled = True
        if self._target is not None:
            self._target.cancel()  # closes the provider's stream, or ends the wait

    def hand_back(self) -> None:
        """The worker is stopping: end a wait that pays nothing (the rate limit); a call
        already under way goes on (it finishes within the grace period)."""
        self.handing_back = True
        if self._target is not None and not self._paying:
            self._target.cancel()

    async def stoppable[T](self, work: Awaitable[T], *, paying: bool = True) -> T:
        """Await `work`; raises `JobStopped` if Stop comes first (or came already), and
        `WorkerStopping` if the worker is stopping before `work` started, or while a wait
        that pays nothing (`paying=False`) is under way. The worker's own cancellation (the
        end of the grace period) passes through as CancelledError."""
        if self.cancelled or self.handing_back:
            if asyncio.iscoroutine(work):
                work.close()
            raise JobStopped if self.cancelled else WorkerStopping
        task = asyncio.ensure_future(work)
        self._target, self._paying = task, paying
        try:
            return await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                if self.cancelled:
                    raise JobStopped from None
                if self.handing_back and not paying:
                    raise WorkerStopping from None
            raise
        finally:
            self._target, self._paying = None, False


class InFlightJobs:
    def __init__(self) -> None:
        self._watches: dict[uuid.UUID, Watch] = {}
        self._lease = 60.0
        self._task: asyncio.Task[None] | None = None
        self._handing_back = False

    def hand_back_unstarted(self) -> None:
        """The worker is stopping: every job watched now or claimed from now on that has not
        started paying is handed back (see `Watch.hand_back`)."""
        self._handing_back = True
        for watch in list(self._watches.values()):
            watch.hand_back()

    @contextlib.contextmanager
    def watching(self, question_id: uuid.UUID, lease: float) -> Iterator[Watch]:
        """Watch a claimed job (lease extended, Stop polled) until the block ends."""
        watch = Watch(question_id, handing_back=self._handing_back)
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


def hand_back_unstarted() -> None:
    """For the runner's stop (called on its event loop): hand back this loop's jobs that have
    not started paying, rather than hold the shutdown while they wait for the provider."""
    in_flight().hand_back_unstarted()
