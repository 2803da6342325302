"""A finished job in the Redis cache (`questions.cache`, which holds plain dicts): the Question's
columns as JSON and back."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from django.core.exceptions import ValidationError as DjangoValidationError

from questions import cache
from questions.models import Question


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
    return job_from_json(cache.job_cache_get(question_id))


def job_cache_set(question: Question) -> None:
    cache.job_cache_set(question.pk, job_to_json(question))


def job_cache_write(question: Question) -> cache.CacheWrite | None:
    """`job_cache_set` for a Redis pipeline (`questions.cache.CacheWrite`)."""
    return cache.job_cache_write(question.pk, job_to_json(question))
