"""The LLM client's transport, on public APIs only: its calls really go through
`CheapIdleCheckTransport` (a refactor that drops it fails here), and an HTTP error status comes
out as the same `openai` error class, so `classify_llm_error` reads it as it reads the SDK's."""

from __future__ import annotations

import asyncio
from typing import Any

import openai
import pytest

from questions.llm.client import OpenAIClient, Progress, get_llm_client
from questions.llm.errors import classify_llm_error
from questions.llm.transport import CheapIdleCheckBackend, CheapIdleCheckTransport


def test_calls_go_through_the_cheap_idle_check_transport(fake_llm: Any) -> None:
    async def run() -> tuple[OpenAIClient, list[str]]:
        client = get_llm_client()
        assert isinstance(client, OpenAIClient)
        texts = []
        for index in range(5):
            progress = Progress()
            await client.complete(f"Q{index}?", user="u", progress=progress, on_text=lambda _: None)
            texts.append("".join(progress.parts))
        # Concurrent calls open more connections, each through the backend.
        await asyncio.gather(
            *(
                client.complete("Q?", user="u", progress=Progress(), on_text=lambda _: None)
                for _ in range(3)
            )
        )
        return client, texts

    client, texts = asyncio.run(run())
    assert texts == [f"Answer to: Q{index}?" for index in range(5)]
    assert isinstance(client.transport, CheapIdleCheckTransport)
    assert isinstance(client.transport.backend, CheapIdleCheckBackend)
    assert client.transport.requests == 8 == fake_llm.calls
    # Kept-alive connections are reused: the five sequential calls share one.
    assert 1 <= client.transport.backend.connections <= 4


def test_a_second_wave_of_calls_reuses_the_first_waves_connections(fake_llm: Any) -> None:
    """More calls in flight than the SDK's 100 kept-alive connections: all are kept, so the next
    wave opens none (a handshake per call against the provider otherwise)."""
    wave = 150
    fake_llm.configure(latency=0.5)  # the calls of a wave overlap: one connection each

    async def run() -> tuple[int, int]:
        client = get_llm_client()
        assert isinstance(client, OpenAIClient)
        opened = []
        for _ in range(2):
            await asyncio.gather(
                *(
                    client.complete("Q?", user="u", progress=Progress(), on_text=lambda _: None)
                    for _ in range(wave)
                )
            )
            opened.append(client.transport.backend.connections)
        return opened[0], opened[1]

    first, both = asyncio.run(run())
    assert fake_llm.calls == 2 * wave
    assert fake_llm.max_in_flight == wave
    assert first == wave
    assert both == first


def sdk_error(fake: Any, item: dict[str, Any]) -> openai.OpenAIError:
    fake.reset()
    fake.enqueue(item)
    sdk = openai.OpenAI(base_url=fake.base_url, api_key="k", max_retries=0, timeout=5)
    with pytest.raises(openai.OpenAIError) as raised:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hi?"}])
    return raised.value


def client_error(fake: Any, item: dict[str, Any]) -> openai.OpenAIError:
    fake.reset()
    fake.enqueue(item)

    async def run() -> None:
        await get_llm_client().complete("Hi?", user="u", progress=Progress(), on_text=print)

    with pytest.raises(openai.OpenAIError) as raised:
        asyncio.run(run())
    return raised.value


@pytest.mark.parametrize(
    "item",
    [
        {"status": 400},
        {"status": 400, "code": "context_length_exceeded", "message": "Too long."},
        {"status": 401},
        {"status": 403},
        {"status": 404},
        {"status": 409},
        {"status": 413},
        {"status": 418},
        {"status": 422},
        {"status": 429, "retry_after": 7},
        {"status": 500},
        {"status": 503, "retry_after": "3"},
    ],
)
def test_a_status_error_is_the_sdks_own(fake_llm: Any, item: dict[str, Any]) -> None:
    ours = client_error(fake_llm, item)
    theirs = sdk_error(fake_llm, item)
    assert type(ours) is type(theirs)
    assert isinstance(ours, openai.APIStatusError)
    assert isinstance(theirs, openai.APIStatusError)
    assert ours.status_code == theirs.status_code == item["status"]
    assert str(ours) == str(theirs)
    assert ours.body == theirs.body
    assert classify_llm_error(ours) == classify_llm_error(theirs)
    failure = classify_llm_error(ours)
    status = item["status"]
    if status == 429:
        assert (failure.retryable, failure.reason) == (True, "rate_limited")
    elif status >= 500 or status in (408, 409):
        assert failure.retryable
    else:
        assert not failure.retryable
