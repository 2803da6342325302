"""One reader of the answer streams per event loop, shared by every watcher in it.

A blocking XREAD holds its Redis connection until something arrives, so one XREAD per watcher
would need a connection per watcher (a thousand watchers: a thousand connections, far beyond
the client's pool). Here one task per event loop reads every watched job's stream with a single
multi-key XREAD and hands the entries to the watchers of each job; many watchers of one job share
its entries in memory. A job's entries are dropped when its last watcher leaves.

The shared read blocks for at most `CYCLE_SECONDS`, after which it includes newly watched jobs;
a newly watched job is caught up at once by a non-blocking read of its own, so a watcher never
waits a cycle for what is already written. Those catch-up reads pass a gate
(`QUESTIONS_EVENTS_CATCHUP_CONCURRENCY` at once): when the events process restarts every
watcher reconnects together, and a thousand catch-ups at once would ask the Redis client for a
thousand connections (its pool holds 50; past that each read fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from redis.exceptions import RedisError
from redis.typing import KeyT, StreamIdT

from questions.live.streams import (
    FINAL_STATUSES,
    Entry,
    XReadPairs,
    async_redis,
    entries_of,
    stream_key,
)

logger = logging.getLogger(__name__)

CYCLE_SECONDS = 0.25
_RETRY_SECONDS = 1.0
_READ_COUNT = 1000


def _order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class _Job:
    entries: list[Entry] = field(default_factory=list)
    last_id: str = "0"
    watchers: int = 0
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    shared: dict[str, asyncio.Future[Any]] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        # Only a final `end` stops the reads (an older worker may have written another).
        if not self.entries:
            return False
        last = self.entries[-1]
        return last.kind == "end" and last.value in FINAL_STATUSES

    def add(self, entries: list[Entry]) -> None:
        last = _order(self.last_id)
        fresh = [entry for entry in entries if _order(entry.id) > last]
        if fresh:
            self.entries.extend(fresh)
            self.last_id = fresh[-1].id
            self.notify()

    def notify(self) -> None:
        changed, self.changed = self.changed, asyncio.Event()
        changed.set()

    def after(self, entry_id: str) -> list[Entry]:
        last = _order(entry_id)
        return [entry for entry in self.entries if _order(entry.id) > last]


class StreamHub:
    def __init__(self) -> None:
        self._jobs: dict[str, _Job] = {}
        self._task: asyncio.Task[None] | None = None
        self.failure: BaseException | None = None
        self._catch_up_gate = asyncio.BoundedSemaphore(
            settings.QUESTIONS_EVENTS_CATCHUP_CONCURRENCY
        )

    @contextlib.asynccontextmanager
    async def watch(self, job_id: uuid.UUID) -> AsyncIterator[Watch]:
        key = stream_key(job_id)
        job = self._jobs.get(key)
        new = job is None
        if job is None:
            job = self._jobs[key] = _Job()
        job.watchers += 1
        try:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._run(), name="answer-stream-hub")
            if new:
                await self._catch_up(key, job)
            yield Watch(hub=self, job=job)
        finally:
            job.watchers -= 1
            if job.watchers == 0:
                self._jobs.pop(key, None)

    async def _catch_up(self, key: str, job: _Job) -> None:
        try:
            async with self._catch_up_gate:
                response = await async_redis().xread({key: job.last_id}, count=_READ_COUNT)
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return
        for _key, items in cast(XReadPairs, response or []):
            job.add(entries_of(items))

    def _failed(self, exc: BaseException) -> None:
        if self.failure is None:
            logger.warning("answer streams unreadable", extra={"error": type(exc).__name__})
        self.failure = exc
        for job in self._jobs.values():
            job.notify()

    async def _run(self) -> None:
        while self._jobs:
            streams: dict[KeyT, StreamIdT] = {
                key: job.last_id for key, job in self._jobs.items() if not job.ended
            }
            if not streams:
                await asyncio.sleep(CYCLE_SECONDS)
                continue
            try:
                response = await async_redis().xread(
                    streams, block=int(CYCLE_SECONDS * 1000), count=_READ_COUNT
                )
            except (RedisError, OSError) as exc:
                self._failed(exc)
                await asyncio.sleep(_RETRY_SECONDS)
                continue
            self.failure = None
            for key, items in cast(XReadPairs, response or []):
                job = self._jobs.get(key)
                if job is not None:
                    job.add(entries_of(items))


@dataclass
class Watch:
    hub: StreamHub
    job: _Job

    async def shared(self, name: str, load: Callable[[], Awaitable[Any]]) -> Any:
        """`load()` once for all watchers of this job (the stored job at its end: a thousand
        watchers of one job cost one read, not a thousand)."""
        future = self.job.shared.get(name)
        if future is None:
            future = self.job.shared[name] = asyncio.ensure_future(load())
        return await asyncio.shield(future)

    async def read(self, *, after: str, timeout: float) -> list[Entry]:
        """Entries after `after`, waiting up to `timeout` seconds for the first; [] if none.
        Raises the Redis error while the streams cannot be read."""
        if self.hub.failure is not None:
            raise self.hub.failure
        entries = self.job.after(after)
        if entries:
            return entries
        changed = self.job.changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        if self.hub.failure is not None:
            raise self.hub.failure
        return self.job.after(after)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, StreamHub] = weakref.WeakKeyDictionary()


def stream_hub() -> StreamHub:
    """The hub of the running event loop."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = StreamHub()
    return hub
