"""The worker's Redis writes for one job: its live answer stream and the stash of a paid answer.

Both are best-effort and each is guarded by a small breaker of its own: when Redis fails, the
failure is logged once, and Redis is not tried again for a second, so a dead Redis costs the
live view, never the job, and not a timeout per chunk. The stash has its own breaker so that a
failing live stream (an entry Redis refuses, say) never stops paid answers from being stashed.

- `LiveAnswer` appends the answer to the job's stream (questions.live.streams) as it grows, pieces
  coalesced to one entry per `FLUSH_SECONDS` at most, and the final status after the row is stored,
  with the job's cache entry when one is given (`questions.cache.CacheWrite`, under the cache's
  own breaker) in the same pipeline: one round trip to end a job.
  Each attempt starts with a `reset` entry, so that watchers drop an earlier attempt's partial
  text (sent without holding up the call: the attempt's later writes wait for it); `end` is
  written only for a final status (a watcher stops reading at `end`).
- The writes that jobs ask for in one turn of the event loop go to Redis in one pipeline
  (`_round_trip`): the jobs of a receive batch start together, and jobs whose calls end together
  settle and finish together, so a wave of jobs costs a few round trips, not three per job. Each
  job still gets its own commands' results (and errors).
- The stash keeps a completion the provider was paid for until the row holds it, so a job whose
  store failed (PostgreSQL gone mid-call) is finished from the stash when it is claimed again,
  instead of paying for a second call. `LiveAnswer.settle` writes it with the rest of the text:
  one round trip between the call's end and the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings

from questions.breaker import Breaker
from questions.cache import CacheWrite, cache_write_done
from questions.live.streams import (
    FINAL_STATUSES,
    Kind,
    async_redis,
    stream_entries_add,
)
from questions.llm.client import Completion
from questions.llm.text import without_lone_surrogates

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.05
_STASH_TTL = 7 * 24 * 3600
_breaker = Breaker(
    logger=logger,
    retry_after=1.0,
    down="Redis unavailable: answers are not streamed live (they are still stored)",
    up="Redis available again: answers are streamed live",
)
_stash_breaker = Breaker(
    logger=logger,
    retry_after=1.0,
    down="Redis unavailable: paid answers are not stashed until stored",
    up="Redis available again: paid answers are stashed until stored",
)


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def _gate() -> asyncio.Semaphore:
    """Fewer Redis calls at once than the stream client's pool holds connections (it refuses,
    rather than waits, past its size), however many jobs are in flight."""
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        size = max(settings.QUESTIONS_STREAM_REDIS_MAX_CONNECTIONS - 2, 1)
        gate = _gates[loop] = asyncio.Semaphore(size)
    return gate


Build = Callable[[Any], None]  # adds one job's commands to a pipeline


class _RoundTrips:
    """One pipeline per turn of the event loop for the writes asked for in that turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: list[tuple[Build, asyncio.Future[list[Any]]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, build: Build) -> asyncio.Future[list[Any]]:
        future: asyncio.Future[list[Any]] = self._loop.create_future()
        if not self._waiting:
            self._loop.call_soon(self._send)
        self._waiting.append((build, future))
        return future

    def _send(self) -> None:
        batch, self._waiting = self._waiting, []
        task = self._loop.create_task(self._execute(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _execute(self, batch: list[tuple[Build, asyncio.Future[list[Any]]]]) -> None:
        spans: list[tuple[int, int]] = []
        try:
            async with _gate(), async_redis().pipeline(transaction=False) as pipe:
                for build, future in batch:
                    first = len(pipe)
                    try:
                        build(pipe)
                    except Exception as exc:  # this job's commands only (a bug, not Redis)
                        if not future.done():
                            future.set_exception(exc)
                    spans.append((first, len(pipe)))
                results = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # Redis unreachable: every command failed
            for _build, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_build, future), (first, last) in zip(batch, spans, strict=True):
            if not future.done():
                future.set_result(results[first:last])


_round_trips: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _RoundTrips] = (
    weakref.WeakKeyDictionary()
)


async def _round_trip(build: Build) -> list[Any]:
    """`build`'s commands, sent with the others asked for in this turn of the loop; their
    results in order, a command's error in its place. Raises when Redis is unreachable."""
    loop = asyncio.get_running_loop()
    trips = _round_trips.get(loop)
    if trips is None:
        trips = _round_trips[loop] = _RoundTrips(loop)
    return await trips.add(build)


async def _append(job_id: uuid.UUID, entries: Sequence[tuple[Kind, str]]) -> bool:
    if not entries:
        return True
    if not _breaker.available():
        return False
    try:
        results = await _round_trip(lambda pipe: stream_entries_add(pipe, job_id, entries))
    except Exception as exc:
        _breaker.failed(exc)
        return False
    failed = next((r for r in results if isinstance(r, Exception)), None)
    if failed is not None:
        _breaker.failed(failed)
        return False
    _breaker.succeeded()
    return True


class LiveAnswer:
    def __init__(self, job_id: uuid.UUID) -> None:
        self.job_id = job_id
        self._pending: list[str] = []
        self._flushed_at = 0.0
        self._flushing: asyncio.Future[None] | None = None
        # A flush due, started on the loop's next turn: a call that ends meanwhile (the last
        # pieces of a stream often come in one read) sends its text with the stash instead.
        self._flush_due: asyncio.Handle | None = None
        self._started: asyncio.Future[bool] | None = None

    def start(self, attempt: int) -> None:
        """A new attempt: watchers drop what an earlier one wrote (`reset`), then `running`.
        Sent without waiting for it (the call need not wait a round trip); every later write of
        this attempt waits for it first, so watchers still read it before the text."""
        self._flushed_at = time.monotonic()
        self._started = asyncio.ensure_future(
            _append(self.job_id, [("reset", str(attempt)), ("status", "running")])
        )

    async def _after_start(self) -> None:
        if self._started is not None:
            # Shielded: a job cancelled while waiting here does not cancel its `running`.
            await asyncio.shield(self._started)

    def add(self, text: str) -> None:
        # Redis (like PostgreSQL) cannot encode a lone surrogate; one would fail the append.
        self._pending.append(without_lone_surrogates(text))
        if (
            self._flushing is None
            and self._flush_due is None
            and time.monotonic() - self._flushed_at >= FLUSH_SECONDS
        ):
            self._flush_due = asyncio.get_running_loop().call_soon(self._start_flush)

    def _start_flush(self) -> None:
        self._flush_due = None
        if self._pending and self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            await self._after_start()
            while self._pending:
                text = "".join(self._pending)
                self._pending.clear()
                self._flushed_at = time.monotonic()
                if not await _append(self.job_id, [("delta", text)]):
                    # Kept for the next flush: a reader gets the whole text once Redis is back.
                    self._pending.insert(0, text)
                    return
        finally:
            self._flushing = None

    async def finish(
        self, status: str, *, drop_stash: bool = False, cache_write: CacheWrite | None = None
    ) -> None:
        """The rest of the text and the final status, the stash dropped and the job's cache
        entry written (`questions.cache.CacheWrite`, under the cache's breaker), in one round
        trip. Only for a final status: a watcher stops reading the stream at `end`."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"{status!r} is not a final status; use leave()")
        entries = await self._rest()
        entries.append(("end", status))
        streaming = _breaker.available()
        if not streaming and cache_write is None:
            if drop_stash:
                await stash_drop(self.job_id)
            return

        def build(pipe: Any) -> None:
            if streaming:
                stream_entries_add(pipe, self.job_id, entries)
            if drop_stash:
                pipe.delete(_stash_key(self.job_id))
            if cache_write is not None:
                cache_write.add_to(pipe)

        try:
            # Each command's error in its place: the stream's and the cache's are told apart
            # (their breakers are not the same).
            results = await _round_trip(build)
        except Exception as exc:  # Redis unreachable: every command failed
            if streaming:
                _breaker.failed(exc)
            if cache_write is not None:
                cache_write_done(exc)
            if drop_stash:
                await stash_drop(self.job_id)
            return
        if cache_write is not None:
            outcome = results.pop()
            cache_write_done(outcome if isinstance(outcome, Exception) else None)
        failed = next((r for r in results if isinstance(r, Exception)), None)
        if failed is not None:
            if streaming:
                _breaker.failed(failed)
            if drop_stash:
                await stash_drop(self.job_id)

    async def leave(self) -> None:
        """This attempt ends without a final status (its claim was lost): the rest of its text,
        no `end` (the job goes on elsewhere), and the stash kept for whoever finishes it."""
        await _append(self.job_id, await self._rest())

    async def settle(
        self, attempt: int, completion: Completion, *, call_id: uuid.UUID | None = None
    ) -> None:
        """The call is over and paid: the rest of its text, and the answer stashed until the row
        holds it (`stash_put`), in one round trip (each under its own breaker)."""
        entries = await self._rest()
        streaming = bool(entries) and _breaker.available()
        stashing = _stash_breaker.available()
        if not streaming:
            self._pending[:0] = [value for _kind, value in entries]  # for finish(), or lost
            if stashing:
                await stash_put(self.job_id, attempt, completion, call_id=call_id)
            return
        if not stashing:
            if not await _append(self.job_id, entries):
                self._pending[:0] = [value for _kind, value in entries]
            return
        stash = _stash_value(attempt, completion, call_id)

        def build(pipe: Any) -> None:
            stream_entries_add(pipe, self.job_id, entries)
            pipe.set(_stash_key(self.job_id), stash, ex=_STASH_TTL)

        try:
            results = await _round_trip(build)
        except Exception as exc:  # Redis unreachable: every command failed
            _breaker.failed(exc)
            _stash_breaker.failed(exc)
            self._pending[:0] = [value for _kind, value in entries]
            return
        stashed, streamed = results[-1], results[:-1]
        if isinstance(stashed, Exception):
            _stash_breaker.failed(stashed)
        else:
            _stash_breaker.succeeded()
        failed = next((r for r in streamed if isinstance(r, Exception)), None)
        if failed is None:
            _breaker.succeeded()
        else:
            _breaker.failed(failed)
            self._pending[:0] = [value for _kind, value in entries]

    async def _rest(self) -> list[tuple[Kind, str]]:
        await self._after_start()
        if self._flush_due is not None:  # not started: its text goes with this write instead
            self._flush_due.cancel()
            self._flush_due = None
        if self._flushing is not None:
            await asyncio.shield(self._flushing)
        entries: list[tuple[Kind, str]] = []
        if self._pending:
            entries.append(("delta", "".join(self._pending)))
            self._pending.clear()
        return entries

    async def requeued(self) -> None:
        await self._after_start()
        await _append(self.job_id, [("status", "queued")])


def _stash_key(job_id: uuid.UUID) -> str:
    return f"{settings.CACHES['default']['KEY_PREFIX']}:stash:{job_id}"


async def stash_put(
    job_id: uuid.UUID, attempt: int, completion: Completion, *, call_id: uuid.UUID | None = None
) -> None:
    """Keep a paid answer until the row holds it; `call_id` names its ledger row (LLMCall), so
    the answer finished from the stash is not written to the ledger twice."""
    if not _stash_breaker.available():
        return
    key, value = _stash_key(job_id), _stash_value(attempt, completion, call_id)
    try:
        # With the other jobs' writes of this turn of the loop (a wave's calls end together).
        (result,) = await _round_trip(lambda pipe: pipe.set(key, value, ex=_STASH_TTL))
    except Exception as exc:  # Redis unreachable
        result = exc
    if isinstance(result, Exception):
        _stash_breaker.failed(result)
    else:
        _stash_breaker.succeeded()


def _stash_value(attempt: int, completion: Completion, call_id: uuid.UUID | None) -> str:
    value: dict[str, Any] = {
        "attempt": attempt,
        "call_id": str(call_id) if call_id else None,
        "text": completion.text,
        "model": completion.model,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }
    return json.dumps(value)


async def stash_drop(job_id: uuid.UUID) -> None:
    """Forget a stashed answer once the row holds it (best-effort: it expires anyway)."""
    if not _stash_breaker.available():
        return
    try:
        async with _gate():
            await async_redis().delete(_stash_key(job_id))
    except Exception as exc:
        _stash_breaker.failed(exc)


async def stash_get(job_id: uuid.UUID) -> Completion | None:
    stashed = await stash_get_call(job_id)
    return None if stashed is None else stashed[0]


async def stash_get_call(job_id: uuid.UUID) -> tuple[Completion, uuid.UUID] | None:
    """The stashed answer and the id of its ledger row (a new id for a stash written before
    the ledger existed: that call was never recorded)."""
    if not _stash_breaker.available():
        return None
    try:
        async with _gate():
            raw = await async_redis().get(_stash_key(job_id))
    except Exception as exc:
        _stash_breaker.failed(exc)
        return None
    _stash_breaker.succeeded()
    if not raw:
        return None
    value = json.loads(raw)
    completion = Completion(
        text=value["text"],
        model=value["model"],
        prompt_tokens=value["prompt_tokens"],
        completion_tokens=value["completion_tokens"],
    )
    call_id = value.get("call_id")
    return completion, uuid.UUID(call_id) if call_id else uuid.uuid4()


def reset_breakers() -> None:
    """Close both breakers (tests; after an operator fixed Redis)."""
    _breaker.reset()
    _stash_breaker.reset()
