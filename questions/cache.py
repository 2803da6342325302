"""The Redis cache in front of PostgreSQL: finished jobs and API-token lookups, one key each,
with a TTL, and survival when Redis is down.

Redis holds plain JSON only (config: questions.cache_serializer): a job as its column values with
its owner's id, a token as its user's id and flags. Nothing read from Redis is executable, and a
value that is not our JSON is a miss. This module knows no model: it stores and returns plain
dicts (`questions.job_cache` turns a job into one and back).

When Redis fails, the caller falls back to PostgreSQL. The failure is counted every time and
logged once per outage, and the cache is not tried again for a few seconds (a small circuit
breaker), so a dead Redis costs one timeout per few seconds, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection

from questions.breaker import Breaker
from questions.metrics import CACHE_FALLBACKS

if TYPE_CHECKING:
    from redis import Redis

logger = logging.getLogger(__name__)

_breaker = Breaker(
    logger=logger,
    retry_after=5.0,
    down="Redis cache unavailable, serving from PostgreSQL",
    up="Redis cache available again",
)


def _guarded(operation: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one cache call unless the breaker is open; None (and counted) when Redis fails."""
    if not _breaker.available():
        CACHE_FALLBACKS.labels(operation=operation).inc()
        return None
    try:
        result = call(*args, **kwargs)
    except Exception as exc:
        CACHE_FALLBACKS.labels(operation=operation).inc()
        _breaker.failed(exc)
        return None
    _breaker.succeeded()
    return result


def redis_call(operation: str, call: Callable[[Redis], Any]) -> Any:
    """`call(client)` on the raw Redis connection, under the same breaker as the cache: None,
    counted and logged once, when Redis is down (the caller must then fall back)."""
    return _guarded(operation, lambda: call(get_redis_connection("default")))


# --- finished jobs ------------------------------------------------------------------------


def _job_key(question_id: uuid.UUID) -> str:
    return f"job:{question_id}"


def job_cache_get(question_id: uuid.UUID) -> dict[str, object] | None:
    """The job's cached columns (`questions.job_cache` turns them back into a Question), or None:
    a miss, Redis down, or a value that is not such a dict."""
    data = _guarded("get", cache.get, _job_key(question_id))
    return data if isinstance(data, dict) else None


def job_cache_set(question_id: uuid.UUID, data: dict[str, object]) -> None:
    """Cache a finished job's columns (JSON-ready: `questions.job_cache.job_to_json`)."""
    _guarded("set", cache.set, _job_key(question_id), data, timeout=settings.QUESTIONS_CACHE_TTL)


@dataclass(frozen=True, slots=True)
class CacheWrite:
    """A job's cache entry for another client's Redis pipeline (the worker's, which ends the
    job's stream in the same round trip): the key, value and TTL exactly as `job_cache_set`
    writes them through django-redis. Report how it went with `cache_write_done`."""

    key: str
    value: bytes | int
    ttl_ms: int

    def add_to(self, pipe: Any) -> None:
        # As django-redis's `set`: a TTL of zero or less deletes the key.
        if self.ttl_ms > 0:
            pipe.set(self.key, self.value, px=self.ttl_ms)
        else:
            pipe.delete(self.key)


def job_cache_write(question_id: uuid.UUID, data: dict[str, object]) -> CacheWrite | None:
    """`job_cache_set`, to be sent in a pipeline; None (counted) while the breaker is open."""
    if not _breaker.available():
        CACHE_FALLBACKS.labels(operation="set").inc()
        return None
    # django-redis's own key function and encoding (serializer, compressor) for this entry.
    client = cast(Any, cache).client
    return CacheWrite(
        key=str(cache.make_key(_job_key(question_id))),
        value=client.encode(data),
        ttl_ms=int(settings.QUESTIONS_CACHE_TTL * 1000),
    )


def cache_write_done(error: BaseException | None) -> None:
    """How a `CacheWrite` went: its failure counts and trips the breaker as `_guarded`'s."""
    if error is None:
        _breaker.succeeded()
        return
    CACHE_FALLBACKS.labels(operation="set").inc()
    _breaker.failed(error)


def job_cache_delete(question_id: uuid.UUID) -> None:
    _guarded("delete", cache.delete, _job_key(question_id))


def job_cache_delete_many(question_ids: list[uuid.UUID]) -> None:
    _guarded("delete", cache.delete_many, [_job_key(question_id) for question_id in question_ids])


# --- API tokens ---------------------------------------------------------------------------
# A revoked token must be refused at once by every process, however its revocation met Redis:
# - its entry is deleted when the row is (best effort), and after the deletion commits a
#   tombstone takes its place for TOKEN_CACHE_TTL; lookups cache with SET NX (`add`), so a
#   lookup that read the row before the commit cannot put the token back;
# - a tombstone that could not be written (Redis unreachable, breaker open) is kept in this
#   process, which refuses the token itself and writes the tombstone as soon as Redis answers
#   (at its next token lookup, or from a thread that retries every second);
# - and for TOKEN_CACHE_TTL after this process last failed to reach Redis, a cached entry is
#   checked against PostgreSQL before it is believed: another process may have revoked a token
#   while Redis was unreachable and not be able to write its tombstone yet.

REVOKED: dict[str, Any] = {"revoked": True}
_RETRY_SECONDS = 1.0
_unsent_lock = threading.Lock()
_unsent_tombstones: set[str] = set()
_retrying = False


def _token_key(digest: str) -> str:
    # The token's digest, so that Redis never holds a usable token, not even in key names.
    return f"auth:token:{digest}"


def token_cache_get(digest: str) -> dict[str, Any] | None:
    """The cached entry, `REVOKED`, or None (a miss: ask PostgreSQL)."""
    if _unsent_tombstones:
        _send_tombstones()
        if digest in _unsent_tombstones:
            return REVOKED
    entry = _guarded("get", cache.get, _token_key(digest))
    return entry if isinstance(entry, dict) else None


def token_cache_set(digest: str, entry: dict[str, Any], *, timeout: float) -> None:
    """Cache a lookup unless the key is taken (by a tombstone, or by a lookup as fresh)."""
    _guarded("set", cache.add, _token_key(digest), entry, timeout=timeout)


def token_cache_delete(digest: str) -> None:
    _guarded("delete", cache.delete, _token_key(digest))


def token_cache_trusted() -> bool:
    """False for TOKEN_CACHE_TTL after Redis was last unreachable from this process."""
    return not _breaker.failed_within(settings.TOKEN_CACHE_TTL)


def token_cache_revoke(digest: str) -> None:
    """After a token's deletion committed: its tombstone, now or as soon as Redis answers."""
    with _unsent_lock:
        _unsent_tombstones.add(digest)
    if not _send_tombstones():
        _retry_in_background()


def _write_tombstones(digests: list[str]) -> bool:
    cache.set_many(
        {_token_key(digest): REVOKED for digest in digests}, timeout=settings.TOKEN_CACHE_TTL
    )
    return True


def _send_tombstones() -> bool:
    """Write the tombstones not written yet; True when none is left."""
    with _unsent_lock:
        digests = list(_unsent_tombstones)
    if not digests:
        return True
    if not _guarded("set", _write_tombstones, digests):
        return False
    with _unsent_lock:
        _unsent_tombstones.difference_update(digests)
        return not _unsent_tombstones


def _retry_in_background() -> None:
    global _retrying
    with _unsent_lock:
        if _retrying:
            return
        _retrying = True

    def retry() -> None:
        global _retrying
        while True:
            time.sleep(_RETRY_SECONDS)  # a pause between attempts, not synchronisation
            if _send_tombstones():
                with _unsent_lock:
                    if not _unsent_tombstones:
                        _retrying = False
                        return

    threading.Thread(target=retry, name="token-tombstones", daemon=True).start()


def reset_breaker() -> None:
    """Close the circuit breaker (tests, and after an operator fixed Redis)."""
    _breaker.reset()
