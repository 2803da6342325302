"""Model fallback (OPENAI_FALLBACK_MODELS): when a job moves to the next model of the chain.

A job asks the model of its `fallback_level` (0: the primary). It moves on when that model
failed after its retries with a server error, a timeout or a broken connection, refused the
question for its context length (another model may have a longer one), or kept it rate limited
longer than OPENAI_FALLBACK_RATE_LIMIT_WAIT. A request no model would accept (400 for a bad
request, 401, 403, ...) does not move on: it fails. Each model gets `--max-attempts` attempts
of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings

from questions.llm.client import llm_chain_models
from questions.llm.errors import LLMFailure

if TYPE_CHECKING:
    from questions.services import ClaimedQuestion

# Failures another model may not have: the provider's, not the question's.
FALL_BACK_AFTER_RETRIES = frozenset({"server_error", "timeout", "connection_error"})
FALL_BACK_AT_ONCE = frozenset({"context_length"})


def fallback_level(question: ClaimedQuestion) -> int:
    """The chain entry the job asks now (the last one if the chain was shortened since)."""
    return min(question.fallback_level, len(llm_chain_models()) - 1)


def attempts_on_model(question: ClaimedQuestion) -> int:
    """The attempts spent on the job's current model, this one included."""
    return question.attempts - question.fallback_after_attempts


def may_fall_back(question: ClaimedQuestion, failure: LLMFailure, *, retries_left: bool) -> bool:
    """Whether this failure moves the job to the next model rather than retrying or failing."""
    if fallback_level(question) + 1 >= len(llm_chain_models()):
        return False
    if failure.reason in FALL_BACK_AT_ONCE:
        return True
    if failure.reason == "rate_limited":
        since = question.fallback_at or question.created_at
        waited = (question.db_now - since).total_seconds()
        return waited > settings.OPENAI_FALLBACK_RATE_LIMIT_WAIT
    return failure.reason in FALL_BACK_AFTER_RETRIES and not retries_left
