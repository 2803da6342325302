"""One check of the job rows for every stream of an event loop, instead of one per watcher.

A watcher must end when its job is finished even if the stream's `end` never came (a worker
that does not stream, an `end` lost, Redis down). Asked per watcher, that was a PostgreSQL
connection and a query per watcher at each keepalive (a thousand watchers after a restart of
the events process, all at once, every second while Redis was down). Here one task per event loop
asks for the status of every watched job in one query every `QUESTIONS_EVENTS_POLL_INTERVAL`
seconds, on the bounded database threads (questions.worker.dbpool), and tells the watchers of a
job that is finished or gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from django.conf import settings
from django.db import DatabaseError

from questions.breaker import Breaker
from questions.models import Question
from questions.selectors import question_statuses
from questions.worker.dbpool import run_db

logger = logging.getLogger(__name__)
# Only for logging an outage once (the check itself is retried every interval).
_outage = Breaker(
    logger=logger,
    retry_after=0.0,
    down="job rows unreadable; watchers wait for their streams",
    up="job rows readable again",
)

_FINISHED = frozenset(
    {Question.Status.SUCCEEDED, Question.Status.FAILED, Question.Status.CANCELLED}
)


@dataclass
class Followed:
    """What the shared check knows of one job: finished, or gone (deleted)."""

    finished: bool = False
    gone: bool = False
    watchers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, timeout: float) -> None:
        """Until the check finds the job finished or gone, or `timeout` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.changed.wait(), timeout)


class JobPoll:
    def __init__(self) -> None:
        self._jobs: dict[uuid.UUID, Followed] = {}
        self._task: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def follow(self, job_id: uuid.UUID) -> AsyncIterator[Followed]:
        followed = self._jobs.get(job_id)
        if followed is None:
            followed = self._jobs[job_id] = Followed()
        followed.watchers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="events-job-poll")
        try:
            yield followed
        finally:
            followed.watchers -= 1
            if followed.watchers == 0:
                self._jobs.pop(job_id, None)

    async def _run(self) -> None:
        while self._jobs:
            await asyncio.sleep(settings.QUESTIONS_EVENTS_POLL_INTERVAL)
            pending = [job_id for job_id, f in self._jobs.items() if not (f.finished or f.gone)]
            if not pending:
                continue
            try:
                statuses = await run_db(question_statuses, question_ids=pending)
            except DatabaseError as exc:
                _outage.failed(exc)
                continue
            _outage.succeeded()
            for job_id in pending:
                followed = self._jobs.get(job_id)
                if followed is None:
                    continue
                status = statuses.get(job_id)
                followed.gone = status is None
                followed.finished = status in _FINISHED
                if followed.gone or followed.finished:
                    followed.changed.set()


_polls: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, JobPoll] = weakref.WeakKeyDictionary()


def job_poll() -> JobPoll:
    """The shared check of the running event loop."""
    loop = asyncio.get_running_loop()
    poll = _polls.get(loop)
    if poll is None:
        poll = _polls[loop] = JobPoll()
    return poll
