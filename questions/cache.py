"""The Redis cache in front of PostgreSQL: finished jobs and API-token lookups, one key each,
with a TTL, and survival when Redis is down.

When Redis fails, the caller falls back to PostgreSQL. The failure is counted every time and
logged once per outage, and the cache is not tried again for a few seconds (a small circuit
breaker), so a dead Redis costs one timeout per few seconds, not one per request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django_redis import get_redis_connection

from questions.metrics import CACHE_FALLBACKS

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser
    from redis import Redis

    from questions.models import Question

logger = logging.getLogger(__name__)

_RETRY_AFTER_SECONDS = 5.0
_lock = threading.Lock()
_down_until = 0.0
_outage_logged = False


def _record_failure(operation: str, exc: Exception) -> None:
    global _down_until, _outage_logged
    CACHE_FALLBACKS.labels(operation=operation).inc()
    with _lock:
        _down_until = time.monotonic() + _RETRY_AFTER_SECONDS
        if not _outage_logged:
            _outage_logged = True
            logger.warning(
                "Redis cache unavailable, serving from PostgreSQL",
                extra={"error": type(exc).__name__},
            )


def _record_success() -> None:
    global _outage_logged
    if _outage_logged:
        with _lock:
            if _outage_logged:
                _outage_logged = False
                logger.info("Redis cache available again")


def _guarded(operation: str, call: Any, *args: Any, **kwargs: Any) -> Any:
    """Run one cache call unless the breaker is open; None (and counted) when Redis fails."""
    if time.monotonic() < _down_until:
        CACHE_FALLBACKS.labels(operation=operation).inc()
        return None
    try:
        result = call(*args, **kwargs)
    except Exception as exc:
        _record_failure(operation, exc)
        return None
    _record_success()
    return result


def redis_call(operation: str, call: Callable[[Redis], Any]) -> Any:
    """`call(client)` on the raw Redis connection, under the same breaker as the cache: None,
    counted and logged once, when Redis is down (the caller must then fall back)."""
    return _guarded(operation, lambda: call(get_redis_connection("default")))


# --- finished jobs ------------------------------------------------------------------------


def _job_key(question_id: object) -> str:
    return f"job:{question_id}"


def job_cache_get(question_id: object) -> Question | None:
    return _guarded("get", cache.get, _job_key(question_id))


def job_cache_set(question: Question) -> None:
    _guarded(
        "set", cache.set, _job_key(question.pk), question, timeout=settings.QUESTIONS_CACHE_TTL
    )


def job_cache_delete(question_id: object) -> None:
    _guarded("delete", cache.delete, _job_key(question_id))


# --- API tokens ---------------------------------------------------------------------------


def _token_key(token_key: str) -> str:
    # A digest, so that Redis never holds a usable token in its key names.
    return f"auth:token:{hashlib.sha256(token_key.encode()).hexdigest()}"


def token_cache_get(token_key: str) -> AbstractBaseUser | None:
    return _guarded("get", cache.get, _token_key(token_key))


def token_cache_set(token_key: str, user: AbstractBaseUser) -> None:
    _guarded("set", cache.set, _token_key(token_key), user, timeout=settings.TOKEN_CACHE_TTL)


def token_cache_delete(token_key: str) -> None:
    _guarded("delete", cache.delete, _token_key(token_key))


def reset_breaker() -> None:
    """Close the circuit breaker (tests, and after an operator fixed Redis)."""
    global _down_until, _outage_logged
    with _lock:
        _down_until = 0.0
        _outage_logged = False
