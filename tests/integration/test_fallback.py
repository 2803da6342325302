"""Model fallback (OPENAI_FALLBACK_MODELS, questions.fallback): the primary failing after its
retries, refusing for context length or rate limited past the wait budget moves the job to the
next model; a bad request does not. Each call is one ledger row at its own model's price."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Sum
from prometheus_client import REGISTRY

from config.env import FallbackModel, parse_fallback_models
from questions.llm.client import reset_llm_client
from questions.models import LLMCall, Question
from questions.pricing import completion_cost, worst_case_cost
from questions.sqs.exceptions import RetryLater
from tests.factories import QuestionFactory, ask, reloaded
from tests.fakes.llm_server import FakeLLM
from tests.support import answer_job, api_ask

pytestmark = pytest.mark.django_db(transaction=True)

answer = answer_job
PRIMARY = "gpt-4o-mini"
FALLBACK = "backup-model"
PRICES = {
    PRIMARY: {"input": Decimal(1000), "output": Decimal(2000)},
    FALLBACK: {"input": Decimal(3000), "output": Decimal(5000)},
}


@pytest.fixture
def backup_llm(
    fake_llm: FakeLLM, settings: object, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeLLM]:
    """A second OpenAI-wire server for the fallback model, with a key of its own (by name)."""
    monkeypatch.setenv("BACKUP_LLM_KEY", "sk-backup-test")
    with FakeLLM() as backup:
        settings.OPENAI_FALLBACK_MODELS = parse_fallback_models(  # type: ignore[attr-defined]
            f'[{{"model": "{FALLBACK}", "base_url": "{backup.base_url}", '
            '"api_key_env": "BACKUP_LLM_KEY"}]',
            name="OPENAI_FALLBACK_MODELS",
        )
        settings.QUESTIONS_PRICES = PRICES  # type: ignore[attr-defined]
        reset_llm_client()
        yield backup
    reset_llm_client()


def _fallback_metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


def test_a_primary_failing_with_500_after_its_retries_falls_back_and_the_fallback_answers(
    user, fake_llm, backup_llm, api, page, superuser_client
):
    page_client = page
    fake_llm.configure(always={"status": 500})
    backup_llm.configure(answer="From the backup.", prompt_tokens=9, completion_tokens=3)
    answered_before = _fallback_metric("questions_answers_by_fallback_total")
    moved_before = _fallback_metric("questions_llm_fallbacks_total", {"reason": "server_error"})
    question = QuestionFactory(owner=user)

    with pytest.raises(RetryLater):
        answer(job_id=str(question.pk), max_attempts=2)  # primary, attempt 1: retried
    with pytest.raises(RetryLater, match="falling back"):
        answer(job_id=str(question.pk), max_attempts=2)  # primary, attempt 2: next model
    moved = reloaded(question)
    assert (moved.status, moved.fallback_level, moved.attempts) == ("queued", 1, 2)
    assert answer(job_id=str(question.pk), max_attempts=2) == "succeeded"

    job = reloaded(question)
    assert (job.status, job.model, job.answer) == ("succeeded", FALLBACK, "From the backup.")
    assert job.answered_by_fallback
    assert (fake_llm.calls, backup_llm.calls) == (2, 1)
    assert backup_llm.calls_by_model == {FALLBACK: 1}
    rows = list(LLMCall.objects.filter(question=question).order_by("created_at"))
    assert [(r.model, r.fallback_level, r.outcome) for r in rows] == [
        (PRIMARY, 0, "retried"),
        (PRIMARY, 0, "fell_back"),
        (FALLBACK, 1, "succeeded"),
    ]
    # Each call at its own model's price; the 500s sent no content: not billed.
    assert rows[2].cost == completion_cost(model=FALLBACK, prompt_tokens=9, completion_tokens=3)
    assert rows[0].cost == rows[1].cost == 0
    assert job.cost == rows[2].cost == LLMCall.objects.aggregate(total=Sum("cost"))["total"]
    body = api.get(f"/api/questions/{job.pk}/").json()
    assert (body["model"], body["answered_by_fallback"]) == (FALLBACK, True)
    page = page_client.get(f"/questions/{job.pk}/").content.decode()
    assert f'{FALLBACK} <span class="badge badge-fallback"' in page
    admin = superuser_client.get(f"/admin/questions/question/{job.pk}/change/").content.decode()
    assert admin.count("fell_back") + admin.count("Failed, next model") >= 1
    assert FALLBACK in admin and "LLM calls (the ledger" in admin
    assert _fallback_metric("questions_answers_by_fallback_total") == answered_before + 1
    assert (
        _fallback_metric("questions_llm_fallbacks_total", {"reason": "server_error"})
        == moved_before + 1
    )


def test_through_the_worker_and_sqs_the_fallback_answers_after_the_primarys_retries(
    user, queues, fake_llm, backup_llm, run_worker, settings
):
    settings.QUESTIONS_DAILY_BUDGET_USD = Decimal(1000)  # the test prices are steep
    fake_llm.configure(always={"status": 503})
    question = ask(user)

    run_worker("--max-attempts=2")

    job = reloaded(question)
    assert (job.status, job.model, job.answered_by_fallback) == ("succeeded", FALLBACK, True)
    assert (fake_llm.calls, backup_llm.calls) == (2, 1)
    assert LLMCall.objects.count() == fake_llm.calls + backup_llm.calls
    assert queues.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}


def test_a_bad_request_does_not_fall_back(user, fake_llm, backup_llm):
    fake_llm.configure(always={"status": 400})
    question = QuestionFactory(owner=user)

    assert answer(job_id=str(question.pk), max_attempts=3) == "failed"

    job = reloaded(question)
    assert (job.status, job.fallback_level, job.answered_by_fallback) == ("failed", 0, False)
    assert "rejected the question" in job.error
    assert (fake_llm.calls, backup_llm.calls) == (1, 0)
    assert list(LLMCall.objects.values_list("model", "outcome")) == [(PRIMARY, "failed")]


def test_a_context_length_refusal_falls_back_at_once(user, fake_llm, backup_llm):
    fake_llm.configure(always={"status": 400, "code": "context_length_exceeded"})
    question = QuestionFactory(owner=user)

    with pytest.raises(RetryLater, match="context_length"):
        answer(job_id=str(question.pk), max_attempts=3)
    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"

    job = reloaded(question)
    assert (job.model, job.answered_by_fallback, job.attempts) == (FALLBACK, True, 2)
    assert (fake_llm.calls, backup_llm.calls) == (1, 1)


def test_a_primary_rate_limited_past_the_wait_budget_falls_back(
    user, fake_llm, backup_llm, settings
):
    settings.OPENAI_FALLBACK_RATE_LIMIT_WAIT = 60
    fake_llm.configure(always={"status": 429, "retry_after": 0})
    question = QuestionFactory(owner=user)

    # Within the wait budget: a 429 is retried on the primary, the attempt given back.
    with pytest.raises(RetryLater, match="rate_limited"):
        answer(job_id=str(question.pk), max_attempts=3)
    assert (reloaded(question).fallback_level, reloaded(question).attempts) == (0, 0)

    # Rate limited for longer than the budget: the next model.
    Question.objects.filter(pk=question.pk).update(
        created_at=question.created_at - timedelta(seconds=120)
    )
    with pytest.raises(RetryLater, match="falling back: rate_limited"):
        answer(job_id=str(question.pk), max_attempts=3)
    moved = reloaded(question)
    assert (moved.fallback_level, moved.attempts, moved.fallback_after_attempts) == (1, 0, 0)
    # The primary's pause (one budget per model in the shared limiter) does not hold it back.
    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"

    job = reloaded(question)
    assert (job.model, job.answered_by_fallback) == (FALLBACK, True)
    assert (fake_llm.calls, backup_llm.calls) == (2, 1)
    outcomes = list(LLMCall.objects.order_by("created_at").values_list("model", "outcome", "cost"))
    assert outcomes[:2] == [(PRIMARY, "rate_limited", 0), (PRIMARY, "rate_limited", 0)]
    assert outcomes[2][:2] == (FALLBACK, "succeeded")


def test_without_a_fallback_a_primary_500_fails_after_its_retries(user, fake_llm, settings):
    settings.OPENAI_FALLBACK_MODELS = []
    fake_llm.configure(always={"status": 500})
    question = QuestionFactory(owner=user)
    with pytest.raises(RetryLater):
        answer(job_id=str(question.pk), max_attempts=2)
    assert answer(job_id=str(question.pk), max_attempts=2) == "failed"
    assert reloaded(question).fallback_level == 0


def test_the_budget_reserves_every_model_of_the_chain_at_the_dearest_price(
    api, user, backup_llm, settings, queues
):
    settings.QUESTIONS_MAX_ATTEMPTS = 2
    text = "z" * 80
    dearest = worst_case_cost(question_bytes=len(text), model=FALLBACK)
    assert dearest > worst_case_cost(question_bytes=len(text), model=PRIMARY)
    # 2 attempts on each of 2 models, each at the fallback's price.
    settings.QUESTIONS_DAILY_BUDGET_USD = dearest * 4 - Decimal("0.000001")
    assert api_ask(api, text).json()["error"] == "budget_exceeded"
    settings.QUESTIONS_DAILY_BUDGET_USD = dearest * 4
    assert api_ask(api, text).status_code == 202


def test_the_schema_documents_answered_by_fallback(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    field = schema["components"]["schemas"]["QuestionOutput"]["properties"]["answered_by_fallback"]
    assert field["type"] == "boolean" and field["readOnly"] is True


# --- the setting --------------------------------------------------------------------------


def test_the_compact_form_and_the_json_form_parse(monkeypatch):
    monkeypatch.setenv("OTHER_KEY", "sk-other")
    assert parse_fallback_models("gpt-4o, llama3@http://vllm:8000/v1", name="X") == [
        FallbackModel(model="gpt-4o"),
        FallbackModel(model="llama3", base_url="http://vllm:8000/v1"),
    ]
    [entry] = parse_fallback_models(
        '[{"model": "m", "base_url": "https://other.example/v1", "api_key_env": "OTHER_KEY"}]',
        name="X",
    )
    assert (entry.model, entry.base_url, entry.api_key) == (
        "m",
        "https://other.example/v1",
        "sk-other",
    )
    assert "sk-other" not in repr(entry)
    assert parse_fallback_models("", name="X") == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('[{"model": "m", "api_key_env": "NOT_SET_ANYWHERE"}]', "names NOT_SET_ANYWHERE"),
        ('[{"model": ""}]', "names no model"),
        ('[{"model": "m", "base_url": "ftp://x"}]', "http(s) URL"),
        ('[{"model": "m", "key": "sk-inline"}]', "api_key_env"),
        ("[not json", "not valid JSON"),
    ],
)
def test_a_bad_entry_stops_start_up_naming_the_variable(raw, message, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    with pytest.raises(ImproperlyConfigured, match="OPENAI_FALLBACK_MODELS") as error:
        parse_fallback_models(raw, name="OPENAI_FALLBACK_MODELS")
    assert message in str(error.value)
