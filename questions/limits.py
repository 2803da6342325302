"""The limits on asking, checked when a question is created (API and page alike), because each
question costs money:

- a rate: QUESTIONS_THROTTLE_RATE questions per user per fixed window, counted atomically in
  Redis (one Lua call); when Redis is down, the user's questions of the last window are counted
  in PostgreSQL instead — the limit never fails open;
- unfinished jobs: at most QUESTIONS_MAX_OPEN_PER_USER queued + running at once;
- a daily budget in USD: today's spend (the ledger: every call made this UTC day, retries and
  partial answers included) + the worst case of the calls the unfinished jobs may still make +
  the worst case of all the calls this question may make (QUESTIONS_MAX_ATTEMPTS each) may not
  exceed QUESTIONS_DAILY_BUDGET_USD.

The PostgreSQL checks run in the transaction that inserts the question, after
`lock_owner()`, so that concurrent requests of one user are serialised and none can slip
between a count and the insert.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Case, Count, F, IntegerField, Min, Q, Sum, Value, When
from django.db.models.expressions import Func
from django.db.models.functions import Greatest, Length
from django.utils import timezone

from config.env import parse_rate
from questions import metrics
from questions.cache import redis_call
from questions.models import LLMCall, Question, UserQuota
from questions.pricing import worst_case_cost

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from redis import Redis

logger = logging.getLogger(__name__)

OPEN = (Question.Status.QUEUED, Question.Status.RUNNING)
# pg_advisory_xact_lock(namespace, user): the namespace keeps these locks apart from others.
_LOCK_NAMESPACE = 0x51554553  # "QUES"

# KEYS[1] the user's window counter; ARGV: window in ms, limit. One round trip, atomic: a
# refused request takes its count back, so the counter never exceeds the limit.
_TAKE = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  return {0, ttl}
end
return {1, ttl}
"""
# Give a slot back (the question was not recorded after all), unless its window has ended.
_GIVE_BACK = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
return 1
"""


class AskRefused(Exception):
    """A question refused by a limit: `code` for programs, `detail` for people, and when
    asking again may succeed (`retry_after`, whole seconds)."""

    def __init__(self, *, code: str, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.retry_after = max(int(retry_after), 1)


class _OctetLength(Func):
    function = "OCTET_LENGTH"
    output_field = IntegerField()


@dataclass
class RateSlot:
    """One question's place in the user's window; `key` None when Redis was down (then the
    window is counted in PostgreSQL by `ask_limits_check`)."""

    key: str | None

    def give_back(self) -> None:
        if self.key is not None:
            key = self.key
            redis_call("ratelimit", lambda client: client.eval(_GIVE_BACK, 1, key))
            self.key = None


def _rate() -> tuple[int, int]:
    return parse_rate(settings.QUESTIONS_THROTTLE_RATE, name="QUESTIONS_THROTTLE_RATE")


def _period_words(seconds: int) -> str:
    names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    return names.get(seconds, f"{seconds} seconds")


def _refuse_rate(limit: int, window: int, wait_seconds: float) -> AskRefused:
    metrics.ASKS_REFUSED.labels(reason="rate").inc()
    wait = max(math.ceil(wait_seconds), 1)
    return AskRefused(
        code="throttled",
        detail=(
            f"Too many questions: you may ask {limit} per {_period_words(window)}, "
            f"and each question costs money. Please try again in about {wait} seconds."
        ),
        retry_after=wait,
    )


def rate_slot_take(*, owner_id: int) -> RateSlot:
    """Count this question in the user's window in Redis, or raise AskRefused if it is full.
    Redis down: a slot to be checked in PostgreSQL by `ask_limits_check`."""
    limit, window = _rate()
    key = cache.make_key(f"ratelimit:ask:{owner_id}:{window}")

    def take(client: Redis) -> Any:
        return client.eval(_TAKE, 1, key, window * 1000, limit)

    result = redis_call("ratelimit", take)
    if result is None:
        return RateSlot(key=None)
    allowed, ttl_ms = int(result[0]), int(result[1])
    if not allowed:
        raise _refuse_rate(limit, window, ttl_ms / 1000)
    return RateSlot(key=key)


def lock_owner(*, owner_id: int) -> None:
    """Serialise the asking of one user until the transaction ends (PostgreSQL; SQLite, used
    only by `make run`, serialises every write anyway)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", [_LOCK_NAMESPACE, owner_id % 2**31]
            )


@dataclass(frozen=True)
class Limits:
    max_open_jobs: int
    daily_budget: Decimal


def limits_for(*, owner_id: int) -> Limits:
    return limits_of(quota=UserQuota.objects.filter(user_id=owner_id).first())


def limits_of(*, quota: UserQuota | None) -> Limits:
    """The settings' limits, overridden by the fields `quota` sets."""
    max_open = settings.QUESTIONS_MAX_OPEN_PER_USER
    budget = settings.QUESTIONS_DAILY_BUDGET_USD
    if quota is not None:
        if quota.max_open_jobs is not None:
            max_open = quota.max_open_jobs
        if quota.daily_budget_usd is not None:
            budget = quota.daily_budget_usd
    return Limits(max_open_jobs=max_open, daily_budget=Decimal(budget))


def utc_day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ask_limits_check(
    *, owner: User, text: str, slot: RateSlot, now: datetime | None = None
) -> None:
    """Raise AskRefused if recording `text` for `owner` now would break a limit. Call inside the
    inserting transaction, after `lock_owner`."""
    now = now or timezone.now()
    mine = Question.objects.filter(owner_id=owner.pk)
    if slot.key is None:
        limit, window = _rate()
        recent = mine.filter(created_at__gt=now - timedelta(seconds=window)).aggregate(
            n=Count("pk"), oldest=Min("created_at")
        )
        if recent["n"] >= limit:
            free_at = recent["oldest"] + timedelta(seconds=window)
            raise _refuse_rate(limit, window, (free_at - now).total_seconds())
    limits = limits_for(owner_id=owner.pk)
    calls_left = _calls_left()
    unfinished = mine.filter(status__in=OPEN).aggregate(
        n=Count("pk"), calls=Sum(calls_left), size=Sum(calls_left * _text_bytes())
    )
    if unfinished["n"] >= limits.max_open_jobs:
        metrics.ASKS_REFUSED.labels(reason="open_jobs").inc()
        raise AskRefused(
            code="too_many_open_jobs",
            detail=(
                f"You have {unfinished['n']} questions waiting for an answer; the limit is "
                f"{limits.max_open_jobs} at once. Please ask again when one of them is answered."
            ),
            retry_after=math.ceil(settings.OPENAI_TIMEOUT),
        )
    day_start = utc_day_start(now)
    spent = user_spend_since(user_id=owner.pk, since=day_start)
    committed = spent + _worst_case(calls=unfinished["calls"] or 0, size=unfinished["size"] or 0)
    calls = settings.QUESTIONS_MAX_ATTEMPTS * len(_chain_models())
    this_one = _worst_case(calls=calls, size=calls * len(text.encode()))
    if committed + this_one > limits.daily_budget:
        metrics.ASKS_REFUSED.labels(reason="budget").inc()
        tomorrow = day_start + timedelta(days=1)
        raise AskRefused(
            code="budget_exceeded",
            detail=(
                f"This question could cost up to ${this_one:.4f}, and with today's questions "
                f"(${committed:.4f} spent or reserved) that would pass your daily budget of "
                f"${limits.daily_budget:.2f}. The budget starts afresh at midnight UTC."
            ),
            retry_after=math.ceil((tomorrow - now).total_seconds()),
        )


def user_spend_since(*, user_id: int, since: datetime) -> Decimal:
    """What the user's LLM calls made since `since` cost, from the ledger."""
    total = LLMCall.objects.filter(user_id=user_id, created_at__gte=since).aggregate(
        total=Sum("cost")
    )["total"]
    return total or Decimal(0)


def _calls_left() -> Any:
    """The calls an unfinished job may still make: QUESTIONS_MAX_ATTEMPTS on its current model
    less those it has claimed there, plus the one a running job is making now (its ledger row
    comes when it ends), plus QUESTIONS_MAX_ATTEMPTS on each fallback model after it."""
    attempts = settings.QUESTIONS_MAX_ATTEMPTS
    running = Case(When(Q(status=Question.Status.RUNNING), then=Value(1)), default=Value(0))
    on_model = Greatest(
        Value(attempts) - F("attempts") + F("fallback_after_attempts") + running, Value(0)
    )
    models_after = Greatest(Value(len(_chain_models()) - 1) - F("fallback_level"), Value(0))
    return on_model + Value(attempts) * models_after


def _chain_models() -> list[str]:
    """The models a job may ask: the primary, then the fallbacks (priced as configured, even
    while the offline demo model answers)."""
    return [settings.OPENAI_MODEL, *(entry.model for entry in settings.OPENAI_FALLBACK_MODELS)]


def _worst_case(*, calls: int, size: int) -> Decimal:
    """The worst case of `calls` calls of `size` question bytes in all, at the price of the
    dearest model a job may ask (the primary or a fallback)."""
    return max(
        worst_case_cost(questions=calls, question_bytes=size, model=model)
        for model in _chain_models()
    )


def _text_bytes() -> Any:
    # SQLite (make run) has no OCTET_LENGTH before 3.43: characters × 4 bound its bytes.
    if connection.vendor == "postgresql":
        return _OctetLength("text")
    return Length("text") * 4
