"""Background work, declared with Django's Tasks API and run by `run_sqs_worker`."""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from django.conf import settings
from django.tasks import task
from django.tasks.base import TaskContext
from django.utils import timezone

from questions import metrics
from questions.llm.client import get_llm_client
from questions.llm.errors import backoff_delay, classify_llm_error
from questions.models import Question
from questions.services import (
    question_claim,
    question_fail,
    question_release_for_retry,
    question_succeed,
)
from questions.sqs.exceptions import DeadLetter, RetryLater

logger = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 5


@task(takes_context=True)
def answer_question(context: TaskContext, job_id: str) -> str:
    """Ask the LLM one question and store the outcome. Returns what happened.

    Safe under SQS's at-least-once delivery: the job is claimed atomically first, so a second
    delivery of a running or finished job never calls the LLM again.
    """
    max_attempts = getattr(context, "max_attempts", DEFAULT_MAX_ATTEMPTS)
    try:
        question_id = uuid.UUID(job_id)
    except (TypeError, ValueError):
        raise DeadLetter(f"job id {job_id!r} is not a UUID") from None

    lease = settings.OPENAI_TIMEOUT + settings.QUESTIONS_CLAIM_MARGIN
    claim = question_claim(question_id=question_id, lease_seconds=lease)
    question = claim.question
    if question is None:
        return _not_claimed(claim.current, job_id)

    llm = get_llm_client()
    if question.attempts > max_attempts:
        # Claimed again after workers died mid-call more often than allowed (a question that
        # crashes the worker, say): stop here instead of paying for yet another call.
        message = f"Gave up after {max_attempts} attempts: the worker stopped during the call."
        question_fail(question=question, error=message, model=llm.model)
        logger.warning("job failed: too many attempts", extra={"attempt": question.attempts})
        return Question.Status.FAILED
    try:
        completion = llm.complete(question.text)
    except Exception as exc:
        failure = classify_llm_error(exc)
        log_extra = {"reason": failure.reason, "attempt": question.attempts}
        if failure.retryable and question.attempts < max_attempts:
            delay = backoff_delay(question.attempts, failure.retry_after)
            question_release_for_retry(
                question=question,
                error=failure.message,
                due_at=timezone.now() + timedelta(seconds=delay),
            )
            metrics.JOB_RETRIES.labels(reason=failure.reason).inc()
            logger.warning("LLM call failed, will retry", extra={**log_extra, "delay": delay})
            raise RetryLater(delay, failure.reason) from exc
        if failure.retryable:
            message = f"{failure.message} Gave up after {question.attempts} attempts."
        else:
            message = failure.message
        question_fail(question=question, error=message, model=llm.model)
        logger.warning("job failed", extra=log_extra)
        return Question.Status.FAILED
    question_succeed(question=question, completion=completion)
    logger.info("job succeeded", extra={"attempt": question.attempts})
    return Question.Status.SUCCEEDED


def _not_claimed(current: Question | None, job_id: str) -> str:
    if current is None:
        raise DeadLetter(f"no job with id {job_id}")
    if current.is_finished:
        logger.info("duplicate delivery of a finished job; not asking again")
        return "duplicate"
    # Running under another worker's live claim: look again once that claim could have expired.
    expires = current.claim_expires_at or timezone.now()
    delay = max((expires - timezone.now()).total_seconds(), 0.0) + 1.0
    raise RetryLater(delay, "running under another worker's claim")
