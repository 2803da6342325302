"""The one place that decides whether a failed LLM call is worth retrying.

429, 5xx (also as an error event mid-stream), 409, timeouts and connection errors are
transient: retry with backoff, honouring Retry-After. Other 4xx (bad request, auth, permission,
content policy) are permanent: the job fails at once with a message a person understands.
Secrets and raw bodies never reach the message.
"""

from __future__ import annotations

from dataclasses import dataclass

import openai

from questions.backoff import JOB_BACKOFF

BACKOFF_BASE_SECONDS = JOB_BACKOFF.base
BACKOFF_CAP_SECONDS = JOB_BACKOFF.cap
_MAX_RETRY_AFTER_SECONDS = 3600.0

# The `type` of an error event sent mid-stream that means the provider failed, not the request.
_STREAM_SERVER_ERRORS = frozenset({"server_error", "api_error", "overloaded_error", "timeout"})

_PERMANENT_MESSAGES: dict[int, str] = {
    400: "The language model rejected the question as invalid.",
    401: "The service could not authenticate with the language model provider.",
    403: "The language model provider refused the request (permission or content policy).",
    404: "The configured language model does not exist at the provider.",
    413: "The question is too long for the language model.",
    422: "The language model could not process the question.",
}


@dataclass(frozen=True, slots=True)
class LLMFailure:
    retryable: bool
    reason: str  # short, for metrics labels and logs: "rate_limited", "server_error", ...
    message: str  # for the person who asked
    retry_after: float | None = None


def classify_llm_error(exc: BaseException) -> LLMFailure:
    if isinstance(exc, openai.APITimeoutError):
        return LLMFailure(True, "timeout", "The language model did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return LLMFailure(True, "connection_error", "The language model could not be reached.")
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return LLMFailure(
                True,
                "rate_limited",
                "The language model is rate limiting requests.",
                _retry_after(exc),
            )
        if status >= 500 or status in (408, 409):
            return LLMFailure(
                True,
                "server_error",
                f"The language model provider had an error (HTTP {status}).",
                _retry_after(exc),
            )
        if status == 400 and getattr(exc, "code", None) == "context_length_exceeded":
            # Another model (a longer context) may take it: a reason to fall back.
            return LLMFailure(
                False, "context_length", "The question is too long for the language model."
            )
        message = _PERMANENT_MESSAGES.get(
            status, f"The language model refused the request (HTTP {status})."
        )
        return LLMFailure(False, f"http_{status}", message)
    if isinstance(exc, openai.APIError) and exc.type in _STREAM_SERVER_ERRORS:
        # An error event in the middle of a streamed answer (the status line already said 200):
        # the provider's fault, as a 5xx would have been.
        return LLMFailure(
            True, "server_error", "The language model provider had an error while answering."
        )
    if isinstance(exc, openai.ContentFilterFinishReasonError):
        return LLMFailure(False, "content_filter", "The answer was withheld by a content filter.")
    if isinstance(exc, openai.OpenAIError):
        return LLMFailure(False, "client_error", "The language model call failed.")
    return LLMFailure(True, "unexpected", "An unexpected error occurred while asking the model.")


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    if raw is None:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        return None  # An HTTP-date: rare from LLM providers; fall back to our own backoff.
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER_SECONDS)


def backoff_delay(attempt: int, retry_after: float | None = None) -> float:
    """The job backoff policy's delay (one policy: `questions.backoff.JOB_BACKOFF`)."""
    return JOB_BACKOFF.delay(attempt, retry_after)
