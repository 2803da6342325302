"""Job history for staff. Rows are written only by the service layer: the admin reads, retries
failed jobs (questions.services.question_retry) and exports; it never edits a job by hand."""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from questions.models import Question
from questions.services import QuestionAlreadyFinished, question_cancel, question_retry

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
)
# A cell starting with one of these is a formula to a spreadsheet: the LLM or the asker could
# smuggle one in, so such cells are prefixed with a quote (OWASP "CSV injection").
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: object) -> str:
    text = "" if value is None else str(value)
    return f"'{text}" if text.startswith(_FORMULA_PREFIXES) else text


def _csv_row(question: Question) -> list[str]:
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
    )
    return [_csv_cell(value) for value in values]


@admin.register(Question)
class QuestionAdmin(admin.ModelAdmin):
    list_display = (
        "short_question",
        "owner",
        "status",
        "model",
        "attempts",
        "tokens",
        "created_at",
        "duration_display",
    )
    list_filter = (
        "status",
        "model",
        "created_at",
        ("owner", admin.RelatedOnlyFieldListFilter),
    )
    search_fields = ("text", "answer", "owner__username", "owner__email")
    date_hierarchy = "created_at"
    list_select_related = ("owner",)
    list_per_page = 50
    ordering = ("-created_at",)
    actions = ("retry_failed", "stop_jobs", "export_csv")
    fieldsets = (
        (None, {"fields": ("id", "owner", "text", "status")}),
        ("Outcome", {"fields": ("answer", "error", "model", "attempts")}),
        ("Usage", {"fields": ("prompt_tokens", "completion_tokens", "tokens")}),
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
    readonly_fields = tuple(name for _, options in fieldsets for name in options["fields"])

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
        if retried:
            self.message_user(
                request,
                f"{retried} failed job{'s' if retried != 1 else ''} queued again.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected job{'s were' if skipped != 1 else ' was'} not failed "
                "and left as is.",
                messages.WARNING,
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
        if stopped:
            self.message_user(
                request,
                f"{stopped} job{'s' if stopped != 1 else ''} stopped.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(
                request,
                f"{skipped} selected job{'s were' if skipped != 1 else ' was'} already finished "
                "and left as is.",
                messages.WARNING,
            )

    @admin.action(description="Export selected as CSV", permissions=["view"])
    def export_csv(self, request: HttpRequest, queryset: QuerySet[Question]) -> HttpResponse:
        stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="questions-{stamp}.csv"'
        writer = csv.writer(response)
        writer.writerow(CSV_COLUMNS)
        for question in queryset.select_related("owner").order_by("-created_at"):
            writer.writerow(_csv_row(question))
        return response
