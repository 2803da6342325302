"""What a job's run (`questions.answering`) needs from whoever runs it, as protocols: the domain
does not know who that is. The SQS worker supplies it (`questions.worker.runtime`), and
`questions.tasks` passes it in.

- `run_db`: run ORM work off the event loop and wait for it;
- `watching`: keep a claimed job's lease and let Stop reach what it waits on (`JobWatch`);
- `batcher`: coalesce calls made within a few milliseconds into one batch call.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol


class JobStopped(Exception):
    """Stop (the row set to `cancelled`) cut off what the job was waiting on."""


class WorkerStopping(Exception):
    """The worker is stopping and this job had not started paying (it waited for the provider,
    or had not called yet): it is to be handed back, not held through the shutdown."""


class JobWatch(Protocol):
    async def stoppable[T](self, work: Awaitable[T], *, paying: bool = True) -> T:
        """Await `work`; raises `JobStopped` if Stop comes first (or came already), and
        `WorkerStopping` if the worker is stopping before `work` starts, or during it when it
        pays nothing (`paying=False`: a wait for the provider's rate limit)."""
        ...


class JobRuntime(Protocol):
    async def run_db[T](self, function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run `function` (ORM work) without blocking the event loop and return its result."""
        ...

    def watching(self, question_id: uuid.UUID, lease: float) -> AbstractContextManager[JobWatch]:
        """Watch a claimed job (its lease kept, Stop polled) until the block ends."""
        ...

    def batcher[K: Hashable, V](
        self, batch: Callable[[Sequence[K]], Awaitable[dict[K, V]]]
    ) -> Callable[[K], Awaitable[V]]:
        """A function of one key whose calls, coalesced, go to `batch` together."""
        ...
