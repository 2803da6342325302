"""A call's two clocks, through the real client against the OpenAI-wire test server:
OPENAI_TIMEOUT bounds the time without content (SSE keepalive comments do not count) and
OPENAI_CALL_DEADLINE the whole call. httpx's own timeout is per read, so comments alone would
hold a call open for as long as they come."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import openai
import pytest

from questions.llm.client import Progress, aclose_llm_clients, get_llm_client, reset_llm_client
from questions.llm.errors import classify_llm_error
from questions.models import Question
from questions.sqs.exceptions import RetryLater
from tests.factories import QuestionFactory, reloaded
from tests.support import answer_job

IDLE = 1.0  # OPENAI_TIMEOUT: seconds without content
DEADLINE = 3.0  # OPENAI_CALL_DEADLINE: seconds in all


@pytest.fixture
def clocks(settings: Any, fake_llm: Any) -> Any:
    settings.OPENAI_TIMEOUT = IDLE
    settings.OPENAI_CALL_DEADLINE = DEADLINE
    reset_llm_client()
    return fake_llm


def call() -> tuple[float, Progress, BaseException | None]:
    """One call: (seconds it took, what it streamed, the error it raised or None)."""
    progress = Progress()

    async def run() -> None:
        try:
            await get_llm_client().complete(
                "Well?", user="u", progress=progress, on_text=lambda _: None
            )
        finally:
            await aclose_llm_clients()

    started = time.monotonic()
    try:
        asyncio.run(run())
    except Exception as exc:
        return time.monotonic() - started, progress, exc
    return time.monotonic() - started, progress, None


def test_keepalive_comments_alone_do_not_hold_a_call_past_openai_timeout(clocks):
    clocks.enqueue({"keepalive": 6, "keepalive_interval": 0.2})  # then the answer would come
    elapsed, progress, error = call()
    assert isinstance(error, openai.APITimeoutError), error
    assert IDLE * 0.9 <= elapsed < IDLE + 1.0, elapsed
    assert progress.parts == []
    failure = classify_llm_error(error)
    assert (failure.retryable, failure.reason) == (True, "timeout")


def test_a_little_content_then_only_comments_is_cut_keeping_the_partial_text(clocks):
    clocks.configure(answer="one two three four")
    clocks.enqueue({"keepalive": 6, "keepalive_interval": 0.2, "keepalive_after": 2})
    elapsed, progress, error = call()
    assert isinstance(error, openai.APITimeoutError), error
    assert elapsed < IDLE + 1.0, elapsed
    # What streamed is there to be costed as a partial answer.
    assert "".join(progress.parts) == "one two"
    assert progress.partial("Well?", "m").completion_tokens == 2


def test_slow_but_steady_content_longer_than_openai_timeout_succeeds(clocks):
    # Nine events (role, five words, stop, usage, [DONE]) 0.3 s apart: 2.4 s, > IDLE, < DEADLINE.
    clocks.configure(answer="a b c d e", stream_interval=0.3)
    elapsed, progress, error = call()
    assert error is None
    assert IDLE < elapsed < DEADLINE, elapsed
    assert "".join(progress.parts) == "a b c d e"


def test_content_past_the_call_deadline_is_cut(clocks):
    words = [f"w{i}" for i in range(15)]
    clocks.configure(answer=" ".join(words), stream_interval=0.4)  # ≈ 6 s of steady content
    elapsed, progress, error = call()
    assert isinstance(error, openai.APITimeoutError), error
    assert DEADLINE * 0.9 <= elapsed < DEADLINE + 1.0, elapsed
    assert 0 < len(progress.parts) < len(words)


@pytest.mark.django_db(transaction=True)
def test_a_job_whose_call_stalls_on_keepalives_is_retried_and_then_answered(user, clocks):
    clocks.configure(answer="one two three")
    clocks.enqueue({"keepalive": 30, "keepalive_interval": 0.2, "keepalive_after": 1})
    question = QuestionFactory(owner=user)
    answer = answer_job

    started = time.monotonic()
    with pytest.raises(RetryLater) as retry:
        answer(job_id=str(question.pk), max_attempts=3)
    assert time.monotonic() - started < IDLE + 2.0  # not the 30 s the keepalives would last
    assert retry.value.reason == "timeout"
    row = reloaded(question)
    assert (row.status, row.error) == (
        Question.Status.QUEUED,
        "The language model did not answer in time.",
    )

    assert answer(job_id=str(question.pk), max_attempts=3) == "succeeded"
    assert reloaded(question).answer == "one two three"
    assert clocks.calls == 2
