"""Reads: what a user may see, with the Redis cache in front of PostgreSQL for finished jobs."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.db.models import (
    Count,
    DecimalField,
    F,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from questions.job_cache import job_cache_get, job_cache_set
from questions.limits import utc_day_start
from questions.models import LLMCall, Question

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User


def _visible_to(question: Question, user: User | AnonymousUser) -> bool:
    return bool(user.is_staff) or question.owner_id == user.pk


def question_get(*, question_id: uuid.UUID, user: User | AnonymousUser) -> Question | None:
    """One job if it exists and `user` may see it (owner or staff), else None.

    Finished jobs come from Redis when cached; anything else from PostgreSQL.
    """
    cached = job_cache_get(question_id)
    if cached is not None:
        return cached if _visible_to(cached, user) else None
    question = Question.objects.select_related("owner").filter(pk=question_id).first()
    if question is None or not _visible_to(question, user):
        return None
    if question.is_finished:
        job_cache_set(question)
    return question


def question_list(
    *,
    user: User | AnonymousUser,
    status: str | None = None,
    search: str | None = None,
    owner_id: int | None = None,
) -> QuerySet[Question]:
    """The user's jobs (staff: everyone's, optionally one owner's), newest first."""
    questions = Question.objects.select_related("owner").order_by("-created_at")
    if not user.is_staff:
        questions = questions.filter(owner_id=user.pk)
    elif owner_id is not None:
        questions = questions.filter(owner_id=owner_id)
    if status:
        questions = questions.filter(status=status)
    if search:
        questions = questions.filter(Q(text__icontains=search) | Q(answer__icontains=search))
    return questions


def question_status_counts() -> dict[str, Any]:
    """Jobs by status, and the age in seconds of the oldest job still waiting (or None)."""
    counts = dict.fromkeys(Question.Status.values, 0)
    for row in Question.objects.values("status").annotate(n=Count("pk")).order_by():
        counts[row["status"]] = row["n"]
    oldest = Question.objects.filter(status=Question.Status.QUEUED).aggregate(
        oldest=Min("created_at")
    )["oldest"]
    return {
        **counts,
        "oldest_waiting_seconds": (
            None if oldest is None else (timezone.now() - oldest).total_seconds()
        ),
    }


def question_oldest_queued_age() -> float:
    """Seconds since the oldest job still queued was asked (0.0 when none): how long someone
    has been waiting, whatever SQS holds (one index scan of question_status_created)."""
    oldest = Question.objects.filter(status=Question.Status.QUEUED).aggregate(
        oldest=Min("created_at")
    )["oldest"]
    return 0.0 if oldest is None else max((timezone.now() - oldest).total_seconds(), 0.0)


def user_spend_list(*, now: datetime | None = None) -> QuerySet[Any]:
    """Users with their LLM spend in USD, from the ledger (every call, retries and partial
    answers included): `spend_today` (calls made this UTC day), `spend_30_days` and
    `questions_30_days` (the last 30 days), most spent first."""
    now = now or timezone.now()
    day_start = utc_day_start(now)
    month_start = now - timedelta(days=30)
    # Subqueries, not joins: two joined sums would multiply each other's rows.
    return (
        get_user_model()
        .objects.annotate(
            spend_today=_ledger_sum(since=day_start),
            spend_30_days=_ledger_sum(since=month_start),
            questions_30_days=Coalesce(
                Subquery(
                    Question.objects.filter(owner=OuterRef("pk"), created_at__gte=month_start)
                    .order_by()
                    .values("owner")
                    .annotate(n=Count("pk"))
                    .values("n")
                ),
                Value(0),
            ),
        )
        .select_related("quota")
        .order_by(F("spend_30_days").desc(nulls_last=True), "username")
    )


def _ledger_sum(*, since: datetime) -> Subquery:
    return Subquery(
        LLMCall.objects.filter(user=OuterRef("pk"), created_at__gte=since)
        .order_by()
        .values("user")
        .annotate(total=Sum("cost"))
        .values("total"),
        output_field=DecimalField(max_digits=12, decimal_places=6),
    )


def questions_cancelled_among(*, question_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    """Which of these jobs were cancelled (Stop) — one query for all of a worker's jobs."""
    return set(
        Question.objects.filter(pk__in=question_ids, status=Question.Status.CANCELLED).values_list(
            "pk", flat=True
        )
    )


def question_statuses(*, question_ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    """The status of each of these jobs that still exists, in one query (the events process's
    shared check of every watched job)."""
    return dict(Question.objects.filter(pk__in=question_ids).values_list("pk", "status"))
