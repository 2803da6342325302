"""The Redis cache of finished jobs: one key per job, a TTL, and survival when Redis is down.

When Redis fails, the caller falls back to PostgreSQL. The failure is counted every time and
logged once per outage, and the cache is not tried again for a few seconds (a small circuit
breaker), so a dead Redis costs one timeout per few seconds, not one per request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache

from questions.metrics import CACHE_FALLBACKS

if TYPE_CHECKING:
    from questions.models import Question

logger = logging.getLogger(__name__)

_RETRY_AFTER_SECONDS = 5.0
_lock = threading.Lock()
_down_until = 0.0
_outage_logged = False


def _job_key(question_id: object) -> str:
    return f"job:{question_id}"


def _available() -> bool:
    return time.monotonic() >= _down_until


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


def job_cache_get(question_id: object) -> Question | None:
    if not _available():
        CACHE_FALLBACKS.labels(operation="get").inc()
        return None
    try:
        value = cache.get(_job_key(question_id))
    except Exception as exc:
        _record_failure("get", exc)
        return None
    _record_success()
    return value


def job_cache_set(question: Question) -> None:
    if not _available():
        CACHE_FALLBACKS.labels(operation="set").inc()
        return
    try:
        cache.set(_job_key(question.pk), question, timeout=settings.QUESTIONS_CACHE_TTL)
    except Exception as exc:
        _record_failure("set", exc)
        return
    _record_success()


def job_cache_delete(question_id: object) -> None:
    if not _available():
        CACHE_FALLBACKS.labels(operation="delete").inc()
        return
    try:
        cache.delete(_job_key(question_id))
    except Exception as exc:
        _record_failure("delete", exc)
        return
    _record_success()


def reset_breaker() -> None:
    """Close the circuit breaker (tests, and after an operator fixed Redis)."""
    global _down_until, _outage_logged
    with _lock:
        _down_until = 0.0
        _outage_logged = False
