"""What the OpenAPI schema says of the API's answers besides the job: the error bodies (one
component for every JSON error, one for a refused question), the headers that come with them,
and the events of a job's stream.

A view lists every status it can answer with `errors(...)`, so that each is documented with its
body: tests/integration/test_api_contract.py runs a generated client against the server and fails
on any status, body or header the schema does not name.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

# The codes of questions.limits.AskRefused, and the names of a job's events (questions.api.events);
# their components are named in SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].
ASK_REFUSED_CODES = ["throttled", "too_many_open_jobs", "budget_exceeded"]
EVENT_NAMES = ["status", "reset", "delta", "done", "failed", "cancelled"]


# Every error of the API (questions.api.errors.exception_handler), 429s of the limits on asking
# excepted (AskRefusedSerializer). Inline: a serializer class cannot declare a field `fields`.
API_ERROR = inline_serializer(
    name="ApiError",
    fields={
        "error": serializers.CharField(
            help_text="A code for programs: invalid, parse_error, not_authenticated, not_found, …"
        ),
        "detail": serializers.CharField(help_text="What is wrong, in words for a person."),
        "fields": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField()),
            required=False,
            help_text="With `invalid`: the messages of each field or header at fault.",
        ),
    },
)


class AskRefusedSerializer(serializers.Serializer):
    """A question refused by a limit on asking (questions.limits)."""

    error = serializers.ChoiceField(choices=ASK_REFUSED_CODES)
    detail = serializers.CharField(help_text="Which limit, and when it lets the question in.")
    retry_after = serializers.IntegerField(min_value=1, help_text="Seconds; as Retry-After.")


_DESCRIPTIONS: dict[int, str] = {
    400: "Bad input: `detail` says what, `fields` which field or header.",
    401: "No credentials, or a token that is unknown, expired or revoked.",
    403: "A session (cookie) client without its CSRF token; token clients never see it.",
    404: "No such job, or not yours.",
    406: "The Accept header names no type this operation answers with (JSON).",
    409: "The job's state does not allow it.",
    415: "The body is not `application/json`.",
    422: "The Idempotency-Key was already used for a different question.",
    429: "Too many open event streams (per user or per client IP): `retry_after` (seconds, as "
    "Retry-After) says when a slot may be free.",
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """The JSON error responses of an operation, with their body and description."""
    return {
        status: OpenApiResponse(API_ERROR, description=_DESCRIPTIONS[status]) for status in statuses
    }


def refused() -> dict[int, OpenApiResponse]:
    return {
        429: OpenApiResponse(
            AskRefusedSerializer,
            description="A limit on asking: the rate, the unfinished jobs, or the daily budget.",
        )
    }


def response_header(
    name: str, *, statuses: list[int], description: str, type_: Any = OpenApiTypes.STR
) -> OpenApiParameter:
    """A header that every response of `statuses` carries."""
    return OpenApiParameter(
        name=name,
        type=type_,
        location=OpenApiParameter.HEADER,
        required=True,
        response=statuses,
        description=description,
    )


WWW_AUTHENTICATE = response_header(
    "WWW-Authenticate", statuses=[401], description="`Token`: how to authenticate."
)
RETRY_AFTER = response_header(
    "Retry-After",
    statuses=[429],
    type_={"type": "string", "pattern": r"^\d+$"},
    description="Seconds to wait before asking again.",
)

# One event of a job's stream, as an EventSource sees it (the shape of Open API 3.2's event
# items); `data` is JSON, its shape named per event.
SERVER_SENT_EVENT = inline_serializer(
    name="JobEvent",
    fields={
        "event": serializers.ChoiceField(
            choices=EVENT_NAMES,
            help_text=(
                "`status`: data `{status}`; `reset`: data `{attempt}`, a new attempt starts "
                "and the text so far is void; `delta`: data `{text}`, the next piece of the "
                "answer; `done` / `failed` / `cancelled`: data is the finished job (as GET "
                "returns it), and the stream ends."
            ),
        ),
        "data": serializers.CharField(help_text="JSON."),
        "id": serializers.RegexField(
            r"^(\d{1,20}-\d{1,20}|final)$",
            required=False,
            help_text="Send it back as Last-Event-ID to resume after this event.",
        ),
        "retry": serializers.IntegerField(
            required=False, min_value=0, help_text="Milliseconds before reconnecting."
        ),
    },
)
