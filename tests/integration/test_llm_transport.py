"""The LLM client's transport, on public APIs only: its calls really go through aiohttp
(`LLMConnections`; a refactor that drops it fails here), connections are kept alive and closed
with the loop, a call cut off closes its connection, and an HTTP error status comes out as the
same `openai` error class, so `classify_llm_error` reads it as it reads the SDK's."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest

from questions.llm.client import (
    OpenAIClient,
    Progress,
    aclose_llm_clients,
    get_llm_client,
    reset_llm_client,
)
from questions.llm.errors import classify_llm_error
from questions.llm.transport import LLMConnections, env_proxy
from tests.fakes.llm_server import FakeLLM
from tests.support import wait_until


@pytest.fixture
def own_fake_llm(settings: Any) -> Iterator[FakeLLM]:
    """A fake LLM server of this test's own: the connections it counts are this test's only."""
    with FakeLLM() as fake:
        settings.OPENAI_BASE_URL = fake.base_url
        settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
        reset_llm_client()
        yield fake
    reset_llm_client()


def test_calls_go_through_aiohttp_and_close_with_the_loop(own_fake_llm: FakeLLM) -> None:
    async def run() -> tuple[list[str], int, bool]:
        client = get_llm_client()
        assert isinstance(client, OpenAIClient)
        assert isinstance(client.connections, LLMConnections)
        texts = []
        for index in range(5):
            progress = Progress()
            await client.complete(f"Q{index}?", user="u", progress=progress, on_text=lambda _: None)
            texts.append("".join(progress.parts))
        # Concurrent calls open more connections.
        await asyncio.gather(
            *(
                client.complete("Q?", user="u", progress=Progress(), on_text=lambda _: None)
                for _ in range(3)
            )
        )
        session = client.connections.session
        assert isinstance(session, aiohttp.ClientSession)
        requests = client.connections.requests
        await aclose_llm_clients()
        return texts, requests, session.closed

    texts, requests, closed = asyncio.run(run())
    assert texts == [f"Answer to: Q{index}?" for index in range(5)]
    assert requests == 8 == own_fake_llm.calls
    # Kept-alive connections are reused: the five sequential calls share one.
    assert 1 <= own_fake_llm.connections_opened <= 4
    # Closing the clients closed the connections (the server sees them go).
    assert closed
    wait_until(lambda: own_fake_llm.open_connections == 0, what="the server to see them closed")


def test_a_second_wave_of_calls_reuses_the_first_waves_connections(fake_llm: Any) -> None:
    """More calls in flight than the SDK's 100 kept-alive connections: all are kept, so the next
    wave opens none (a handshake per call against the provider otherwise)."""
    wave = 150
    fake_llm.configure(latency=0.5)  # the calls of a wave overlap: one connection each

    async def run() -> list[int]:
        client = get_llm_client()
        opened = []
        for _ in range(2):
            await asyncio.gather(
                *(
                    client.complete("Q?", user="u", progress=Progress(), on_text=lambda _: None)
                    for _ in range(wave)
                )
            )
            opened.append(fake_llm.connections_opened)
        await aclose_llm_clients()
        return opened

    first, both = asyncio.run(run())
    assert fake_llm.calls == 2 * wave
    assert fake_llm.max_in_flight == wave
    assert first == wave
    assert both == first


def test_a_call_cut_off_mid_stream_closes_its_connection(fake_llm: Any) -> None:
    """A Stop cancels the call's task while the answer streams: the connection is closed, not
    put back in the pool (the provider stops generating), and the next call opens a new one."""
    fake_llm.configure(answer="one two three four five six", stream_interval=0.3)

    async def run() -> str:
        client = get_llm_client()
        progress = Progress()
        first_word = asyncio.Event()
        call = asyncio.create_task(
            client.complete("Q?", user="u", progress=progress, on_text=lambda _: first_word.set())
        )
        await asyncio.wait_for(first_word.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        fake_llm.configure(stream_interval=0.0)
        after = Progress()
        await client.complete("Again?", user="u", progress=after, on_text=lambda _: None)
        await aclose_llm_clients()
        return "".join(after.parts)

    assert asyncio.run(run()) == "one two three four five six"
    wait_until(lambda: fake_llm.cut_streams == 1, what="the cut stream")
    assert fake_llm.calls == 2
    assert fake_llm.connections_opened == 2


@pytest.mark.parametrize("proxy_env", ["HTTP_PROXY", "ALL_PROXY"])
def test_the_proxy_comes_from_the_environment(monkeypatch: Any, proxy_env: str) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    url = "http://llm.internal:8000/v1/chat/completions"
    assert env_proxy(url) is None
    monkeypatch.setenv(proxy_env, "http://proxy.internal:3128")
    assert env_proxy(url) == "http://proxy.internal:3128"
    assert env_proxy("https://api.openai.com/v1") == (
        "http://proxy.internal:3128" if proxy_env == "ALL_PROXY" else None
    )
    monkeypatch.setenv("NO_PROXY", "llm.internal")
    assert env_proxy(url) is None


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
        try:
            await get_llm_client().complete("Hi?", user="u", progress=Progress(), on_text=print)
        finally:
            await aclose_llm_clients()

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
