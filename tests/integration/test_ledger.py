"""The spend ledger (questions.ledger): one row per call made to the provider, retries, partial
answers and calls cut off by a stopping worker included; the job's cost, the user's spend, the
admin's spend page, the budget check and `questions_llm_cost_usd_total` all read from it, and
its rows match the fake provider's own count of calls."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.db.models import Sum
from django_redis import get_redis_connection
from prometheus_client import REGISTRY

from questions.answering import question_answer
from questions.limits import user_spend_since, utc_day_start
from questions.live.streams import stream_key
from questions.llm.client import aclose_llm_clients, estimate_tokens
from questions.models import LLMCall, Question
from questions.pricing import completion_cost, worst_case_cost
from questions.selectors import user_spend_list
from questions.sqs.exceptions import RetryLater
from questions.worker.runtime import WORKER_RUNTIME
from tests.factories import QuestionFactory, ask, reloaded
from tests.support import answer_job, api_ask, assert_json_error

pytestmark = pytest.mark.django_db(transaction=True)

answer = answer_job
MODEL = "gpt-4o-mini"
LONG_ANSWER = " ".join(f"word{n}" for n in range(200))


def _metric_total() -> Decimal:
    """The counter, to the micro-dollar of the ledger (Prometheus adds floats)."""
    value = REGISTRY.get_sample_value("questions_llm_cost_usd_total", {"model": MODEL})
    return Decimal(str(value or 0)).quantize(Decimal("0.000001"))


def _ledger_total(**filters: object) -> Decimal:
    return LLMCall.objects.filter(**filters).aggregate(total=Sum("cost"))["total"] or Decimal(0)


def test_a_job_failing_with_a_5xx_then_a_cut_stream_then_answering_has_three_rows(
    user, fake_llm, settings
):
    settings.QUESTIONS_PRICES = {MODEL: {"input": Decimal(1000), "output": Decimal(2000)}}
    metric_before = _metric_total()
    # A 5xx before any content (not billed), a stream cut after 3 pieces (billed as far as it
    # went), then a whole answer.
    fake_llm.enqueue({"status": 500}, {"cut_after": 3})
    fake_llm.configure(answer="Paris is the capital.", prompt_tokens=11, completion_tokens=4)
    question = QuestionFactory(owner=user, text="What is the capital of France?")

    for _ in range(2):
        with pytest.raises(RetryLater):
            answer(job_id=str(question.pk), max_attempts=3)
    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"

    rows = list(LLMCall.objects.filter(question=question).order_by("created_at"))
    assert [(r.attempt, r.outcome, r.model) for r in rows] == [
        (1, "retried", MODEL),
        (2, "retried", MODEL),
        (3, "succeeded", MODEL),
    ]
    five_xx, cut, whole = rows
    assert (five_xx.prompt_tokens, five_xx.completion_tokens, five_xx.cost) == (0, 0, 0)
    # The cut stream: the prompt (estimated: the provider sent no usage) and 3 pieces.
    assert (cut.prompt_tokens, cut.completion_tokens) == (estimate_tokens(question.text), 3)
    assert cut.cost == completion_cost(
        model=MODEL, prompt_tokens=cut.prompt_tokens, completion_tokens=3
    )
    assert cut.cost > 0
    assert (whole.prompt_tokens, whole.completion_tokens) == (11, 4)
    assert whole.cost == completion_cost(model=MODEL, prompt_tokens=11, completion_tokens=4)
    assert all(r.user_id == user.pk for r in rows)

    job = reloaded(question)
    ledger = _ledger_total(question=question)
    assert ledger == cut.cost + whole.cost
    # The job's cost is the ledger's sum, not only the answering call's.
    assert job.cost == ledger > whole.cost
    assert (job.status, job.answer, job.prompt_tokens, job.completion_tokens) == (
        "succeeded",
        "Paris is the capital.",
        11,
        4,
    )
    assert user_spend_since(user_id=user.pk, since=utc_day_start(job.created_at)) == ledger
    spend_page = user_spend_list().get(pk=user.pk)
    assert spend_page.spend_today == spend_page.spend_30_days == ledger
    assert _metric_total() - metric_before == ledger
    # One row per call the provider received, no more, no fewer.
    assert LLMCall.objects.count() == fake_llm.calls == 3


def test_a_call_cut_off_by_the_worker_stopping_is_recorded_at_its_partial_usage(
    user, fake_llm, settings
):
    settings.QUESTIONS_PRICES = {MODEL: {"input": Decimal(1000), "output": Decimal(2000)}}
    fake_llm.configure(answer=LONG_ANSWER, stream_interval=0.05)
    question = QuestionFactory(owner=user)
    redis = get_redis_connection("default")

    async def run_then_stop() -> None:
        job = asyncio.ensure_future(
            question_answer(job_id=str(question.pk), max_attempts=3, runtime=WORKER_RUNTIME)
        )
        deadline = asyncio.get_running_loop().time() + 20
        # The live stream holds the attempt's reset, the status and at least one piece of the
        # answer.
        while redis.xlen(stream_key(question.pk)) < 3:
            assert asyncio.get_running_loop().time() < deadline, "no text streamed"
            await asyncio.sleep(0.05)
        job.cancel()  # what the worker does to a job it cannot wait for when stopping
        with pytest.raises(asyncio.CancelledError):
            await job
        await aclose_llm_clients()

    async_to_sync(run_then_stop)()

    row = LLMCall.objects.get(question=question)
    assert row.outcome == "interrupted"
    assert row.prompt_tokens == estimate_tokens(question.text)
    assert 1 <= row.completion_tokens < 200
    assert row.cost > 0
    assert reloaded(question).cost == row.cost
    assert fake_llm.calls == 1


def test_a_stopped_job_records_its_cut_call_as_cancelled(user, fake_llm, settings, api):
    fake_llm.configure(answer=LONG_ANSWER, stream_interval=0.05)
    question = QuestionFactory(owner=user)

    async def run_and_stop() -> str:
        job = asyncio.ensure_future(
            question_answer(job_id=str(question.pk), max_attempts=3, runtime=WORKER_RUNTIME)
        )
        while not fake_llm.calls:
            await asyncio.sleep(0.05)
        response = await asyncio.to_thread(api.post, f"/api/questions/{question.pk}/cancel")
        assert response.status_code == 202, response.content
        try:
            return await job
        finally:
            await aclose_llm_clients()

    assert async_to_sync(run_and_stop)() == "cancelled"
    row = LLMCall.objects.get(question=question)
    assert (row.outcome, row.cost > 0) == ("cancelled", True)
    job = reloaded(question)
    assert (job.status, job.cost) == ("cancelled", row.cost)


def test_the_ledger_matches_the_providers_count_through_the_worker(
    user, queues, fake_llm, run_worker, settings
):
    settings.QUESTIONS_PRICES = {MODEL: {"input": Decimal(1000), "output": Decimal(2000)}}
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal(1000)
    metric_before = _metric_total()
    fake_llm.enqueue({"status": 503}, {"status": 500}, {"cut_after": 2}, {"status": 400})
    fake_llm.configure(prompt_tokens=7, completion_tokens=5)
    jobs = [ask(user, f"Question {n}?") for n in range(4)]

    run_worker("--max-attempts=3", "--concurrency=2")

    statuses = sorted(reloaded(job).status for job in jobs)
    assert statuses.count("succeeded") == 3 and statuses.count("failed") == 1
    assert LLMCall.objects.count() == fake_llm.calls == 7
    outcomes = sorted(LLMCall.objects.values_list("outcome", flat=True))
    assert outcomes == ["failed", "retried", "retried", "retried", *["succeeded"] * 3]
    ledger = _ledger_total()
    assert ledger == sum((reloaded(job).cost or 0 for job in jobs), Decimal(0))
    assert ledger == user_spend_since(user_id=user.pk, since=utc_day_start(jobs[0].created_at))
    assert _metric_total() - metric_before == ledger


# --- the budget ---------------------------------------------------------------------------


def test_the_budget_reserves_every_attempt_an_unfinished_job_may_still_make(
    api, user, settings, queues
):
    settings.QUESTIONS_MAX_ATTEMPTS = 3
    text = "x" * 100
    one_call = worst_case_cost(question_bytes=len(text))
    # Room for all the calls of one question, not for a second one's.
    settings.QUESTIONS_DAILY_BUDGET_USD = one_call * 4
    first = api_ask(api, text)
    assert first.status_code == 202

    body = assert_json_error(api_ask(api, text), 429, "budget_exceeded")
    # Reserved: the 3 calls the first question may make (before: 1 call, so this was accepted).
    assert f"${one_call * 3:.4f} spent or reserved" in body["detail"]

    # The first job made 2 paid calls and waits for its 3rd: its spend counts, 1 call is held.
    job = Question.objects.get(pk=first.json()["id"])
    Question.objects.filter(pk=job.pk).update(attempts=2)
    for attempt in (1, 2):
        LLMCall.objects.create(
            question=job,
            user=user,
            model=MODEL,
            attempt=attempt,
            outcome="retried",
            cost=one_call / 4,
        )
    settings.QUESTIONS_DAILY_BUDGET_USD = one_call / 2 + one_call + one_call * 3
    assert api_ask(api, text).status_code == 202
    body = assert_json_error(api_ask(api, text), 429, "budget_exceeded")
    reserved = one_call / 2 + one_call + one_call * 3
    assert f"${reserved:.4f} spent or reserved" in body["detail"]


def test_a_running_job_reserves_the_call_it_is_making(api, user, settings, queues):
    settings.QUESTIONS_MAX_ATTEMPTS = 2
    text = "y" * 50
    one_call = worst_case_cost(question_bytes=len(text))
    QuestionFactory(owner=user, text=text, status="running", attempts=2)  # its last call
    settings.QUESTIONS_DAILY_BUDGET_USD = one_call * 3 - Decimal("0.000001")
    body = assert_json_error(api_ask(api, text), 429, "budget_exceeded")
    assert f"${one_call:.4f} spent or reserved" in body["detail"]
    settings.QUESTIONS_DAILY_BUDGET_USD = one_call * 3
    assert api_ask(api, text).status_code == 202


def test_spend_counts_the_day_a_call_was_made_and_outlives_the_job(user):
    job = QuestionFactory(owner=user, status="succeeded")
    today = utc_day_start(job.created_at)
    LLMCall.objects.create(
        question=job, user=user, model=MODEL, outcome="succeeded", cost=Decimal("0.25")
    )
    LLMCall.objects.create(
        question=job,
        user=user,
        model=MODEL,
        outcome="retried",
        cost=Decimal("0.5"),
        created_at=today - timedelta(minutes=1),
    )
    assert user_spend_since(user_id=user.pk, since=today) == Decimal("0.25")
    job.delete()  # retention deletes old jobs; what was paid stays paid
    assert user_spend_since(user_id=user.pk, since=today) == Decimal("0.25")
    assert user_spend_since(user_id=user.pk, since=today - timedelta(days=1)) == Decimal("0.75")
