"""Reads of completion webhooks: a user's endpoints (never anyone else's)."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from questions.models import WebhookEndpoint

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User
    from django.db.models import QuerySet


def webhook_endpoint_list(*, user: User | AnonymousUser) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner_id=user.pk).order_by("created_at")


def webhook_endpoint_get(
    *, endpoint_id: uuid.UUID, user: User | AnonymousUser
) -> WebhookEndpoint | None:
    """The user's endpoint with this id; None for an unknown one or another user's (staff
    included: an endpoint's URL and events are its owner's business)."""
    return WebhookEndpoint.objects.filter(pk=endpoint_id, owner_id=user.pk).first()
