"""The worker's `questions.runtime.JobRuntime`: its database thread pool, its in-flight watcher
and its call coalescer, handed to the domain by `questions.tasks`."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from questions.runtime import JobWatch
from questions.worker.coalesce import Coalescer
from questions.worker.dbpool import run_db
from questions.worker.inflight import in_flight


class WorkerRuntime:
    async def run_db[T](self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return await run_db(function, *args, **kwargs)

    def watching(self, question_id: uuid.UUID, lease: float) -> AbstractContextManager[JobWatch]:
        return in_flight().watching(question_id, lease)

    def batcher[K: Hashable, V](
        self, batch: Callable[[Sequence[K]], Awaitable[dict[K, V]]]
    ) -> Callable[[K], Awaitable[V]]:
        return Coalescer(batch)


WORKER_RUNTIME = WorkerRuntime()
