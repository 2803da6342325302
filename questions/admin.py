"""Job history for staff. Rows are written only by the service layer: the admin reads, retries
failed jobs (questions.services.question_retry) and exports; it never edits a job by hand."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.utils import flatten_fieldsets
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from questions.limits import Limits, limits_of
from questions.models import (
    ApiToken,
    LLMCall,
    Question,
    UserQuota,
    UserSpend,
    WebhookDelivery,
    WebhookEndpoint,
)
from questions.selectors import user_spend_list
from questions.services import QuestionAlreadyFinished, question_cancel, question_retry
from questions.webhooks.services import webhook_delivery_resend

CSV_COLUMNS = (
    "id",
    "owner",
    "status",
    "model",
    "attempts",
    "prompt_tokens",
    "completion_tokens",
    "created_at",
    "started_at",
    "finished_at",
    "duration_seconds",
    "question",
    "answer",
    "error",
    "cost_usd",
)
# A cell starting with one of these is a formula to a spreadsheet: the LLM or the asker could
# smuggle one in, so such cells are prefixed with a quote (OWASP "CSV injection").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_PREFIXES) else text


def _csv_row(question: Question) -> Iterable[object]:
    duration = question.duration
    values: Iterable[object] = (
        question.pk,
        question.owner.get_username(),
        question.status,
        question.model,
        question.attempts,
        question.prompt_tokens,
        question.completion_tokens,
        question.created_at.isoformat(),
        question.started_at.isoformat() if question.started_at else None,
        question.finished_at.isoformat() if question.finished_at else None,
        f"{duration.total_seconds():.3f}" if duration is not None else None,
        question.text,
        question.answer,
        question.error,
        question.cost,
    )
    return values


def _csv_response(
    name: str, header: Iterable[str], rows: Iterable[Iterable[object]]
) -> HttpResponse:
    """A CSV download, every cell guarded against formula injection."""
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    writer = csv.writer(response)
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_cell(value) for value in row])
    return response


_LEDGER_FIELDS = (
    "created_at",
    "attempt",
    "model",
    "fallback_level",
    "outcome",
    "prompt_tokens",
    "completion_tokens",
    "cost",
)


class LLMCallInline(admin.TabularInline):
    """The job's ledger: every call made for it, what it used and cost, and how it ended."""

    model = LLMCall
    fields = _LEDGER_FIELDS
    readonly_fields = _LEDGER_FIELDS
    extra = 0
    can_delete = False
    ordering = ("created_at",)
    verbose_name_plural = "LLM calls (the ledger: the job's cost is their sum)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(LLMCall)
class LLMCallAdmin(admin.ModelAdmin):
    """The spend ledger, read-only: written by the worker (questions.ledger) alone."""

    list_display = ("created_at", "user", "model", "outcome", "tokens", "cost", "question")
    list_filter = ("outcome", "model", "fallback_level", "created_at")
    search_fields = ("user__username", "model", "question__id")
    list_select_related = ("user", "question")
    date_hierarchy = "created_at"
    list_per_page = 100
    fields = ("id", "question", "user", *_LEDGER_FIELDS)
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: LLMCall | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: LLMCall | None = None) -> bool:
        return False

    @admin.display(description="tokens")
    def tokens(self, call: LLMCall) -> int:
        return call.prompt_tokens + call.completion_tokens


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = (
        "short_question",
        "owner",
        "status",
        "model",
        "fallback",
        "attempts",
        "tokens",
        "cost",
        "created_at",
        "duration_display",
    )
    list_filter = (
        "status",
        "model",
        "fallback_level",
        "created_at",
        ("owner", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("text", "answer", "owner__username", "owner__email")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    ordering = ("-created_at",)
    actions = ("retry_failed", "stop_jobs", "export_csv")
    inlines = (LLMCallInline,)
    fieldsets = (
        (None, {"fields": ("id", "owner", "text", "status")}),
        ("Outcome", {"fields": ("answer", "error", "model", "fallback", "attempts")}),
        ("Usage", {"fields": ("prompt_tokens", "completion_tokens", "tokens", "cost")}),
        (
            "Timing",
            {
                "fields": (
                    "created_at",
                    "enqueued_at",
                    "started_at",
                    "finished_at",
                    "duration_display",
                    "claim_expires_at",
                )
            },
        ),
        ("Tracing", {"fields": ("trace", "idempotency_key")}),
    )
    # Every field shown is read-only: jobs change only through questions.services.
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # questions are asked through the page or the API, which enqueue them

    @admin.display(description="trace")
    def trace(self, question: Question) -> str:
        """The request's trace id, linked to Grafana/Tempo when TRACE_URL_TEMPLATE is set."""
        if not question.trace_id:
            return "-"
        template = settings.TRACE_URL_TEMPLATE
        if not template:
            return question.trace_id
        url = template.replace("{trace_id}", question.trace_id)
        return format_html('<a href="{}" rel="noopener">{}</a>', url, question.trace_id)

    @admin.display(description="question", ordering="text")
    def short_question(self, question: Question) -> str:
        text = " ".join(question.text.split())
        return text if len(text) <= 70 else f"{text[:69]}…"

    @admin.display(description="fallback", boolean=True, ordering="fallback_level")
    def fallback(self, question: Question) -> bool:
        """Answered by a fallback model (OPENAI_FALLBACK_MODELS), not the primary."""
        return question.answered_by_fallback

    @admin.display(description="tokens")
    def tokens(self, question: Question) -> int | None:
        return question.total_tokens

    @admin.display(description="duration")
    def duration_display(self, question: Question) -> str:
        duration: timedelta | None = question.duration
        if duration is None:
            return "—"
        return f"{duration.total_seconds():.1f} s"

    @admin.action(description="Retry selected failed jobs", permissions=["change"])
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Question]) -> None:
        retried = skipped = 0
        for question in queryset:
            with transaction.atomic():
                done = question_retry(question=question)
            if done:
                retried += 1
            else:
                skipped += 1
        self._report(
            request,
            done=retried,
            done_message=f"{retried} failed job{'s' if retried != 1 else ''} queued again.",
            skipped=skipped,
            skipped_reason="not failed",
        )

    @admin.action(description="Stop selected jobs", permissions=["change"])
    def stop_jobs(self, request: HttpRequest, queryset: QuerySet[Question]) -> None:
        stopped = skipped = 0
        for question in queryset:
            try:
                question_cancel(question=question)
            except QuestionAlreadyFinished:
                skipped += 1
            else:
                stopped += 1
        self._report(
            request,
            done=stopped,
            done_message=f"{stopped} job{'s' if stopped != 1 else ''} stopped.",
            skipped=skipped,
            skipped_reason="already finished",
        )

    def _report(
        self,
        request: HttpRequest,
        *,
        done: int,
        done_message: str,
        skipped: int,
        skipped_reason: str,
    ) -> None:
        """What a bulk action did, and what it left alone and why."""
        if done:
            self.message_user(request, done_message, messages.SUCCESS)
        if skipped:
            were = "s were" if skipped != 1 else " was"
            self.message_user(
                request,
                f"{skipped} selected job{were} {skipped_reason} and left as is.",
                messages.WARNING,
            )

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Question]) -> HttpResponse:
        questions = queryset.select_related("owner").order_by("-created_at")
        return _csv_response("questions", CSV_COLUMNS, (_csv_row(q) for q in questions))


SPEND_CSV_COLUMNS = (
    "user",
    "email",
    "spend_today_usd",
    "spend_30_days_usd",
    "questions_30_days",
    "daily_budget_usd",
    "max_open_jobs",
)


class UserQuotaInline(admin.StackedInline):
    model = UserQuota
    can_delete = True
    max_num = 1
    extra = 1
    verbose_name = "quota (blank fields: the defaults from settings)"


@admin.register(UserSpend)
class UserSpendAdmin(admin.ModelAdmin):
    """What each user spent on LLM calls, today (UTC) and over 30 days, from the ledger (every
    call, retries and partial answers included); their quota is set on the user's page here.
    Export: the action "Export selected as CSV"."""

    list_display = (
        "username",
        "spend_today",
        "spend_30_days",
        "questions_30_days",
        "daily_budget",
        "max_open_jobs",
    )
    search_fields = ("username", "email")
    list_per_page = 50
    fields = ("username", "email", "spend_today", "spend_30_days", "questions_30_days")
    readonly_fields = fields
    inlines = (UserQuotaInline,)
    actions = ("export_spend_csv",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return user_spend_list()

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # users are made in the Users admin

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="spend today (USD)", ordering="spend_today")
    def spend_today(self, user: Any) -> str:
        return _usd(user.spend_today)

    @admin.display(description="spend, 30 days (USD)", ordering="spend_30_days")
    def spend_30_days(self, user: Any) -> str:
        return _usd(user.spend_30_days)

    @admin.display(description="questions, 30 days", ordering="questions_30_days")
    def questions_30_days(self, user: Any) -> int:
        return int(user.questions_30_days)

    @admin.display(description="daily budget (USD)")
    def daily_budget(self, user: Any) -> str:
        return _usd(_limits(user).daily_budget)

    @admin.display(description="unfinished jobs at once")
    def max_open_jobs(self, user: Any) -> int:
        return _limits(user).max_open_jobs

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_spend_csv(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse:
        rows = (
            (
                user.get_username(),
                user.email,
                user.spend_today or Decimal(0),
                user.spend_30_days or Decimal(0),
                user.questions_30_days,
                (limits := _limits(user)).daily_budget,
                limits.max_open_jobs,
            )
            for user in queryset
        )
        return _csv_response("spend", SPEND_CSV_COLUMNS, rows)


def _limits(user: Any) -> Limits:
    try:
        quota = user.quota  # selected with the user by user_spend_list
    except UserQuota.DoesNotExist:
        quota = None
    return limits_of(quota=quota)


def _usd(amount: Decimal | None) -> str:
    return f"{amount or 0:.6f}"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Staff see who holds which token and revoke it (delete); nobody can read a token: only its
    digest is stored, and not even that is shown. Tokens are made on the account page."""

    list_display = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at")
    list_filter = ("created_at", "expires_at")
    search_fields = ("name", "user__username")
    list_select_related = ("user",)
    fields = ("name", "user", "prefix", "created_at", "last_used_at", "expires_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ApiToken | None = None) -> bool:
        return False


# --- Completion webhooks: endpoints and their deliveries. The signing secret is shown nowhere
# (not even encrypted): the owner sees it once, on the page or in the API, when it is made.
class WebhookDeliveryInline(admin.TabularInline):
    model = WebhookDelivery
    fields = ("event", "status", "attempts", "last_status_code", "next_attempt_at", "created_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    ordering = ("-created_at",)


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "owner", "events", "is_active", "failing_since", "disabled_reason")
    list_filter = ("is_active", "created_at")
    search_fields = ("url", "owner__username")
    list_select_related = ("owner",)
    fields = (
        "url",
        "owner",
        "events",
        "is_active",
        "failing_since",
        "disabled_at",
        "disabled_reason",
        "created_at",
    )
    readonly_fields = fields
    inlines = (WebhookDeliveryInline,)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookEndpoint | None = None
    ) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "webhook_id",
        "event",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "short_error",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("status", "event", "created_at")
    search_fields = ("id", "endpoint__url", "endpoint__owner__username")
    list_select_related = ("endpoint",)
    fields = (
        "webhook_id",
        "endpoint",
        "question",
        "event",
        "status",
        "attempts",
        "last_status_code",
        "last_error",
        "next_attempt_at",
        "retry_until",
        "created_at",
        "finished_at",
        "payload",
    )
    readonly_fields = fields
    actions = ("send_again",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: WebhookDelivery | None = None
    ) -> bool:
        return False

    @admin.display(description="webhook-id")
    def webhook_id(self, delivery: WebhookDelivery) -> str:
        return delivery.webhook_id

    @admin.display(description="last error")
    def short_error(self, delivery: WebhookDelivery) -> str:
        return delivery.last_error[:80]

    @admin.action(description="Send selected deliveries again", permissions=["view"])
    def send_again(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        count = 0
        for delivery in queryset:
            with transaction.atomic():
                webhook_delivery_resend(delivery=delivery)
            count += 1
        self.message_user(
            request,
            f"{count} deliver{'ies' if count != 1 else 'y'} sent again, under the same webhook-id.",
            messages.SUCCESS,
        )
