"""Caps on concurrent event streams (per user, per client IP), counted across processes.

Each open stream holds a *slot* in every scope it counts against: a member of a Redis sorted set
per scope (`…:sse:user:42`, `…:sse:ip:203.0.113.7`) whose score is the slot's expiry on Redis's
own clock. Taking slots is one Lua call that first drops expired members and then takes a slot in
every scope or in none, so the count is exact however many events processes serve streams. An
open stream keeps its slots by refreshing them (one pipelined call per event loop for all its
streams, every third of the lease) and gives them back when it ends; a process that dies
without giving them back loses them when their lease runs out (`QUESTIONS_SSE_LEASE_SECONDS`).

When Redis cannot be reached the process counts its own streams instead, with the same caps:
refusing every stream while Redis is down would cut off every watcher although the streams still
work from PostgreSQL, and counting nothing would let one token hold every connection. With one
events process that local count is exact; with N, a scope gets at most N × its cap during the
outage (nginx's `limit_conn` on the events location bounds a client IP whatever Redis does).

This module knows nothing of users or requests: scopes are names and limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import uuid
import weakref
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from django_redis import get_redis_connection
from redis.exceptions import RedisError

from questions.breaker import Breaker
from questions.live.streams import async_redis

logger = logging.getLogger(__name__)

_breaker = Breaker(
    logger=logger,
    retry_after=5.0,
    down="Redis unavailable for stream slots; counting this process's streams only",
    up="Redis available again for stream slots",
)

# KEYS: the scopes' sorted sets. ARGV: the slot's member, the lease in ms, then each scope's cap.
# Returns {0, 0} when every slot was taken, else {index of the full scope (1-based), ms until
# its earliest slot lapses}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local cap = tonumber(ARGV[i + 2])
  if cap > 0 and redis.call('ZCARD', key) >= cap then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {i, tonumber(first[2]) - now}
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[1])
  redis.call('PEXPIRE', key, lease)
end
return {0, 0}
"""

# KEYS: sorted sets; ARGV: the lease in ms, then one member per key.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, lease)
end
return #KEYS
"""


@dataclass(frozen=True, slots=True)
class Scope:
    """What a stream counts against: a name ("user:42", "ip:192.0.2.1") and its cap (0: none)."""

    name: str
    limit: int


@dataclass(frozen=True, slots=True)
class Refused:
    scope: Scope
    retry_after: int  # seconds


def _key(scope: Scope) -> str:
    return f"{settings.CACHES['default']['KEY_PREFIX']}:sse:{scope.name}"


def _lease_ms() -> int:
    return max(1, round(settings.QUESTIONS_SSE_LEASE_SECONDS * 1000))


class _LocalCounts:
    """This process's open streams per scope: the fallback count while Redis is down."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def over(self, scopes: Sequence[Scope]) -> Scope | None:
        with self._lock:
            return next((s for s in scopes if s.limit and self._counts[s.name] >= s.limit), None)

    def add(self, scopes: Sequence[Scope]) -> None:
        with self._lock:
            self._counts.update(s.name for s in scopes)

    def remove(self, scopes: Sequence[Scope]) -> None:
        with self._lock:
            self._counts.subtract(s.name for s in scopes)
            for scope in scopes:
                if self._counts[scope.name] <= 0:
                    del self._counts[scope.name]


_local = _LocalCounts()


@dataclass(eq=False)
class Slot:
    """The slots one stream holds. `hold()` keeps them for the stream's life, then frees them."""

    scopes: tuple[Scope, ...]
    in_redis: bool
    member: str = field(default_factory=lambda: uuid.uuid4().hex)
    _released: bool = False

    @contextlib.asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        refresher = _refresher() if self.in_redis else None
        if refresher is not None:
            refresher.add(self)
        try:
            yield
        finally:
            if refresher is not None:
                refresher.discard(self)
            await self.release()

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        _local.remove(self.scopes)
        if not self.in_redis:
            return
        try:
            async with async_redis().pipeline(transaction=False) as pipe:
                for scope in self.scopes:
                    pipe.zrem(_key(scope), self.member)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Its lease runs out by itself.
            logger.info("stream slot not released", extra={"error": type(exc).__name__})


def slot_acquire(scopes: Sequence[Scope]) -> Slot | Refused:
    """Take a slot in every scope, or in none (the first full scope, and when to try again)."""
    scopes = tuple(scopes)
    if not any(scope.limit for scope in scopes):
        _local.add(scopes)
        return Slot(scopes=scopes, in_redis=False)
    if _breaker.available():
        slot = Slot(scopes=scopes, in_redis=True)
        try:
            full, wait_ms = cast(
                list[int],
                get_redis_connection("default").eval(
                    _ACQUIRE,
                    len(scopes),
                    *(_key(scope) for scope in scopes),
                    slot.member,
                    _lease_ms(),
                    *(scope.limit for scope in scopes),
                ),
            )
        except (RedisError, OSError) as exc:
            _breaker.failed(exc)
        else:
            _breaker.succeeded()
            if full:
                return Refused(scopes[int(full) - 1], max(1, math.ceil(int(wait_ms) / 1000)))
            _local.add(scopes)
            return slot
    over = _local.over(scopes)
    if over is not None:
        return Refused(over, max(1, math.ceil(settings.QUESTIONS_SSE_LEASE_SECONDS)))
    _local.add(scopes)
    return Slot(scopes=scopes, in_redis=False)


def slot_counts(scopes: Sequence[Scope]) -> dict[str, int]:
    """The live slots per scope in Redis (tests, operators)."""
    client = get_redis_connection("default")
    counts = {}
    for scope in scopes:
        key = _key(scope)
        now_ms = int(cast(Any, client.time())[0]) * 1000
        client.zremrangebyscore(key, "-inf", now_ms)
        counts[scope.name] = int(cast(int, client.zcard(key)))
    return counts


class _Refresher:
    """One task per event loop that refreshes the leases of every stream the loop serves."""

    def __init__(self) -> None:
        self._slots: set[Slot] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, slot: Slot) -> None:
        self._slots.add(slot)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="stream-slot-leases")

    def discard(self, slot: Slot) -> None:
        self._slots.discard(slot)

    async def _run(self) -> None:
        interval = max(0.05, settings.QUESTIONS_SSE_LEASE_SECONDS / 3)
        while self._slots:
            await asyncio.sleep(interval)
            pairs = [(_key(s), slot.member) for slot in list(self._slots) for s in slot.scopes]
            if not pairs:
                continue
            try:
                await async_redis().eval(
                    _REFRESH,
                    len(pairs),
                    *(key for key, _ in pairs),
                    _lease_ms(),
                    *(member for _, member in pairs),
                )
            except (RedisError, OSError) as exc:
                logger.info("stream slot leases not refreshed", extra={"error": type(exc).__name__})


_refreshers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Refresher] = (
    weakref.WeakKeyDictionary()
)


def _refresher() -> _Refresher:
    loop = asyncio.get_running_loop()
    refresher = _refreshers.get(loop)
    if refresher is None:
        refresher = _refreshers[loop] = _Refresher()
    return refresher


def reset_slots_breaker() -> None:
    """Close the circuit breaker (tests)."""
    _breaker.reset()
