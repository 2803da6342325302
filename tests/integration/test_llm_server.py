"""Tests for the fake OpenAI server, driven through the real ``openai`` client."""

from __future__ import annotations

import http.client
import json
import selectors
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.llm_server import FakeLLM
from tests.support import wait_until

MODEL = "gpt-4o-mini"
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake() -> Iterator[FakeLLM]:
    with FakeLLM() as server:
        yield server


@pytest.fixture
def client(fake: FakeLLM) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0, timeout=10) as c:
        yield c


def ask(client: openai.OpenAI, question: str = "What is two plus two?") -> str | None:
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}]
    )
    return completion.choices[0].message.content


def control(fake: FakeLLM, method: str, action: str, payload: object = None) -> Any:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(  # noqa: S310 - local http URL
        f"{fake.url}/_control/{action}",
        data=data,
        method=method,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        return json.loads(response.read())


def test_default_answer_and_usage(fake: FakeLLM, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL,
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is two plus two?"},
        ],
    )

    assert completion.id.startswith("chatcmpl-")
    assert completion.object == "chat.completion"
    assert completion.model == MODEL
    assert isinstance(completion.created, int)
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "Answer to: What is two plus two?"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 8  # 3 + 5 words
    assert completion.usage.completion_tokens == 7
    assert completion.usage.total_tokens == 15
    assert fake.calls == 1
    [received] = fake.requests
    assert received["model"] == MODEL
    assert received["messages"][1] == {"role": "user", "content": "What is two plus two?"}
    assert isinstance(received["_received_at"], float)
    assert received["_received_at"] <= time.monotonic()


def test_answer_and_token_overrides(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.configure(answer="forty two", prompt_tokens=100, completion_tokens=3)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "q"}]
    )
    assert completion.choices[0].message.content == "forty two"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (100, 3)
    assert completion.usage.total_tokens == 103

    fake.configure(answer=None, prompt_tokens=None, completion_tokens=None)
    assert ask(client, "back to normal") == "Answer to: back to normal"


def test_rate_limit_has_retry_after(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.enqueue({"status": 429, "retry_after": 2})

    with pytest.raises(openai.RateLimitError) as excinfo:
        ask(client)

    assert excinfo.value.status_code == 429
    assert excinfo.value.response.headers["retry-after"] == "2"
    assert excinfo.value.code == "rate_limit_exceeded"
    assert excinfo.value.request_id is not None
    assert ask(client) == "Answer to: What is two plus two?"


@pytest.mark.parametrize(
    ("status", "error", "error_type"),
    [
        (400, openai.BadRequestError, "invalid_request_error"),
        (401, openai.AuthenticationError, "invalid_request_error"),
        (404, openai.NotFoundError, "invalid_request_error"),
        (500, openai.InternalServerError, "server_error"),
        (503, openai.InternalServerError, "server_error"),
    ],
)
def test_error_statuses(
    fake: FakeLLM,
    client: openai.OpenAI,
    status: int,
    error: type[openai.APIStatusError],
    error_type: str,
) -> None:
    fake.enqueue({"status": status})

    with pytest.raises(error) as excinfo:
        ask(client)

    assert excinfo.value.status_code == status
    assert excinfo.value.type == error_type
    assert isinstance(excinfo.value.body, dict)
    assert "scripted by FakeLLM" in excinfo.value.body["message"]


def test_the_error_message_can_be_set(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.enqueue({"status": 400, "message": "bad request"})
    with pytest.raises(openai.BadRequestError) as excinfo:
        ask(client)
    assert isinstance(excinfo.value.body, dict)
    assert excinfo.value.body["message"] == "bad request"
    assert "retry-after" not in excinfo.value.response.headers


def test_hang_times_out_on_the_client(fake: FakeLLM) -> None:
    fake.enqueue({"hang": True})
    with openai.OpenAI(
        base_url=fake.base_url, api_key="test", max_retries=0, timeout=0.5
    ) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            ask(client)
        elapsed = time.monotonic() - started

        assert 0.5 <= elapsed < 3
        # The server notices that the client went away and frees the handler.
        assert fake.wait_for_idle(timeout=3)
        assert ask(client) == "Answer to: What is two plus two?"
    assert fake.calls == 2


def test_disconnect_item(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.enqueue({"disconnect": True})
    with pytest.raises(openai.APIConnectionError) as excinfo:
        ask(client)
    assert not isinstance(excinfo.value, openai.APITimeoutError)
    assert ask(client) == "Answer to: What is two plus two?"


def test_latency(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.configure(latency=0.3)
    started = time.monotonic()
    ask(client)
    assert time.monotonic() - started >= 0.3

    fake.configure(latency=0)
    fake.enqueue({"latency": 0.5})
    started = time.monotonic()
    ask(client)
    assert time.monotonic() - started >= 0.5
    started = time.monotonic()
    ask(client)
    assert time.monotonic() - started < 0.5


def test_script_is_consumed_in_order_then_default(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.configure(answer="configured")
    fake.enqueue({"status": 500}, {"status": 429, "retry_after": 1}, {"latency": 0})

    outcomes: list[str] = []
    for _ in range(4):
        try:
            outcomes.append(str(ask(client, "hi")))
        except openai.APIStatusError as exc:
            outcomes.append(str(exc.status_code))

    assert outcomes == ["500", "429", "configured", "configured"]
    assert fake.calls == 4


def test_always_until_reset(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.configure(always={"status": 503})
    fake.enqueue({"status": 200})

    assert ask(client) == "Answer to: What is two plus two?"
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            ask(client)
    assert fake.calls == 4

    fake.reset()
    assert fake.calls == 0
    assert fake.requests == []
    assert ask(client) == "Answer to: What is two plus two?"
    assert fake.calls == 1


def test_invalid_items_are_rejected(fake: FakeLLM) -> None:
    with pytest.raises(ValueError, match="stauts"):
        fake.enqueue({"stauts": 500})
    with pytest.raises(ValueError, match="latency"):
        fake.configure(latency=-1)
    with pytest.raises(ValueError, match="status"):
        fake.configure(always={"status": 99})


def test_wait_for_calls(fake: FakeLLM, client: openai.OpenAI) -> None:
    assert fake.wait_for_calls(1, timeout=0.05) is False
    ask(client)
    assert fake.wait_for_calls(1, timeout=0.05) is True


def test_http_control_api(fake: FakeLLM, client: openai.OpenAI) -> None:
    assert control(fake, "POST", "configure", {"answer": "via http", "completion_tokens": 9}) == {
        "ok": True,
        "calls": 0,
        "in_flight": 0,
        "max_in_flight": 0,
    }
    fake.enqueue({"status": 500})

    with pytest.raises(openai.InternalServerError):
        ask(client)
    completion = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}]
    )
    assert completion.choices[0].message.content == "via http"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 9

    assert control(fake, "GET", "stats") == {
        "calls": 2,
        "in_flight": 0,
        "max_in_flight": 1,
    }
    received = fake.requests
    assert [r["messages"][0]["content"] for r in received] == ["What is two plus two?", "x"]

    with pytest.raises(urllib.error.HTTPError) as excinfo:
        control(fake, "POST", "configure", {"bogus": 1})
    assert excinfo.value.code == 400
    assert "bogus" in json.loads(excinfo.value.read())["error"]["message"]

    control(fake, "POST", "reset", {})
    assert control(fake, "GET", "stats")["calls"] == 0
    assert ask(client) == "Answer to: What is two plus two?"

    control(fake, "POST", "configure", {"latency": 0.2, "always": {"status": 400}})
    started = time.monotonic()
    with pytest.raises(openai.BadRequestError):
        ask(client)
    assert time.monotonic() - started >= 0.2
    control(fake, "POST", "configure", {"latency": None, "always": None})
    assert ask(client) == "Answer to: What is two plus two?"


def test_concurrent_slow_requests(fake: FakeLLM, client: openai.OpenAI) -> None:
    fake.configure(latency=0.5)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda i: ask(client, f"question {i}"), range(20)))
    elapsed = time.monotonic() - started

    assert answers == [f"Answer to: question {i}" for i in range(20)]
    assert elapsed < 3
    assert fake.calls == 20
    assert fake.max_in_flight == 20
    assert fake.in_flight == 0


def test_stop_returns_promptly_while_a_request_hangs() -> None:
    fake = FakeLLM().start()
    fake.configure(always={"hang": True})
    errors: list[BaseException] = []

    def call() -> None:
        with openai.OpenAI(
            base_url=fake.base_url, api_key="test", max_retries=0, timeout=30
        ) as client:
            try:
                ask(client)
            except openai.APIError as exc:
                errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert fake.wait_for_calls(1, timeout=5)
        started = time.monotonic()
        fake.stop()
        assert time.monotonic() - started < 2
    finally:
        fake.stop()
        thread.join(timeout=10)

    assert not thread.is_alive()
    assert len(errors) == 1
    # The connection was dropped by the server, the client did not time out.
    assert isinstance(errors[0], openai.APIConnectionError)
    assert not isinstance(errors[0], openai.APITimeoutError)


def test_streaming(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    content = ""
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            content += chunk.choices[0].delta.content
        if chunk.usage is not None:
            usage = chunk.usage
    assert content == "Answer to: stream me"
    assert usage is not None
    assert usage.total_tokens == 2 + 4


def test_raw_http_errors_and_keep_alive(fake: FakeLLM) -> None:
    connection = http.client.HTTPConnection(fake.host, fake.port, timeout=5)
    try:
        connection.request("POST", "/nope", body=b"some body that must be drained")
        response = connection.getresponse()
        assert response.status == 404
        assert json.loads(response.read())["error"]["code"] == "unknown_url"
        assert not response.will_close
        first_socket = connection.sock

        connection.request(
            "POST",
            "/v1/chat/completions",
            body=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        assert response.status == 400
        assert json.loads(response.read())["error"]["type"] == "invalid_request_error"

        body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "raw"}]})
        connection.request("POST", "/v1/chat/completions", body=body)
        response = connection.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Length") is not None
        payload = json.loads(response.read())
        assert payload["choices"][0]["message"]["content"] == "Answer to: raw"
        assert connection.sock is first_socket  # all three requests on one connection
    finally:
        connection.close()
    assert fake.calls == 2
    malformed, valid = fake.requests
    assert set(malformed) == {"_malformed", "_received_at"}
    assert valid["messages"] == [{"role": "user", "content": "raw"}]


def test_cli_runs_and_stops_on_sigterm() -> None:
    process = subprocess.Popen(  # noqa: S603 - fixed argv
        [sys.executable, "-m", "tests.fakes.llm_server", "--port", "0", "--latency", "0"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            assert selector.select(timeout=10), "server did not print its address"
        line = process.stdout.readline().strip()
        prefix = "fake LLM listening on "
        assert line.startswith(prefix)
        base_url = line.removeprefix(prefix)
        assert base_url.startswith("http://127.0.0.1:")
        assert base_url.endswith("/v1")

        with openai.OpenAI(base_url=base_url, api_key="test", max_retries=0, timeout=5) as c:
            assert ask(c, "cli") == "Answer to: cli"

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=5) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_keepalive_stall_responder_and_call_log() -> None:
    """The soak's modes: a responder picks each call's item; `keepalive` sends comment
    lines only, then the answer; `call_log` says when content went out and how the call ended."""
    picked: list[str] = []

    def responder(body: dict[str, Any]) -> dict[str, Any] | None:
        text = body["messages"][-1]["content"]
        picked.append(text)
        stall = {"keepalive": 1.2, "keepalive_interval": 0.5, "stream_interval": 0.05}
        return stall if text == "stall" else None

    with FakeLLM(responder=responder) as fake:
        connection = http.client.HTTPConnection(fake.host, fake.port, timeout=10)
        body = {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "stall"}]}
        connection.request("POST", "/v1/chat/completions", json.dumps(body))
        response = connection.getresponse()
        lines = [line.decode() for line in response.read().splitlines() if line]
        connection.close()
        with openai.OpenAI(base_url=fake.base_url, api_key="t", max_retries=0) as client:
            fake.enqueue({"status": 503})
            with pytest.raises(openai.InternalServerError):
                ask(client, "scripted")
            assert ask(client, "plain") == "Answer to: plain"
        # The client has the whole answer a moment before the handler notes its end.
        wait_until(lambda: fake.in_flight == 0, what="the calls' ends in the log")
        log = fake.call_log

    # The role chunk (no text), then comment lines only, then the answer.
    assert '"role": "assistant"' in lines[0] and lines[1:3] == [": keepalive"] * 2
    assert all(line.startswith("data: ") for line in lines[3:]) and lines[-1] == "data: [DONE]"
    assert picked == ["stall", "plain"]  # the script comes before the responder
    stall, scripted, plain = log
    assert stall["text"] == "stall" and stall["outcome"] == "answered"
    assert stall["content_at"] - stall["received_at"] >= 1.0  # two comments, 0.5 s apart
    assert scripted["status"] == 503 and scripted["outcome"] == "error"
    assert "content_at" not in scripted
    assert plain["status"] == 200 and plain["outcome"] == "answered"
    assert all(entry["ended_at"] >= entry["received_at"] for entry in log)
