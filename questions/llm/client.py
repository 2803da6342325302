"""The one LLM client: OpenAI (or any OpenAI-compatible server), or the offline demo model.

`get_llm_client()` picks from settings: with `OPENAI_API_KEY` or `OPENAI_BASE_URL` set, the real
`openai` client; with neither, `DemoLLMClient`, whose answers say plainly they are not from an LLM
(like Django's console e-mail backend). Retries are the worker's job, so the client never retries.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

import openai
from django.conf import settings
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from questions.metrics import LLM_LATENCY, LLM_TOKENS

DEMO_MODEL = "demo (offline, not a real LLM)"

tracer = trace.get_tracer(__name__)


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


class LLMClient(Protocol):
    model: str

    def complete(self, question: str) -> Completion: ...


class OpenAIClient:
    """Chat Completions through the official client; `base_url` reaches Ollama, vLLM, etc."""

    system = "openai"

    def __init__(
        self, *, api_key: str | None, base_url: str | None, model: str, timeout: float
    ) -> None:
        self.model = model
        self._client = openai.OpenAI(
            # A local OpenAI-compatible server needs no key, but the client insists on one.
            api_key=api_key or "not-needed",
            base_url=base_url,
            timeout=timeout,
            max_retries=0,
        )

    def complete(self, question: str) -> Completion:
        with tracer.start_as_current_span(f"chat {self.model}", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", self.system)
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.request.model", self.model)
            started = time.perf_counter()
            try:
                response = self._client.chat.completions.create(
                    model=self.model,
                    messages=[
                        {"role": "system", "content": settings.OPENAI_SYSTEM_PROMPT},
                        {"role": "user", "content": question},
                    ],
                )
            except Exception as exc:
                LLM_LATENCY.labels(outcome="error").observe(time.perf_counter() - started)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                span.set_attribute("error.type", type(exc).__name__)
                raise
            LLM_LATENCY.labels(outcome="ok").observe(time.perf_counter() - started)
            usage = response.usage
            prompt_tokens = usage.prompt_tokens if usage else 0
            completion_tokens = usage.completion_tokens if usage else 0
            span.set_attribute("gen_ai.response.model", response.model)
            span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
        LLM_TOKENS.labels(kind="prompt").inc(prompt_tokens)
        LLM_TOKENS.labels(kind="completion").inc(completion_tokens)
        text = response.choices[0].message.content if response.choices else None
        return Completion(
            text=text or "",
            model=response.model or self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


class DemoLLMClient:
    """Offline stand-in used when no LLM is configured: no network, no cost, says so."""

    model = DEMO_MODEL

    def complete(self, question: str) -> Completion:
        with tracer.start_as_current_span("chat demo", kind=SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.system", "demo")
            span.set_attribute("gen_ai.request.model", self.model)
            text = (
                "**This answer comes from the offline demo model, not from a real LLM.** "
                "Set `OPENAI_API_KEY` (or `OPENAI_BASE_URL` for an OpenAI-compatible server such "
                "as Ollama or vLLM) to get real answers.\n\n"
                f"You asked {len(question.split())} words: _{question[:200]}_"
            )
            prompt_tokens = len(question.split())
            completion_tokens = len(text.split())
            span.set_attribute("gen_ai.usage.input_tokens", prompt_tokens)
            span.set_attribute("gen_ai.usage.output_tokens", completion_tokens)
        LLM_TOKENS.labels(kind="prompt").inc(prompt_tokens)
        LLM_TOKENS.labels(kind="completion").inc(completion_tokens)
        return Completion(
            text=text,
            model=self.model,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )


_client_lock = threading.Lock()
_client: LLMClient | None = None


def get_llm_client() -> LLMClient:
    """The process-wide client, built once from settings (thread-safe)."""
    global _client
    if _client is None:
        with _client_lock:
            if _client is None:
                _client = _build_client()
    return _client


def reset_llm_client() -> None:
    """Forget the client so the next call rebuilds it from (changed) settings."""
    global _client
    with _client_lock:
        _client = None


def llm_is_demo() -> bool:
    return not (settings.OPENAI_API_KEY or settings.OPENAI_BASE_URL)


def _build_client() -> LLMClient:
    if llm_is_demo():
        return DemoLLMClient()
    return OpenAIClient(
        api_key=settings.OPENAI_API_KEY,
        base_url=settings.OPENAI_BASE_URL,
        model=settings.OPENAI_MODEL,
        timeout=settings.OPENAI_TIMEOUT,
    )
