"""The answer stream of a running job: a capped Redis stream per job, with a TTL.

The worker appends to it while the LLM writes; the SSE endpoint reads it (and resumes from an
entry id, which is also the SSE event id). Each entry has exactly one field, its kind:

- ``reset``: a new attempt begins (its value is the attempt's number): the text so far is an
  earlier attempt's, and readers drop it;
- ``status``: the job's new status (``running`` when a worker starts it);
- ``delta``: the next piece of the answer's text;
- ``end``: the job's final status (one of ``FINAL_STATUSES``), written after the row is stored
  (readers then load the row). Never written for an outcome that is not final.

The stream is a convenience for watchers, never the record: the job row holds the whole answer.
So every write is best-effort (a Redis outage costs the live view, not the job), and a reader
that finds no stream falls back to the row. This module knows nothing of questions beyond ids.
"""

from __future__ import annotations

import asyncio
import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis.asyncio
from django.conf import settings
from django_redis import get_redis_connection
from redis.typing import EncodableT, FieldT

Kind = Literal["reset", "status", "delta", "end"]
KINDS: tuple[Kind, ...] = ("reset", "status", "delta", "end")
# The values an `end` entry may carry: after one of them nothing more is written.
FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
# An XREAD reply as these clients get it (RESP2, redis-py's default protocol): per stream, its
# key and its entries, each an id and its fields. redis-py types the reply for RESP3 too.
XReadPairs = list[tuple[str, list[tuple[str, dict[str, str]]]]]

_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, redis.asyncio.Redis] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True, slots=True)
class Entry:
    id: str  # Redis stream id, "<ms>-<seq>": ordered, and usable as the SSE event id
    kind: Kind
    value: str


def stream_key(job_id: uuid.UUID) -> str:
    return f"{settings.CACHES['default']['KEY_PREFIX']}:stream:{job_id}"


def async_redis() -> redis.asyncio.Redis:
    """The asyncio Redis client of the running event loop (one per loop, built on first use)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        client = redis.asyncio.Redis.from_url(
            # django-stubs allows a list of servers; this project configures one URL.
            cast(str, settings.CACHES["default"]["LOCATION"]),
            socket_connect_timeout=settings.QUESTIONS_STREAM_REDIS_TIMEOUT,
            # A Redis that never answers fails the call; every XREAD BLOCK here is shorter.
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            max_connections=settings.QUESTIONS_STREAM_REDIS_MAX_CONNECTIONS,
            decode_responses=True,
        )
        _clients[loop] = client
    return client


def _xadd_args(entries: Iterable[tuple[Kind, str]]) -> list[dict[FieldT, EncodableT]]:
    return [{kind: value} for kind, value in entries]


async def stream_append(job_id: uuid.UUID, entries: Sequence[tuple[Kind, str]]) -> None:
    """Append entries in one round trip (pipelined XADDs and the TTL). Raises on Redis errors:
    callers decide whether the live view is worth a retry (it usually is not)."""
    if not entries:
        return
    async with async_redis().pipeline(transaction=False) as pipe:
        stream_entries_add(pipe, job_id, entries)
        await pipe.execute()


def stream_entries_add(pipe: Any, job_id: uuid.UUID, entries: Sequence[tuple[Kind, str]]) -> None:
    """Queue the XADDs of `entries` and the stream's TTL on a Redis pipeline (sync or asyncio):
    every writer of a job's stream goes through here."""
    key = stream_key(job_id)
    for fields in _xadd_args(entries):
        pipe.xadd(key, fields, maxlen=settings.QUESTIONS_STREAM_MAX_ENTRIES, approximate=True)
    pipe.expire(key, settings.QUESTIONS_STREAM_TTL)


def stream_append_sync(job_id: uuid.UUID, entries: Sequence[tuple[Kind, str]]) -> None:
    """`stream_append` for synchronous code (the web's Stop of a queued job, for one)."""
    if not entries:
        return
    pipe = get_redis_connection("default").pipeline(transaction=False)
    stream_entries_add(pipe, job_id, entries)
    pipe.execute()


async def stream_read(
    job_id: uuid.UUID, *, after: str = "0", block_ms: int | None = None
) -> list[Entry]:
    """Entries after the id `after` ("0": from the start); with `block_ms`, wait up to that long
    for the first one. An empty list means nothing new (or no stream at all)."""
    response = await async_redis().xread({stream_key(job_id): after}, block=block_ms, count=1000)
    return [
        entry for _key, items in cast(XReadPairs, response or []) for entry in entries_of(items)
    ]


def entries_of(items: list[tuple[str, dict[str, str]]]) -> list[Entry]:
    """The entries of one stream in an XREAD reply."""
    entries: list[Entry] = []
    for entry_id, fields in items:
        for kind in KINDS:
            if kind in fields:
                entries.append(Entry(id=entry_id, kind=kind, value=fields[kind]))
                break
    return entries


async def close_async_redis() -> None:
    """Close the running loop's client (a loop that ends with its work, as WSGI's SSE does)."""
    client = _clients.pop(asyncio.get_running_loop(), None)
    if client is not None:
        await client.aclose()
