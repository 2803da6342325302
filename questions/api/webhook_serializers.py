"""The shapes of /api/webhooks/ and of the event a webhook delivers (for the schema)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from questions.api.serializers import QuestionOutputSerializer
from questions.models import WebhookEvent
from questions.webhooks.services import URL_MAX_LENGTH


class _RawField(serializers.Field):
    """The raw JSON value: the service (questions.webhooks.services) says what is wrong."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(
    {"type": "string", "format": "uri", "minLength": 1, "maxLength": URL_MAX_LENGTH}
)
class WebhookUrlField(_RawField):
    pass


@extend_schema_field(
    {
        "type": "array",
        "items": {"type": "string", "enum": list(WebhookEvent.values)},
        "minItems": 1,
        "uniqueItems": True,
    }
)
class WebhookEventsField(_RawField):
    pass


class WebhookEndpointInputSerializer(serializers.Serializer):
    url = WebhookUrlField(
        help_text="Where to POST events: https (a public address), at most "
        f"{URL_MAX_LENGTH} characters."
    )
    events = WebhookEventsField(help_text="The events to send: " + ", ".join(WebhookEvent.values))


class WebhookEndpointOutputSerializer(serializers.Serializer):
    """An endpoint as its owner sees it. The signing secret is never part of it."""

    id = serializers.UUIDField(read_only=True)
    url = serializers.CharField(read_only=True)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=WebhookEvent.choices), read_only=True
    )
    is_active = serializers.BooleanField(
        read_only=True, help_text="False once deliveries stopped; `disabled_reason` says why."
    )
    disabled_at = serializers.DateTimeField(read_only=True, allow_null=True)
    disabled_reason = serializers.CharField(read_only=True)
    failing_since = serializers.DateTimeField(
        read_only=True,
        allow_null=True,
        help_text="The first failed delivery since the last success; null when healthy.",
    )
    created_at = serializers.DateTimeField(read_only=True)


class WebhookEndpointWithSecretSerializer(WebhookEndpointOutputSerializer):
    secret = serializers.CharField(
        read_only=True,
        help_text="The signing secret (whsec_…), shown in this response only: store it now.",
    )


class WebhookEventSerializer(serializers.Serializer):
    """The body of a delivery (Standard Webhooks). Signed: `webhook-id` (the same on every
    retry of one event), `webhook-timestamp`, `webhook-signature` (v1, HMAC-SHA256)."""

    type = serializers.ChoiceField(choices=WebhookEvent.choices)
    timestamp = serializers.DateTimeField(help_text="When the job ended (the event's time).")
    # "data" is also a Serializer attribute (its output), hence the ignore.
    data = QuestionOutputSerializer(  # type: ignore[assignment]
        help_text="The job as GET /api/questions/{id}/ shows it; `url` is the path of that URL."
    )
