"""The jobs of this worker process whose LLM call is running, watched together.

Every `CANCEL_POLL_SECONDS` one query finds which of them were cancelled (Stop) and cuts their
calls off; every third of the lease one UPDATE extends all their leases (`claim_expires_at`, on
the database's clock), the job side of the heartbeat. One small task per event loop does both,
and only while calls are running.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any

from questions.selectors import questions_cancelled_among
from questions.services import questions_extend_leases
from questions.worker.dbpool import run_db

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.5


@dataclass(slots=True)
class Watch:
    call: asyncio.Future[Any]
    cancelled: bool = False


class InFlightJobs:
    def __init__(self) -> None:
        self._watches: dict[uuid.UUID, Watch] = {}
        self._lease = 60.0
        self._task: asyncio.Task[None] | None = None

    def watch(self, question_id: uuid.UUID, call: asyncio.Future[Any], lease: float) -> Watch:
        watch = Watch(call)
        self._watches[question_id] = watch
        self._lease = lease
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return watch

    def forget(self, question_id: uuid.UUID) -> None:
        self._watches.pop(question_id, None)

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
                        watch.cancelled = True
                        watch.call.cancel()  # closes the provider's stream
                if time.monotonic() - extended_at >= self._lease / 3:
                    extended_at = time.monotonic()
                    await run_db(
                        questions_extend_leases, question_ids=ids, lease_seconds=self._lease
                    )
            except Exception as exc:
                logger.warning("could not check running jobs", extra={"error": type(exc).__name__})


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, InFlightJobs] = (
    weakref.WeakKeyDictionary()
)


def in_flight() -> InFlightJobs:
    loop = asyncio.get_running_loop()
    registry = _registries.get(loop)
    if registry is None:
        registry = _registries[loop] = InFlightJobs()
    return registry
