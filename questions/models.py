from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Question(models.Model):
    """One question and the job that answers it.

    Status only moves forward: queued → running → succeeded | failed | cancelled; a retry goes
    running → queued, and Stop makes a queued or running job cancelled. `claim_expires_at` is
    the lease a worker holds while it asks the LLM.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="questions"
    )
    text = models.TextField("question")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    answer = models.TextField(blank=True)
    error = models.TextField(blank=True, help_text="Why the job failed, in words fit for the user.")
    model = models.CharField(max_length=200, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    # What the job's LLM calls cost in US dollars: the sum of its ledger rows (LLMCall), kept
    # here in the transaction that writes each row (None: no call made).
    cost = models.DecimalField(max_digits=12, decimal_places=6, null=True, blank=True)
    # Model fallback (OPENAI_FALLBACK_MODELS): 0 asks the primary model, n the n-th fallback;
    # the attempts spent before this entry, and when the job moved to it.
    fallback_level = models.PositiveSmallIntegerField(default=0)
    fallback_after_attempts = models.PositiveIntegerField(default=0)
    fallback_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    claim_expires_at = models.DateTimeField(null=True, blank=True)
    trace_id = models.CharField(max_length=32, blank=True)
    # NULL, not "", means "no key": the unique constraint applies only to real keys.
    idempotency_key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["owner", "-created_at"], name="question_owner_created"),
            models.Index(fields=["status", "created_at"], name="question_status_created"),
            # A user's unfinished jobs, counted on every ask (QUESTIONS_MAX_OPEN_PER_USER).
            models.Index(
                fields=["owner"],
                condition=Q(status__in=["queued", "running"]),
                name="question_owner_open",
            ),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="question_unique_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.text[:60]} ({self.status})"

    def get_absolute_url(self) -> str:
        return reverse("questions:detail", kwargs={"pk": self.pk})

    @property
    def is_finished(self) -> bool:
        return self.status in self.FINISHED

    @property
    def usage(self) -> dict[str, int] | None:
        """The token counts of the answer (the API's `usage`); None until the LLM has answered."""
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    @property
    def answered_by_fallback(self) -> bool:
        """The answer came from a fallback model (OPENAI_FALLBACK_MODELS), not the primary."""
        return self.fallback_level > 0 and self.status == self.Status.SUCCEEDED

    @property
    def total_tokens(self) -> int | None:
        usage = self.usage
        return None if usage is None else usage["total_tokens"]

    @property
    def duration(self) -> timedelta | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


class LLMCall(models.Model):
    """The ledger: one row per call made to the provider, paid or not, retries, partial answers
    and calls cut off included. The job's cost, a user's spend, the budget check, the admin's
    spend page and `questions_llm_cost_usd_total` all read from it (questions.ledger writes it).

    `id` is chosen by the worker before the call, so a row written twice (a store retried, an
    answer finished from the stash) is one row."""

    class Outcome(models.TextChoices):
        SUCCEEDED = "succeeded", "Succeeded"  # a whole answer
        RETRIED = "retried", "Failed, retried"  # the job tries again
        FAILED = "failed", "Failed"  # the job failed
        FELL_BACK = "fell_back", "Failed, next model"  # the job moved to a fallback model
        RATE_LIMITED = "rate_limited", "Rate limited"  # 429: not billed, attempt kept
        CANCELLED = "cancelled", "Stopped"  # Stop cut it off
        INTERRUPTED = "interrupted", "Interrupted"  # the worker stopping cut it off

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The ledger outlives its jobs (retention deletes them): spend stays what it was.
    question = models.ForeignKey(
        Question, on_delete=models.SET_NULL, null=True, blank=True, related_name="llm_calls"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="llm_calls"
    )
    model = models.CharField(max_length=200)
    fallback_level = models.PositiveSmallIntegerField(default=0)
    attempt = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "LLM call"
        indexes = [
            # A user's spend of the day, summed on every ask: an index-only scan.
            models.Index(
                fields=["user", "created_at"], include=["cost"], name="llmcall_user_created"
            ),
            models.Index(fields=["created_at"], name="llmcall_created"),
        ]

    def __str__(self) -> str:
        return f"{self.model} {self.outcome} ${self.cost}"


class ApiToken(models.Model):
    """An API token, stored only as its SHA-256 digest: the token itself is shown once, when it
    is made, and can never be read back (not by its owner, not by staff, not from a dump).

    A plain SHA-256 suffices, unlike for passwords: tokens are 256 random bits, so there is
    nothing to guess, and a fast digest keeps each API request cheap.
    """

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The first characters, so that a person can tell their tokens apart; too few to use.
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Refreshed when the token is looked up in PostgreSQL, i.e. at most once per TOKEN_CACHE_TTL.
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())


class UserQuota(models.Model):
    """Per-user overrides of the spend limits, set by staff in the admin. A blank field means
    the setting's value (QUESTIONS_DAILY_BUDGET_USD, QUESTIONS_MAX_OPEN_PER_USER)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="quota"
    )
    daily_budget_usd = models.DecimalField(
        "daily budget (USD)",
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text="US dollars this user may spend per UTC day. Blank: the default. 0: none.",
    )
    max_open_jobs = models.PositiveIntegerField(
        "unfinished jobs at once",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="Queued and running questions this user may have at once. Blank: the default.",
    )

    class Meta:
        verbose_name = "quota"

    def __str__(self) -> str:
        return f"quota of user {self.user_id}"


class UserSpend(get_user_model()):  # type: ignore[misc]
    """The users as the admin's "spend per user" page lists them (a proxy: no table)."""

    class Meta:
        proxy = True
        verbose_name = "spend per user"
        verbose_name_plural = "spend per user"


# Completion webhooks live in a module of their own; the app's models module names them.
from questions.webhooks.models import (  # noqa: E402
    WebhookDelivery,
    WebhookEndpoint,
    WebhookEvent,
)

__all__ = [
    "ApiToken",
    "Question",
    "UserQuota",
    "UserSpend",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
]
