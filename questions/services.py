"""Writes: every change of a question's state goes through these functions."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any, TypedDict, cast

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Coalesce, Now
from django.utils import timezone
from opentelemetry import trace

from questions import metrics
from questions.attribution import queue_group_id
from questions.cache import job_cache_delete
from questions.job_cache import job_cache_set
from questions.jobqueue import ANSWER_QUESTION, task_get
from questions.ledger import llm_call_record, llm_call_recorded, llm_call_row
from questions.limits import ask_limits_check, lock_owner, rate_slot_take
from questions.live.streams import stream_append_sync
from questions.llm.client import Completion
from questions.llm.text import storable_text
from questions.models import LLMCall, Question
from questions.webhooks.models import WebhookEndpoint
from questions.webhooks.services import webhook_events_record, webhook_events_record_many

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_stubs_ext import WithAnnotations

    from questions.sqs.backend import SQSTaskBackend

    class ClaimTimes(TypedDict):
        db_now: datetime

    # A claim's row carries the database's clock at the claim (`.annotate(db_now=...)`).
    ClaimedQuestion = WithAnnotations[Question, ClaimTimes]

logger = logging.getLogger(__name__)

Status = Question.Status


# What str.strip() removes (the characters of str.isspace()), spelled out: regex engines differ
# on `\s`, so the API schema's pattern names them one by one (tests/unit/test_question_text.py).
WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
_SPACE_CLASS = "".join(f"\\u{ord(char):04x}" for char in WHITESPACE)
# validate_question_text as a JSON Schema (ECMA-262) pattern, for the API schema: something
# besides whitespace, and no NUL anywhere (PostgreSQL cannot store it). The length is checked on
# the text as sent, so that the schema's maxLength says it too.
QUESTION_TEXT_PATTERN = f"^[{_SPACE_CLASS}]*[^{_SPACE_CLASS}\\u0000][^\\u0000]*$"


def validate_question_text(text: object) -> str:
    """The question as it will be stored, or a ValidationError on the field "question" saying
    what is wrong. The one check of a question's text: the API and the pages only parse."""
    if not isinstance(text, str):
        raise _invalid_question("The question must be a string.", code="invalid_type")
    limit = settings.QUESTIONS_MAX_LENGTH
    if len(text) > limit:
        raise _invalid_question(
            f"The question is {len(text)} characters long; the limit is {limit}.",
            code="max_length",
        )
    text = text.strip()
    if not text:
        raise _invalid_question("The question may not be blank.", code="blank")
    if "\x00" in text:
        raise _invalid_question("The question may not contain NUL characters.", code="null")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid_question(
            "The question is not valid Unicode text.", code="encoding"
        ) from None
    return text


def _invalid_question(message: str, *, code: str) -> ValidationError:
    return ValidationError({"question": ValidationError(message, code=code)})


class IdempotencyKeyReused(Exception):
    """The idempotency key already stands for a different question (a client bug, or a key
    reused on purpose): replaying the old job would answer a question that was not asked."""


def _replay(existing: Question, text: str) -> tuple[Question, bool]:
    if existing.text != text:
        raise IdempotencyKeyReused(
            "This Idempotency-Key was already used for a different question. "
            "Use a new key for a new question."
        )
    return existing, False


def question_create(
    *, owner: User, text: str, idempotency_key: str | None = None
) -> tuple[Question, bool]:
    """Record a question and enqueue its job once the transaction commits.

    Returns (question, created). With an idempotency key already used by this owner for the
    same text, the existing question comes back and nothing new is recorded or enqueued; for
    another text, IdempotencyKeyReused. A question that would break a limit on asking
    (questions.limits) raises AskRefused; nothing is recorded.
    """
    text = validate_question_text(text)
    existing = _idempotent_replay(owner=owner, idempotency_key=idempotency_key)
    if existing is not None:
        return _replay(existing, text)
    span_context = trace.get_current_span().get_span_context()
    slot = rate_slot_take(owner_id=owner.pk)
    try:
        with transaction.atomic():
            # One asker of this user at a time from here to commit: the counts below and the
            # insert cannot interleave with another request's.
            lock_owner(owner_id=owner.pk)
            # A concurrent retry with the same key may have committed while this one waited
            # for the lock: it is a replay, not a new question for the limits to count.
            existing = _idempotent_replay(owner=owner, idempotency_key=idempotency_key)
            if existing is not None:
                slot.give_back()
                return _replay(existing, text)
            ask_limits_check(owner=owner, text=text, slot=slot)
            question = Question.objects.create(
                owner=owner,
                text=text,
                # Set before the send, cleared if it fails (question_enqueue): the usual path
                # then costs no UPDATE. A process that dies between commit and send leaves it
                # set; requeue_jobs resends such a job once the queue is empty and it is
                # QUESTIONS_REQUEUE_AFTER old, or past the queue's retention (questions_requeue).
                enqueued_at=timezone.now(),
                idempotency_key=idempotency_key,
                trace_id=format(span_context.trace_id, "032x") if span_context.is_valid else "",
            )
            transaction.on_commit(
                partial(question_enqueue, question_id=question.pk, owner_id=owner.pk)
            )
    except IntegrityError:
        slot.give_back()
        if idempotency_key is None:
            raise
        # A concurrent request with the same key won the race: return its question.
        return _replay(Question.objects.get(owner=owner, idempotency_key=idempotency_key), text)
    except BaseException:
        slot.give_back()
        raise
    metrics.QUESTIONS_CREATED.inc()
    logger.info("question created", extra={"job_id": str(question.pk)})
    return question, True


def _idempotent_replay(*, owner: User, idempotency_key: str | None) -> Question | None:
    if idempotency_key is None:
        return None
    return Question.objects.filter(owner=owner, idempotency_key=idempotency_key).first()


def question_enqueue(*, question_id: uuid.UUID, owner_id: int | None = None) -> bool:
    """Send the job to SQS, in its owner's message group (fair queues; `owner_id` saves a
    query). On failure the job stays queued, marked unsent (no `enqueued_at`) for
    requeue_jobs; never raises. Callers set `enqueued_at` when they make the job queued."""
    from questions.sqs.backend import message_group

    try:
        if owner_id is None:
            owner_id = Question.objects.values_list("owner_id", flat=True).get(pk=question_id)
        with message_group(queue_group_id(user_id=owner_id)):
            task_get(ANSWER_QUESTION).enqueue(job_id=str(question_id))
    except Exception as exc:
        metrics.ENQUEUE_FAILURES.inc()
        logger.warning(
            "could not enqueue job; it stays queued for requeue_jobs",
            extra={"job_id": str(question_id), "error": type(exc).__name__},
        )
        try:
            Question.objects.filter(pk=question_id, status=Status.QUEUED).update(enqueued_at=None)
        except DatabaseError:
            logger.warning("could not mark the job unsent", extra={"job_id": str(question_id)})
        return False
    return True


def questions_enqueue(*, question_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """`question_enqueue` for many jobs, 10 per SendMessageBatch; returns the ids not sent
    (left queued and marked unsent, for the next sweep)."""
    if not question_ids:
        return []
    answer_question = task_get(ANSWER_QUESTION)
    # TASKS names SQSTaskBackend; Django types get_backend() as the base class.
    backend = cast("SQSTaskBackend", answer_question.get_backend())
    owners = dict(
        Question.objects.filter(pk__in=question_ids).values_list("pk", "owner_id").order_by()
    )
    sent = backend.enqueue_many(
        answer_question,
        [{"job_id": str(pk)} for pk in question_ids],
        group_ids=[
            queue_group_id(user_id=owners[pk]) if pk in owners else None for pk in question_ids
        ],
    )
    unsent = [pk for pk, ok in zip(question_ids, sent, strict=True) if not ok]
    if unsent:
        metrics.ENQUEUE_FAILURES.inc(len(unsent))
        logger.warning("could not enqueue %d jobs; they stay queued", len(unsent))
        try:
            Question.objects.filter(pk__in=unsent, status=Status.QUEUED).update(enqueued_at=None)
        except DatabaseError:
            logger.warning("could not mark %d jobs unsent", len(unsent))
    return unsent


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of trying to claim a job: `question` if claimed, else its state (or None).

    `retry_in`: for a job running under another worker's live claim, the seconds until that
    claim lapses, on the database's clock.
    """

    question: ClaimedQuestion | None
    current: ClaimedQuestion | None
    retry_in: float = 0.0


def question_claim(*, question_id: uuid.UUID, lease_seconds: float) -> Claim:
    """Atomically take a queued job (or a running one whose claim expired) for this worker.

    Leases are on the database's clock (`Now()`), never this process's: a worker whose clock is
    off can neither take a job still leased to another nor keep one past its lease.
    """
    claimed = (
        Question.objects.filter(pk=question_id)
        .filter(Q(status=Status.QUEUED) | Q(status=Status.RUNNING, claim_expires_at__lt=Now()))
        .update(
            status=Status.RUNNING,
            attempts=F("attempts") + 1,
            started_at=Now(),
            claim_expires_at=Now() + timedelta(seconds=lease_seconds),
        )
    )
    question = Question.objects.filter(pk=question_id).annotate(db_now=Now()).first()
    if not claimed or question is None:
        retry_in = 0.0
        if question is not None and question.claim_expires_at is not None:
            retry_in = max((question.claim_expires_at - question.db_now).total_seconds(), 0.0)
        return Claim(question=None, current=question, retry_in=retry_in)
    if question.enqueued_at is not None:
        wait = (question.db_now - question.enqueued_at).total_seconds()
        metrics.QUEUE_WAIT.observe(max(wait, 0.0))
    return Claim(question=question, current=None)


def questions_claim(
    *, question_ids: Sequence[uuid.UUID], lease_seconds: float
) -> dict[uuid.UUID, Claim]:
    """`question_claim` for a batch (a receive batch's jobs). On PostgreSQL one statement,
    `UPDATE … RETURNING` (atomic on its own, so no transaction around it): the rows it returns
    are the ones it claimed, with the database's clock; only ids it did not claim (a duplicate
    delivery, a job under another worker's live lease, a deleted job: rare) are looked up by a
    second query. On SQLite one job at a time."""
    ids = list(dict.fromkeys(question_ids))
    if connection.vendor != "postgresql":
        return {pk: question_claim(question_id=pk, lease_seconds=lease_seconds) for pk in ids}
    claimed = Question.objects.raw(
        _CLAIM_SQL.format(questions=Question._meta.db_table),
        [Status.RUNNING, lease_seconds, ids, Status.QUEUED, Status.RUNNING],
    )
    claims: dict[uuid.UUID, Claim] = {}
    for question in cast("Iterator[ClaimedQuestion]", iter(claimed)):
        if question.enqueued_at is not None:
            wait = (question.db_now - question.enqueued_at).total_seconds()
            metrics.QUEUE_WAIT.observe(max(wait, 0.0))
        claims[question.pk] = Claim(question=question, current=None)
    others = [pk for pk in ids if pk not in claims]
    if others:
        rows = {q.pk: q for q in Question.objects.filter(pk__in=others).annotate(db_now=Now())}
        for pk in others:
            current = rows.get(pk)
            retry_in = 0.0
            if current is not None and current.claim_expires_at is not None:
                retry_in = max((current.claim_expires_at - current.db_now).total_seconds(), 0.0)
            claims[pk] = Claim(question=None, current=current, retry_in=retry_in)
    return {pk: claims[pk] for pk in ids}


# Takes the queued jobs among the ids, and the running ones whose lease lapsed, on the
# database's clock; returns each row it took with that clock (`db_now`).
_CLAIM_SQL = """
UPDATE {questions}
SET status = %s, attempts = attempts + 1, started_at = now(),
    claim_expires_at = now() + make_interval(secs => %s)
WHERE id = ANY(%s) AND (status = %s OR (status = %s AND claim_expires_at < now()))
RETURNING *, now() AS db_now
"""


def questions_extend_leases(*, question_ids: list[uuid.UUID], lease_seconds: float) -> int:
    """The job side of the heartbeat: keep this worker's running jobs leased to it."""
    return Question.objects.filter(pk__in=question_ids, status=Status.RUNNING).update(
        claim_expires_at=Now() + timedelta(seconds=lease_seconds)
    )


def question_claim_renew(*, question: Question, lease_seconds: float) -> bool:
    """Right before paying for a call: True if this worker still holds the claim (fenced on the
    running status and this attempt), its lease then renewed; False if the job was cancelled,
    re-queued or claimed by another worker meanwhile (then it must not be paid for again)."""
    return bool(
        Question.objects.filter(
            pk=question.pk, status=Status.RUNNING, attempts=question.attempts
        ).update(claim_expires_at=Now() + timedelta(seconds=lease_seconds))
    )


def _finish(question: Question, status: str, **fields: object) -> bool:
    """Store a final state if this worker still holds the claim (fenced by attempts)."""
    now = timezone.now()
    updated = Question.objects.filter(
        pk=question.pk, status=Status.RUNNING, attempts=question.attempts
    ).update(status=status, finished_at=now, claim_expires_at=None, **fields)
    if not updated:
        logger.warning(
            "lost the claim on a job; result discarded", extra={"job_id": str(question.pk)}
        )
        return False
    # The row now holds exactly these values: mirror them instead of reading it back.
    for name, value in {
        "status": status,
        "finished_at": now,
        "claim_expires_at": None,
        **fields,
    }.items():
        setattr(question, name, value)
    metrics.JOBS_FINISHED.labels(outcome=status).inc()
    if question.started_at is not None:
        metrics.JOB_DURATION.labels(outcome=status).observe(
            (now - question.started_at).total_seconds()
        )
    job_cache_set(question)
    webhook_events_record(question=question)
    return True


def clean_completion(completion: Completion) -> Completion:
    """What PostgreSQL can store: no NUL characters, no lone UTF-16 surrogates (a provider's JSON
    may escape one, "\\ud800"; they cannot be encoded as UTF-8), a model name that fits its
    column."""
    max_model = Question._meta.get_field("model").max_length or 200
    return Completion(
        text=storable_text(completion.text),
        model=storable_text(completion.model)[:max_model],
        prompt_tokens=max(completion.prompt_tokens, 0),
        completion_tokens=max(completion.completion_tokens, 0),
    )


@dataclass(frozen=True, slots=True)
class PaidAnswer:
    """An answer the provider was paid for, to store: the job as its worker claimed it (its
    `attempts` fences the store), the completion, and the id of the call's ledger row. Equal
    and hashed by `call_id` alone: one store of a call at a time."""

    question: Question = field(compare=False)
    completion: Completion = field(compare=False)
    call_id: uuid.UUID


def question_succeed(*, question: Question, completion: Completion, call_id: uuid.UUID) -> bool:
    """`questions_succeed` for one answer, and the job cache written once it commits (the
    worker writes the cache itself, in the Redis pipeline that ends the job's stream)."""
    stored = questions_succeed(
        items=[PaidAnswer(question=question, completion=completion, call_id=call_id)]
    )[0]
    if stored:
        transaction.on_commit(partial(job_cache_set, question))
    return stored


def questions_succeed(*, items: Sequence[PaidAnswer]) -> list[bool]:
    """Store answers, each if its worker still holds the claim (fenced on the running status and
    its attempt), and every call in the ledger (questions.ledger) either way, in one transaction:
    a call was paid, whoever stores its answer. Returns, per item, whether its answer is stored.

    On PostgreSQL one statement inserts the ledger rows (a row already written, an answer
    stored again from the stash, is not costed twice) and stores the answers with the new rows'
    cost, and tells which owners have an active webhook endpoint; a second UPDATE adds the cost
    of the rare answers whose claim was lost; the webhook events of those owners' jobs are
    recorded (questions.webhooks). On SQLite (`make run`) each answer is written in turn
    with ORM statements, in the same one transaction. Stored answers are mirrored on their
    Question (as the row holds them). The job cache is not written: the caller writes it once
    this commits (a succeeded job is final, so nothing can make the cached row stale)."""
    if len({item.call_id for item in items}) != len(items):
        raise ValueError("each call's answer may be stored once per batch")
    completions = [clean_completion(item.completion) for item in items]
    now = timezone.now()
    with transaction.atomic():
        if connection.vendor == "postgresql":
            stored, notify = _succeed_postgresql(items, completions, now)
        else:
            stored = notify = _succeed_each(items, completions, now)
        for item, completion in zip(items, completions, strict=True):
            if item.call_id in stored:
                # The row now holds exactly these values: mirror them instead of reading it back.
                for name, value in _succeeded_fields(completion, now).items():
                    setattr(item.question, name, value)
        webhook_events_record_many(
            questions=[item.question for item in items if item.call_id in notify]
        )
    for item in items:
        question = item.question
        if item.call_id not in stored:
            logger.warning(
                "lost the claim on a job; result discarded", extra={"job_id": str(question.pk)}
            )
            continue
        metrics.JOBS_FINISHED.labels(outcome=Status.SUCCEEDED).inc()
        if question.started_at is not None:
            metrics.JOB_DURATION.labels(outcome=Status.SUCCEEDED).observe(
                (now - question.started_at).total_seconds()
            )
        if question.fallback_level:
            metrics.ANSWERS_BY_FALLBACK.inc()
    return [item.call_id in stored for item in items]


def _succeeded_fields(completion: Completion, now: datetime) -> dict[str, object]:
    return {
        "status": Status.SUCCEEDED,
        "finished_at": now,
        "claim_expires_at": None,
        "answer": completion.text,
        "model": completion.model,
        "error": "",
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
    }


def _succeed_each(
    items: Sequence[PaidAnswer], completions: Sequence[Completion], now: datetime
) -> set[uuid.UUID]:
    """`questions_succeed`'s writes one answer at a time (SQLite): the call ids whose answer
    is stored."""
    stored: set[uuid.UUID] = set()
    for item, completion in zip(items, completions, strict=True):
        question = item.question
        llm_call_record(
            call_id=item.call_id,
            question=question,
            completion=completion,
            outcome=LLMCall.Outcome.SUCCEEDED,
        )
        if Question.objects.filter(
            pk=question.pk, status=Status.RUNNING, attempts=question.attempts
        ).update(**_succeeded_fields(completion, now)):
            stored.add(item.call_id)
    return stored


def _succeed_postgresql(
    items: Sequence[PaidAnswer], completions: Sequence[Completion], now: datetime
) -> tuple[set[uuid.UUID], set[uuid.UUID]]:
    """`questions_succeed`'s writes in one statement (and one more for the cost of answers whose
    claim was lost): the call ids whose answer is stored, and those of them whose owner has an
    active webhook endpoint."""
    rows = [
        llm_call_row(
            call_id=item.call_id,
            question=item.question,
            completion=completion,
            outcome=LLMCall.Outcome.SUCCEEDED,
        )
        for item, completion in zip(items, completions, strict=True)
    ]
    columns: list[list[Any]] = [[] for _ in range(11)]
    for item, completion, row in zip(items, completions, rows, strict=True):
        for column, value in zip(
            columns,
            (
                item.call_id,
                item.question.pk,
                item.question.attempts,
                completion.text,
                completion.model,
                completion.prompt_tokens,
                completion.completion_tokens,
                row.user_id,
                row.fallback_level,
                row.model,
                row.cost,
            ),
            strict=True,
        ):
            column.append(value)
    sql = _SUCCEED_SQL.format(
        ledger=LLMCall._meta.db_table,
        questions=Question._meta.db_table,
        endpoints=WebhookEndpoint._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [*columns, LLMCall.Outcome.SUCCEEDED, now, Status.SUCCEEDED, now, Status.RUNNING],
        )
        results = cursor.fetchall()
    recorded = {call_id for call_id, is_new, _, _ in results if is_new}
    stored = {call_id for call_id, _, is_stored, _ in results if is_stored}
    notify = {call_id for call_id, _, _, hooked in results if hooked}
    # A lost claim's call was paid all the same: its cost goes on the job (rare; the same job
    # may come twice, from two attempts).
    lost_cost: dict[uuid.UUID, Decimal] = defaultdict(Decimal)
    for item, row in zip(items, rows, strict=True):
        if item.call_id in recorded and item.call_id not in stored:
            lost_cost[item.question.pk] += row.cost
    for question_id, cost in lost_cost.items():
        Question.objects.filter(pk=question_id).update(
            cost=Coalesce(F("cost"), Value(Decimal(0))) + cost
        )
    for item, row in zip(items, rows, strict=True):
        if item.call_id in recorded:
            llm_call_recorded(question=item.question, row=row)
    return stored, notify


# The answers as columns (one array each, so the statement's text is the same for every batch
# size: psycopg parses it once); the ledger rows inserted (a row already there is left alone:
# its call was costed), then the answers stored where the claim holds, with the cost of the rows
# just inserted. Returns per call whether its row is new, whether its answer is stored, and
# whether its owner has an active webhook endpoint (so the usual batch needs no other query).
_SUCCEED_SQL = """
WITH v (call_id, question_id, attempts, answer, model, prompt_tokens, completion_tokens,
        user_id, fallback_level, call_model, cost) AS (
    SELECT * FROM unnest(%s::uuid[], %s::uuid[], %s::integer[], %s::text[], %s::varchar[],
        %s::integer[], %s::integer[], %s::bigint[], %s::smallint[], %s::varchar[], %s::numeric[])
),
recorded AS (
    INSERT INTO {ledger} AS l (id, question_id, user_id, model, fallback_level, attempt,
        outcome, prompt_tokens, completion_tokens, cost, created_at)
    SELECT v.call_id, v.question_id, v.user_id, v.call_model, v.fallback_level, v.attempts,
        %s, v.prompt_tokens, v.completion_tokens, v.cost, %s
    FROM v
    ON CONFLICT (id) DO NOTHING
    RETURNING l.id
),
stored AS (
    UPDATE {questions} AS q
    SET status = %s, finished_at = %s, claim_expires_at = NULL, error = '',
        answer = v.answer, model = v.model, prompt_tokens = v.prompt_tokens,
        completion_tokens = v.completion_tokens,
        cost = CASE WHEN recorded.id IS NULL THEN q.cost ELSE COALESCE(q.cost, 0) + v.cost END
    FROM v LEFT JOIN recorded ON recorded.id = v.call_id
    WHERE q.id = v.question_id AND q.status = %s AND q.attempts = v.attempts
    RETURNING v.call_id, EXISTS (
        SELECT 1 FROM {endpoints} AS e WHERE e.owner_id = q.owner_id AND e.is_active
    ) AS hooked
)
SELECT v.call_id, recorded.id IS NOT NULL, stored.call_id IS NOT NULL,
    COALESCE(stored.hooked, FALSE)
FROM v
LEFT JOIN recorded ON recorded.id = v.call_id
LEFT JOIN stored ON stored.call_id = v.call_id
"""


def question_fail(*, question: Question, error: str, model: str = "") -> bool:
    return _finish(question, Status.FAILED, error=error, model=model or question.model)


def question_release_for_retry(
    *, question: Question, error: str, retry_in: float | None = None, count_attempt: bool = True
) -> bool:
    """running → queued: this attempt failed in a way worth trying again.

    `retry_in` is when its message becomes visible again; it is stored as `enqueued_at` (database
    clock) so that requeue_jobs does not take a job waiting out its backoff (or Retry-After) for a
    stale one and send it early. Without `count_attempt` (the provider's rate limit, not the
    job's fault) the attempt is given back.
    """
    fields: dict[str, object] = {"status": Status.QUEUED, "error": error, "claim_expires_at": None}
    if retry_in is not None:
        fields["enqueued_at"] = Now() + timedelta(seconds=retry_in)
    if not count_attempt:
        fields["attempts"] = F("attempts") - 1
    return bool(
        Question.objects.filter(
            pk=question.pk, status=Status.RUNNING, attempts=question.attempts
        ).update(**fields)
    )


def question_store_cancelled(
    *, question: Question, completion: Completion, call_id: uuid.UUID
) -> bool:
    """Keep what a stopped job was given before its call was cut off (fenced on the cancelled
    status and this attempt, so a job cancelled and then retried is not overwritten), and the
    call in the ledger, in one transaction."""
    completion = clean_completion(completion)
    fields: dict[str, object] = {
        "answer": completion.text,
        "model": completion.model,
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": completion.completion_tokens,
        "claim_expires_at": None,
    }
    with transaction.atomic():
        llm_call_record(
            call_id=call_id,
            question=question,
            completion=completion,
            outcome=LLMCall.Outcome.CANCELLED,
        )
        updated = Question.objects.filter(
            pk=question.pk, status=Status.CANCELLED, attempts=question.attempts
        ).update(**fields)
        if not updated:
            return False
        question.refresh_from_db()
    metrics.JOBS_FINISHED.labels(outcome=Status.CANCELLED).inc()
    job_cache_set(question)
    return True


def question_close_cancelled(*, question: Question) -> bool:
    """A job stopped before its LLM call was made (Stop while it waited for the provider's
    rate limit): nothing to keep, no cost; counted and cached as the worker of a stopped job
    does (fenced on the cancelled status and this attempt)."""
    updated = Question.objects.filter(
        pk=question.pk, status=Status.CANCELLED, attempts=question.attempts
    ).update(claim_expires_at=None)
    if not updated:
        return False
    question.refresh_from_db()
    metrics.JOBS_FINISHED.labels(outcome=Status.CANCELLED).inc()
    job_cache_set(question)
    return True


def question_fall_back(
    *, question: Question, error: str, reason: str, count_attempt: bool = True
) -> bool:
    """running → queued on the next model of the chain (OPENAI_FALLBACK_MODELS): the current one
    failed after its retries, refused the question for its length, or kept it rate limited too
    long. The next model gets its own attempts: those spent so far are set aside (without
    `count_attempt`, a rate-limited attempt, this one is given back first)."""
    spent = F("attempts") if count_attempt else F("attempts") - 1
    moved = Question.objects.filter(
        pk=question.pk, status=Status.RUNNING, attempts=question.attempts
    ).update(
        status=Status.QUEUED,
        error=error,
        claim_expires_at=None,
        attempts=spent,
        fallback_level=F("fallback_level") + 1,
        fallback_after_attempts=spent,
        fallback_at=Now(),
        enqueued_at=Now(),
    )
    if moved:
        metrics.LLM_FALLBACKS.labels(reason=reason).inc()
        logger.warning(
            "moving the job to the next model",
            extra={"job_id": str(question.pk), "reason": reason, "level": question.fallback_level},
        )
    return bool(moved)


class QuestionAlreadyFinished(Exception):
    """Stop was asked of a job that has already reached a final state."""

    def __init__(self, question: Question) -> None:
        super().__init__(f"The job is already {question.status}.")
        self.question = question


def question_cancel(*, question: Question) -> Question:
    """Stop: a queued or running job becomes cancelled at once; returns the cancelled row.

    A queued job is never sent to the LLM (question_claim takes only queued jobs). A running
    job's worker sees the status within a second, closes the provider stream, stores the
    partial answer and its tokens on the cancelled row and writes the stream's `end`. For a
    queued job no worker will, so the `end` is written here. Raises QuestionAlreadyFinished
    for a job that is already finished.
    """
    # Two conditional UPDATEs rather than one, to know what the job was; a retry moving it
    # running -> queued between them is caught by the next round.
    for _ in range(3):
        for previous in (Status.QUEUED, Status.RUNNING):
            now = timezone.now()
            updated = Question.objects.filter(pk=question.pk, status=previous).update(
                status=Status.CANCELLED, finished_at=now, claim_expires_at=None
            )
            if updated:
                return _cancelled(question, previous=previous, now=now)
        current = Question.objects.filter(pk=question.pk).first()
        if current is None or current.is_finished:
            raise QuestionAlreadyFinished(current or question)
    raise QuestionAlreadyFinished(question)  # pragma: no cover - a job retried in a tight loop


def _cancelled(question: Question, *, previous: str, now: datetime) -> Question:
    question.status = Status.CANCELLED
    question.finished_at = now
    question.claim_expires_at = None
    webhook_events_record(question=question)
    metrics.JOBS_CANCELLED.labels(previous_status=previous).inc()
    logger.info("job cancelled", extra={"job_id": str(question.pk), "previous_status": previous})
    if previous == Status.QUEUED:
        # Final now: count and cache it, and tell the watchers (no worker will; the worker of
        # a running job counts it when it has stored the partial answer).
        metrics.JOBS_FINISHED.labels(outcome=Status.CANCELLED).inc()
        transaction.on_commit(partial(job_cache_set, question))
        transaction.on_commit(partial(_stream_end_best_effort, question.pk, Status.CANCELLED))
    else:
        # The worker is about to store the partial answer on this row; it caches it then.
        transaction.on_commit(partial(job_cache_delete, question.pk))
    return question


def _stream_end_best_effort(question_id: uuid.UUID, status: str) -> None:
    try:
        stream_append_sync(question_id, [("end", status)])
    except Exception as exc:
        # Watchers then learn it from the row (they check it on every keepalive).
        logger.warning(
            "could not write the end of the job's stream",
            extra={"job_id": str(question_id), "error": type(exc).__name__},
        )


def question_retry(*, question: Question) -> bool:
    """A failed job back to queued for a fresh round of attempts, and re-enqueued."""
    updated = Question.objects.filter(pk=question.pk, status=Status.FAILED).update(
        status=Status.QUEUED,
        error="",
        answer="",
        attempts=0,
        started_at=None,
        finished_at=None,
        claim_expires_at=None,
        enqueued_at=timezone.now(),
        fallback_level=0,
        fallback_after_attempts=0,
        fallback_at=None,
    )
    if not updated:
        return False
    job_cache_delete(question.pk)
    transaction.on_commit(
        partial(question_enqueue, question_id=question.pk, owner_id=question.owner_id)
    )
    return True


# One requeue sweep at a time across every worker process and requeue_jobs (the key of a
# transaction-level advisory lock; any constant no other code uses).
REQUEUE_LOCK_KEY = 0x7175_6575_6500
# A job is sent right after its commit; one still unsent after this was not accepted by SQS.
UNSENT_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class RequeueReport:
    unsent: int = 0
    stale: int = 0
    expired_claims: int = 0
    failed: int = 0
    not_sent: int = 0
    skipped: bool = False  # another sweep held the lock; this one did nothing

    @property
    def total(self) -> int:
        return self.unsent + self.stale + self.expired_claims + self.failed


def questions_requeue(
    *,
    lost_after: float,
    retention_seconds: float,
    queue_drained: Callable[[], bool] | None = None,
    unsent_grace: float = UNSENT_GRACE_SECONDS,
    include_failed: bool = False,
    limit: int = 1000,
) -> RequeueReport:
    """Send again the jobs whose message is provably not on the queue; never one merely waiting
    in a backlog, however old. Every cut-off is on the database's clock (`Now()`), as leases are.

    - unsent: queued and never accepted by SQS (no `enqueued_at`), asked over `unsent_grace` ago;
    - stale: queued and sent, but its message cannot be on the queue any more: sent longer ago
      than the queue keeps a message (`retention_seconds`), or sent over `lost_after` ago while
      the queue holds no message at all (`queue_drained()`, asked once this sweep holds the lock:
      a web process that died between its commit and its send; a message dead-lettered);
    - expired_claims: running, its lease lapsed over `lost_after` ago: a worker that died leaves
      its message to come back and be claimed once the lease lapses; one still unclaimed that
      long after has no message left (dead-lettered) or no worker. Sent once: it is queued again;
    - with `include_failed`, failed jobs, for a fresh round of attempts.

    Each resent job gets a fresh `enqueued_at`, so it matches none of these again until its
    message is lost again: a sweep never grows the queue. One sweep at a time, from its look at
    the queue to its last send (an advisory lock): another sweep cannot take the jobs this one
    marked for a queue it saw empty before they were sent. A sweep that finds the lock taken
    does nothing and says so (`skipped`).
    """
    with _requeue_lock() as taken:
        if not taken:
            return RequeueReport(skipped=True)
        return _requeue(
            lost_after=lost_after,
            retention_seconds=retention_seconds,
            queue_drained=bool(queue_drained and queue_drained()),
            unsent_grace=unsent_grace,
            include_failed=include_failed,
            limit=limit,
        )


def _requeue(
    *,
    lost_after: float,
    retention_seconds: float,
    queue_drained: bool,
    unsent_grace: float,
    include_failed: bool,
    limit: int,
) -> RequeueReport:
    def ago(seconds: float) -> Any:
        return Now() - timedelta(seconds=seconds)

    stale = Q(status=Status.QUEUED, enqueued_at__lt=ago(retention_seconds))
    if queue_drained:
        stale |= Q(status=Status.QUEUED, enqueued_at__lt=ago(lost_after))
    categories: list[tuple[str, Q]] = [
        (
            "unsent",
            Q(status=Status.QUEUED, enqueued_at__isnull=True, created_at__lt=ago(unsent_grace)),
        ),
        ("stale", stale),
        ("expired_claims", Q(status=Status.RUNNING, claim_expires_at__lt=ago(lost_after))),
    ]
    picked: dict[str, list[uuid.UUID]] = {}
    with transaction.atomic():
        for reason, condition in categories:
            # Locked, then marked sent in one UPDATE: a worker claiming one meanwhile waits.
            ids = list(
                Question.objects.select_for_update(skip_locked=True)
                .filter(condition)
                .exclude(pk__in=[pk for taken in picked.values() for pk in taken])
                .order_by("created_at")
                .values_list("pk", flat=True)[:limit]
            )
            Question.objects.filter(pk__in=ids).update(
                status=Status.QUEUED, claim_expires_at=None, enqueued_at=Now()
            )
            picked[reason] = ids
    counts = {"unsent": 0, "stale": 0, "expired_claims": 0, "failed": 0, "not_sent": 0}
    for reason, ids in picked.items():
        counts[reason] += len(ids)
        metrics.JOBS_REQUEUED.labels(reason=reason).inc(len(ids))
        counts["not_sent"] += len(questions_enqueue(question_ids=ids))
    if include_failed:
        for question in Question.objects.filter(status=Status.FAILED).order_by("created_at")[
            :limit
        ]:
            with transaction.atomic():
                retried = question_retry(question=question)
            if retried:
                counts["failed"] += 1
                metrics.JOBS_REQUEUED.labels(reason="failed").inc()
    return RequeueReport(
        unsent=counts["unsent"],
        stale=counts["stale"],
        expired_claims=counts["expired_claims"],
        failed=counts["failed"],
        not_sent=counts["not_sent"],
    )


@contextmanager
def _requeue_lock() -> Iterator[bool]:
    """Whether this sweep holds the sweep's lock (a session advisory lock, so that it outlives
    the transaction until the sends are done; it goes with the connection should the process
    die). PostgreSQL only: SQLite, for `make run`, has one process and needs none."""
    if connection.vendor != "postgresql":
        yield True
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [REQUEUE_LOCK_KEY])
        row = cursor.fetchone()
    taken = bool(row and row[0])
    try:
        yield taken
    finally:
        if taken:
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [REQUEUE_LOCK_KEY])
            except DatabaseError:
                connection.close()  # the session ends, and its lock with it
