"""The body of an event: the Standard Webhooks envelope around the job as the API shows it.

`{"type": "question.succeeded", "timestamp": "…", "data": {<the job>}}`. `data` has the fields
and formats of the API's job (questions/api/serializers.py: QuestionOutputSerializer; a test
holds the two together), with `url` as a path: the service knows no public host name.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.urls import reverse

from questions.models import Question

_COST_PLACES = Decimal("0.000001")


def _datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def question_data(question: Question) -> dict[str, Any]:
    return {
        "id": str(question.pk),
        "url": reverse("api:question-detail", kwargs={"pk": question.pk}),
        "question": question.text,
        "status": question.status,
        "answer": question.answer,
        "error": question.error,
        "model": question.model,
        "attempts": question.attempts,
        "usage": question.usage,
        "cost": None if question.cost is None else f"{question.cost.quantize(_COST_PLACES):f}",
        "answered_by_fallback": question.answered_by_fallback,
        "created_at": _datetime(question.created_at),
        "started_at": _datetime(question.started_at),
        "finished_at": _datetime(question.finished_at),
    }


def event_payload(*, event: str, question: Question, at: datetime) -> str:
    """The exact text that is signed and sent, the same on every attempt."""
    body = {"type": event, "timestamp": _datetime(at), "data": question_data(question)}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)
