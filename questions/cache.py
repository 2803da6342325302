"""The Redis cache in front of PostgreSQL: finished jobs and API-token lookups, one key each,
with a TTL, and survival when Redis is down.

Redis holds plain JSON only (config: questions.cache_serializer): a job as its column values with
its owner's id, a token as its user's id and flags. Nothing read from Redis is executable, and a
value that is not our JSON is a miss.

When Redis fails, the caller falls back to PostgreSQL. The failure is counted every time and
logged once per outage, and the cache is not tried again for a few seconds (a small circuit
breaker), so a dead Redis costs one timeout per few seconds, not one per request.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError as DjangoValidationError
from django_redis import get_redis_connection

from questions.breaker import Breaker
from questions.metrics import CACHE_FALLBACKS

if TYPE_CHECKING:
    from redis import Redis

    from questions.models import Question

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


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()  # full precision (DjangoJSONEncoder drops microseconds)
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    return value


def job_to_json(question: Question) -> dict[str, object]:
    """The job's columns (its owner as `owner_id`), JSON-ready."""
    return {
        field.attname: _json_value(getattr(question, field.attname))
        for field in question._meta.concrete_fields
    }


def job_from_json(data: object) -> Question | None:
    """A Question rebuilt from `job_to_json` (not saved; its owner loads on access), or None if
    `data` is not such a dict."""
    from questions.models import Question

    if not isinstance(data, dict):
        return None
    values: dict[str, object] = {}
    try:
        for field in Question._meta.concrete_fields:
            values[field.attname] = field.to_python(data[field.attname])
    except (KeyError, TypeError, ValueError, DjangoValidationError):
        return None
    return Question(**values)


def job_cache_get(question_id: uuid.UUID) -> Question | None:
    return job_from_json(_guarded("get", cache.get, _job_key(question_id)))


def job_cache_set(question: Question) -> None:
    _guarded(
        "set",
        cache.set,
        _job_key(question.pk),
        job_to_json(question),
        timeout=settings.QUESTIONS_CACHE_TTL,
    )


def job_cache_delete(question_id: uuid.UUID) -> None:
    _guarded("delete", cache.delete, _job_key(question_id))


def job_cache_delete_many(question_ids: list[uuid.UUID]) -> None:
    _guarded("delete", cache.delete_many, [_job_key(question_id) for question_id in question_ids])


# --- API tokens ---------------------------------------------------------------------------


def _token_key(digest: str) -> str:
    # The token's digest, so that Redis never holds a usable token, not even in key names.
    return f"auth:token:{digest}"


def token_cache_get(digest: str) -> dict[str, Any] | None:
    entry = _guarded("get", cache.get, _token_key(digest))
    return entry if isinstance(entry, dict) else None


def token_cache_set(digest: str, entry: dict[str, Any], *, timeout: float) -> None:
    _guarded("set", cache.set, _token_key(digest), entry, timeout=timeout)


def token_cache_delete(digest: str) -> None:
    _guarded("delete", cache.delete, _token_key(digest))


def reset_breaker() -> None:
    """Close the circuit breaker (tests, and after an operator fixed Redis)."""
    _breaker.reset()
