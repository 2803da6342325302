"""The one place that classifies LLM failures, fed with what the real `openai` client raises
against the OpenAI-wire test server; and the backoff it asks for."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from questions.llm.errors import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_CAP_SECONDS,
    backoff_delay,
    classify_llm_error,
)
from tests.fakes.llm_server import FakeLLM
from tests.support import free_port


@pytest.fixture(scope="module")
def server() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


def failure_for(base_url: str, item: dict | None = None, *, server: FakeLLM | None = None):
    if server is not None and item is not None:
        server.reset()
        server.enqueue(item)
    client = openai.OpenAI(base_url=base_url, api_key="sk-secret-key", max_retries=0, timeout=1)
    with pytest.raises(openai.OpenAIError) as raised:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi?"}]
        )
    return classify_llm_error(raised.value)


@pytest.mark.parametrize(
    ("item", "retryable", "reason", "says"),
    [
        ({"status": 429, "retry_after": 7}, True, "rate_limited", "rate limiting"),
        ({"status": 500}, True, "server_error", "HTTP 500"),
        ({"status": 502}, True, "server_error", "HTTP 502"),
        ({"status": 503, "retry_after": "3"}, True, "server_error", "HTTP 503"),
        ({"status": 504}, True, "server_error", "HTTP 504"),
        ({"status": 408}, True, "server_error", "HTTP 408"),
        ({"status": 409}, True, "server_error", "HTTP 409"),
        ({"hang": True}, True, "timeout", "did not answer in time"),
        ({"disconnect": True}, True, "connection_error", "could not be reached"),
        ({"status": 400}, False, "http_400", "rejected the question as invalid"),
        ({"status": 401}, False, "http_401", "could not authenticate"),
        ({"status": 403}, False, "http_403", "refused the request"),
        ({"status": 404}, False, "http_404", "does not exist"),
        ({"status": 413}, False, "http_413", "too long"),
        ({"status": 422}, False, "http_422", "could not process"),
        ({"status": 418}, False, "http_418", "HTTP 418"),
    ],
)
def test_classification(server, item, retryable, reason, says):
    failure = failure_for(server.base_url, item, server=server)
    assert (failure.retryable, failure.reason) == (retryable, reason)
    assert says in failure.message
    # A message for a person: no secret, no raw provider body.
    assert "sk-secret-key" not in failure.message
    assert "FakeLLM" not in failure.message


def test_retry_after_is_read_from_the_response(server):
    assert (
        failure_for(server.base_url, {"status": 429, "retry_after": 7}, server=server).retry_after
        == 7
    )
    assert (
        failure_for(server.base_url, {"status": 503, "retry_after": "3"}, server=server).retry_after
        == 3
    )
    # An HTTP-date is not honoured (our own backoff applies); none means none.
    dated = {"status": 429, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert failure_for(server.base_url, dated, server=server).retry_after is None
    assert failure_for(server.base_url, {"status": 500}, server=server).retry_after is None


def test_a_closed_port_is_a_retryable_connection_error():
    failure = failure_for(f"http://127.0.0.1:{free_port()}/v1")
    assert (failure.retryable, failure.reason) == (True, "connection_error")


def test_anything_else_is_retried_as_unexpected():
    failure = classify_llm_error(RuntimeError("boom"))
    assert (failure.retryable, failure.reason) == (True, "unexpected")
    assert "boom" not in failure.message


@pytest.mark.parametrize("attempt", [1, 2, 3, 5, 8, 20])
def test_backoff_is_exponential_with_jitter_and_capped(attempt):
    ceiling = min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    delays = [backoff_delay(attempt) for _ in range(200)]
    assert all(ceiling / 2 <= delay <= ceiling for delay in delays)
    assert len(set(delays)) > 1  # jittered, so workers do not retry in lockstep


def test_backoff_is_never_sooner_than_retry_after():
    assert all(backoff_delay(1, retry_after=30) >= 30 for _ in range(100))
    assert all(backoff_delay(10, retry_after=1) >= BACKOFF_CAP_SECONDS / 2 for _ in range(100))
