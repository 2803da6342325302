"""Coalesce calls made within a few milliseconds into one batch call (one SQL statement for a
receive batch's claims, say), on the running event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any


class Coalescer[K: Hashable, V]:
    def __init__(
        self,
        batch: Callable[[Sequence[K]], Awaitable[dict[K, V]]],
        *,
        window: float = 0.002,
        max_size: int = 50,
    ) -> None:
        self._batch = batch
        self._window = window
        self._max_size = max_size
        self._pending: list[tuple[K, asyncio.Future[V]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._keys: set[K] = set()

    async def __call__(self, key: K) -> V:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V] = loop.create_future()
        if key in self._keys:
            # The same key twice in one batch would get one result twice (a job delivered
            # twice would be claimed twice): the second goes in the next batch.
            self._flush()
        self._keys.add(key)
        self._pending.append((key, future))
        if len(self._pending) >= self._max_size:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(self._window, self._flush)
        return await future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending, self._pending = self._pending, []
        self._keys = set()
        if pending:
            asyncio.ensure_future(self._run(pending))

    async def _run(self, pending: list[tuple[K, asyncio.Future[V]]]) -> None:
        try:
            results: dict[K, Any] = await self._batch([key for key, _ in pending])
        except BaseException as exc:
            for _, future in pending:
                if not future.done():
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for key, future in pending:
            if not future.done():
                future.set_result(results[key])
