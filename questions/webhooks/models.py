"""Completion webhooks: the endpoints a user registers and each event's delivery to one.

Importable as `questions.models` (the app's models module re-exports them).
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class WebhookEvent(models.TextChoices):
    SUCCEEDED = "question.succeeded", "question.succeeded"
    FAILED = "question.failed", "question.failed"
    CANCELLED = "question.cancelled", "question.cancelled"


class WebhookEndpoint(models.Model):
    """A URL that wants to hear of some of its owner's jobs ending.

    The signing secret is kept only encrypted (`secret_encrypted`, Fernet): signing needs the
    key itself, so a digest would not do. It is shown once, when made or rotated.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="webhook_endpoints"
    )
    url = models.URLField("URL", max_length=2000)
    # A list of WebhookEvent values (JSON, not an array column: `make run` uses SQLite).
    events = models.JSONField(default=list)
    secret_encrypted = models.TextField(editable=False)
    is_active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.TextField(
        blank=True, help_text="Why deliveries stopped, for the owner."
    )
    # The first failed attempt since the last success; a day of that disables the endpoint.
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "webhook endpoint"

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    """One event for one endpoint. Its id is the `webhook-id` of every attempt, and its payload
    the exact bytes signed, so a receiver can drop duplicates and retries verify alike."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    # Deleted with its job: the payload holds the question and the answer, which prune_jobs
    # (retention) must not leave behind.
    question = models.ForeignKey(
        "questions.Question", on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    event = models.CharField(max_length=32, choices=WebhookEvent.choices)
    payload = models.TextField(editable=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_status_code = models.PositiveIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Past this, a failed attempt is the last (QUESTIONS_WEBHOOK_RETRY_WINDOW after the event,
    # or after staff sent it again).
    retry_until = models.DateTimeField()
    # Held while an attempt runs: a duplicate message (SQS delivers at least once; staff may
    # send it again meanwhile) does not send the event a second time at once.
    claimed_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "webhook delivery"
        verbose_name_plural = "webhook deliveries"
        indexes = [
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_endpoint"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint_id} ({self.status})"

    @property
    def webhook_id(self) -> str:
        return f"msg_{self.id.hex}"
