"""The one LLM client: OpenAI (or any OpenAI-compatible server), or the offline demo model.

`get_llm_client()` picks from settings: with `OPENAI_API_KEY` or `OPENAI_BASE_URL` set, the real
`openai` client (asynchronous, streaming); with neither, `DemoLLMClient`, whose answers say
plainly they are not from an LLM (like Django's console e-mail backend). Retries are the worker's
job, so the client never retries.

Both stream: each piece of text goes to `on_text` as it arrives and into `progress`, so a call cut
off (Stop, a timeout) still leaves the text written so far and an estimate of the tokens it used.

Two clocks bound a call (`OpenAIClient`): `OPENAI_TIMEOUT` is the longest time without content —
SSE comment lines (`: keepalive`, as some OpenAI-compatible proxies send while a model is busy) and
chunks without text do not count, so they cannot hold a call open — and `OPENAI_CALL_DEADLINE` the
longest a call may take in all. Either raises `openai.APITimeoutError` (a retryable timeout).
httpx's own timeout is per read, so it alone bounds neither.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
import httpx2
import openai
from django.conf import settings
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from config.env import FallbackModel
from questions.llm import transport
from questions.metrics import LLM_LATENCY, LLM_TOKENS

DEMO_MODEL = "demo (offline, not a real LLM)"
DEFAULT_BASE_URL = "https://api.openai.com/v1"  # the SDK's, when OPENAI_BASE_URL is not set

tracer = trace.get_tracer(__name__)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(slots=True)
class Progress:
    """What the model has sent so far; read after a call that was cut off."""

    parts: list[str] = field(default_factory=list)
    model: str = ""
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    def partial(self, question: str, default_model: str) -> Completion:
        """The text so far; tokens as reported, else estimated (≈ 4 characters a token, one a
        streamed piece), since a provider reports usage only in its last chunk."""
        text = "".join(self.parts)
        return Completion(
            text=text,
            model=self.model or default_model,
            prompt_tokens=self.prompt_tokens
            if self.prompt_tokens is not None
            else estimate_tokens(question),
            completion_tokens=self.completion_tokens
            if self.completion_tokens is not None
            else len(self.parts),
        )


def estimate_tokens(text: str) -> int:
    return max(len(text) // 4, 1)


TextSink = Callable[[str], None]


class LLMClient(Protocol):
    model: str

    async def complete(
        self, question: str, *, user: str, progress: Progress, on_text: TextSink
    ) -> Completion: ...


class OpenAIClient:
    """Streamed Chat Completions on the wire the official client speaks (`base_url` reaches
    Ollama, vLLM, LiteLLM...). One client per event loop: its connections
    (`transport.LLMConnections`, aiohttp) are shared by every call, and `aclose()` closes them
    before the loop ends. The request is the one the SDK sends and its errors are the SDK's own
    classes (so `classify_llm_error` reads them), but the stream is parsed here, taking only the
    text, the model and the usage: the SDK's HTTP stack and per-chunk models cost more CPU than
    the rest of a job at hundreds of calls in flight (questions/llm/transport.py)."""

    system = "openai"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        model: str,
        timeout: float,
        deadline: float | None = None,
    ) -> None:
        self.model = model
        # Longest time without content, and longest call in all (see the module docstring).
        self._idle_timeout = timeout
        self._deadline = max(deadline if deadline is not None else timeout, timeout)
        base = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self._url = f"{base}/chat/completions"
        self._headers = {
            # A local OpenAI-compatible server needs no key (the SDK insists on one).
            "Authorization": f"Bearer {api_key or 'not-needed'}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream",
            "User-Agent": f"AsyncOpenAI/Python {openai.__version__}",
        }
        limits = openai.DEFAULT_CONNECTION_LIMITS
        self.connections = transport.LLMConnections(
            self._url,
            limit=limits.max_connections or 0,
            keepalive=limits.keepalive_expiry or 0.0,
        )

    async def aclose(self) -> None:
        """Close its connections (before the event loop that used them ends)."""
        await self.connections.aclose()

    def _body(self, question: str, user: str) -> bytes:
        return json.dumps(
            {
                "model": self.model,
                "messages": [
                    {"role": "system", "content": settings.OPENAI_SYSTEM_PROMPT},
                    {"role": "user", "content": question},
                ],
                "max_completion_tokens": settings.OPENAI_MAX_COMPLETION_TOKENS,
                "user": user,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()

    async def complete(
        self, question: str, *, user: str, progress: Progress, on_text: TextSink
    ) -> Completion:
        with tracer.start_as_current_span(f"chat {self.model}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", self.system)
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", self.model)
            started = time.perf_counter()
            try:
                await self._stream(self._body(question, user), progress, on_text)
            except BaseException as exc:
                LLM_LATENCY.labels(outcome="error").observe(time.perf_counter() - started)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            LLM_LATENCY.labels(outcome="ok").observe(time.perf_counter() - started)
            completion = progress.partial(question, self.model)
            span.set_attribute("gen_ai.response.model", completion.model)
            span.set_attribute("gen_ai.usage.input_tokens", completion.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion.completion_tokens)
        LLM_TOKENS.labels(kind="prompt").inc(completion.prompt_tokens)
        LLM_TOKENS.labels(kind="completion").inc(completion.completion_tokens)
        return completion

    async def _stream(self, body: bytes, progress: Progress, on_text: TextSink) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self._deadline
        try:
            # One timer for both clocks: it fires at the sooner of "OPENAI_TIMEOUT after the last
            # content" and "OPENAI_CALL_DEADLINE after the start", and is moved on by content
            # only. asyncio.timeout_at cancels whatever read is waiting; TimeoutError comes out.
            async with (
                asyncio.timeout_at(min(started + self._idle_timeout, deadline)) as timer,
                # Leaving the block before the end (also when the task is cancelled) closes
                # the connection: the provider stops generating.
                self.connections.post(self._url, body, self._headers) as response,
            ):
                if response.status >= 400:
                    raise status_error(self._request(), response, await response.read())
                # Read to the end (past "[DONE]"), so the connection goes back to the pool.
                async for line in response.content:
                    if (
                        line.startswith(b"data:")
                        and (data := line[5:].strip()) != b"[DONE]"
                        and _take(json.loads(data), progress, on_text)
                    ):
                        timer.reschedule(min(loop.time() + self._idle_timeout, deadline))
        except TimeoutError as exc:
            raise openai.APITimeoutError(request=self._request()) from exc
        except aiohttp.ClientError as exc:  # refused, reset, cut mid-stream, a bad status line
            raise openai.APIConnectionError(request=self._request()) from exc

    def _request(self) -> httpx2.Request:
        """The request, as the SDK's errors carry it (built only for an error)."""
        return httpx2.Request("POST", self._url)


_STATUS_ERRORS: dict[int, type[openai.APIStatusError]] = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    409: openai.ConflictError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def status_error(
    request: httpx2.Request, raw: aiohttp.ClientResponse, content: bytes
) -> openai.APIStatusError:
    """The SDK's error for an HTTP error status, built from its public classes as the SDK
    builds it: the message "Error code: N - <error.message>", `body` the JSON's "error" object
    (else the JSON, else the text), `response` an httpx2 response with its status, headers and
    body (Retry-After and x-request-id are read from it)."""
    response = httpx2.Response(
        raw.status, headers=list(raw.headers.items()), content=content, request=request
    )
    message = f"Error code: {response.status_code}"
    text = response.text.strip()
    body: object = text
    with contextlib.suppress(ValueError):
        body = json.loads(text)
    if isinstance(body, dict):
        body = body.get("error", body)
        detail = body.get("message") if isinstance(body, dict) else None
        if isinstance(detail, str) and detail:
            message += f" - {detail}"
    if response.status_code >= 500:
        kind: type[openai.APIStatusError] = openai.InternalServerError
    else:
        kind = _STATUS_ERRORS.get(response.status_code, openai.APIStatusError)
    return kind(message, response=response, body=body)


def _take(chunk: dict[str, Any], progress: Progress, on_text: TextSink) -> bool:
    """Take one chunk into `progress`; True if it carried content (text, or the usage that
    ends a stream), which is what moves the call's no-content timer on."""
    if "error" in chunk:
        # An error sent mid-stream (the status line said 200): its body, for classify_llm_error.
        error = chunk["error"]
        raise openai.APIError(
            str(error.get("message") if isinstance(error, dict) else error)[:200],
            request=None,  # type: ignore[arg-type]
            body=error,
        )
    content = False
    usage = chunk.get("usage")
    if usage:
        progress.prompt_tokens = usage.get("prompt_tokens")
        progress.completion_tokens = usage.get("completion_tokens")
        content = True
    if chunk.get("model"):
        progress.model = chunk["model"]
    choices = chunk.get("choices")
    if choices:
        text = (choices[0].get("delta") or {}).get("content")
        if text:
            progress.parts.append(text)
            on_text(text)
            content = True
    return content


class DemoLLMClient:
    """Offline stand-in used when no LLM is configured: no network, no cost, says so. It streams
    word by word, slowly enough that `make run` shows an answer being written."""

    model = DEMO_MODEL
    word_delay = 0.04

    async def complete(
        self, question: str, *, user: str, progress: Progress, on_text: TextSink
    ) -> Completion:
        with tracer.start_as_current_span("chat demo", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", "demo")
            span.set_attribute("gen_ai.request.model", self.model)
            text = (
                "**This answer comes from the offline demo model, not from a real LLM.** "
                "Set `OPENAI_API_KEY` (or `OPENAI_BASE_URL` for an OpenAI-compatible server such "
                "as Ollama or vLLM) to get real answers.\n\n"
                f"You asked {len(question.split())} words: _{question[:200]}_"
            )
            progress.model = self.model
            for index, word in enumerate(text.split(" ")):
                piece = word if index == 0 else f" {word}"
                progress.parts.append(piece)
                on_text(piece)
                await asyncio.sleep(self.word_delay)
            progress.prompt_tokens = len(question.split())
            progress.completion_tokens = len(text.split())
            span.set_attribute("gen_ai.usage.input_tokens", progress.prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", progress.completion_tokens)
        LLM_TOKENS.labels(kind="prompt").inc(progress.prompt_tokens)
        LLM_TOKENS.labels(kind="completion").inc(progress.completion_tokens)
        return progress.partial(question, self.model)


_client_lock = threading.Lock()
_clients: dict[int, LLMClient] = {}
_client_loop: asyncio.AbstractEventLoop | None = None


def get_llm_client(level: int = 0) -> LLMClient:
    """The client of the running event loop for `level` of the model chain (0: the primary
    model, n: the n-th entry of OPENAI_FALLBACK_MODELS), built once from settings: its
    connection pool belongs to that loop (a worker has one; a test may start several one after
    the other)."""
    global _client_loop
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    with _client_lock:
        if loop is not None and loop is not _client_loop:
            _clients.clear()
            _client_loop = loop
        client = _clients.get(level)
        if client is None:
            client = _clients[level] = _build_client(level)
        return client


async def aclose_llm_clients() -> None:
    """Close the running event loop's clients (and their connections) and forget them: the
    worker calls it before its loop ends."""
    global _client_loop
    loop = asyncio.get_running_loop()
    with _client_lock:
        if loop is not _client_loop:
            return
        clients = list(_clients.values())
        _clients.clear()
        _client_loop = None
    for client in clients:
        if isinstance(client, OpenAIClient):
            await client.aclose()


def llm_chain_models() -> list[str]:
    """The models a job may ask, in order: the primary, then OPENAI_FALLBACK_MODELS (none for
    the offline demo model)."""
    if llm_is_demo():
        return [DEMO_MODEL]
    return [settings.OPENAI_MODEL, *(entry.model for entry in settings.OPENAI_FALLBACK_MODELS)]


def reset_llm_client() -> None:
    """Forget the clients so the next call rebuilds them from (changed) settings."""
    global _client_loop
    with _client_lock:
        _clients.clear()
        _client_loop = None


def llm_is_demo() -> bool:
    return not (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


def _build_client(level: int) -> LLMClient:
    if llm_is_demo():
        return DemoLLMClient()
    api_key, base_url, model = (
        settings.OPENAI_API_KEY,
        settings.OPENAI_BASE_URL,
        settings.OPENAI_MODEL,
    )
    if level:
        entry: FallbackModel = settings.OPENAI_FALLBACK_MODELS[level - 1]
        model = entry.model
        if entry.base_url is not None:  # another server, with its own key (else the primary's)
            api_key, base_url = entry.api_key, entry.base_url
    return OpenAIClient(
        api_key=api_key,
        base_url=base_url,
        model=model,
        timeout=settings.OPENAI_TIMEOUT,
        deadline=settings.OPENAI_CALL_DEADLINE,
    )
