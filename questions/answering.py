"""`question_answer`: one job's run, with the attempt, retry and give-up policy.

Safe under SQS's at-least-once delivery: the job is claimed atomically first, so a second delivery
of a running or finished job never calls the LLM again. From its claim to its end the job is watched
(`JobRuntime.watching`, passed in by whoever runs it: the worker): its lease is extended and Stop
reaches it whatever it waits on, the provider's rate limit included; the claim is checked again
right before paying, so a job another worker took meanwhile is not paid for twice. A paid answer is
never paid for twice: it is stashed in Redis until the row holds it, the store is retried on a fresh
connection, a job claimed again with a stashed answer is finished from it, and an answer whose claim
was lost keeps its stash. A provider 429 never uses up an attempt. The run speaks to the queue only
through `RetryLater` / `DeadLetter`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, NoReturn

from django.conf import settings
from django.db.utils import DataError, InterfaceError, OperationalError
from opentelemetry import trace

from config.logging import bind_job_id
from questions import metrics
from questions.answer_stream import LiveAnswer, stash_get_call
from questions.attribution import provider_user_id
from questions.backoff import CONNECTION_BACKOFF, JOB_BACKOFF
from questions.fallback import attempts_on_model, fallback_level, may_fall_back
from questions.job_cache import job_cache_write
from questions.ledger import call_usage, llm_call_record
from questions.llm import ratelimit
from questions.llm.client import Completion, LLMClient, Progress, get_llm_client
from questions.llm.errors import LLMFailure, classify_llm_error
from questions.models import LLMCall, Question
from questions.pricing import call_tokens_bound
from questions.runtime import JobRuntime, JobStopped, JobWatch, WorkerStopping
from questions.services import (
    Claim,
    PaidAnswer,
    question_claim_renew,
    question_close_cancelled,
    question_fail,
    question_fall_back,
    question_release_for_retry,
    question_store_cancelled,
    questions_claim,
    questions_succeed,
)
from questions.sqs.exceptions import DeadLetter, RetryLater

if TYPE_CHECKING:
    from questions.services import ClaimedQuestion

logger = logging.getLogger("questions.tasks")

Status = Question.Status
STORE_TRIES = 6
# What `question_answer` returns when this attempt's claim is gone (another worker has the job).
LOST = "lost"
# How long every worker pauses after a 429 that names no Retry-After.
PAUSE_WITHOUT_RETRY_AFTER = 2.0
# How soon a job moved to the next model of the chain is delivered again.
FALLBACK_DELAY = 1.0


async def question_answer(*, job_id: str, max_attempts: int, runtime: JobRuntime) -> str:
    """Claim the job, ask the LLM (or reuse a stashed answer), store the outcome; returns the
    job's final status ("duplicate" for a finished job delivered again). Raises `RetryLater` or
    `DeadLetter` for the queue. `runtime` runs its database work and watches it (the
    worker's)."""
    try:
        question_id = uuid.UUID(job_id)
    except (TypeError, ValueError):
        raise DeadLetter(f"job id {job_id!r} is not a UUID") from None
    with bind_job_id(job_id):
        trace.get_current_span().set_attribute("questions.job_id", job_id)
        lease = settings.OPENAI_TIMEOUT + settings.QUESTIONS_CLAIM_MARGIN
        # Before the claim, so that the lease surely started after it.
        claiming_at = time.monotonic()
        claim = await _claimer(runtime, lease)(question_id)
        if claim.question is None:
            return _not_claimed(claim, job_id)
        question = claim.question
        llm = get_llm_client(fallback_level(question))
        live = LiveAnswer(question.pk)
        # Leased and stoppable from the claim to the end, whatever the job waits on.
        with runtime.watching(question.pk, lease) as watch:
            if attempts_on_model(question) > max_attempts:
                # Claimed again after workers died mid-call more often than allowed (a question
                # that crashes the worker, say): stop here instead of paying for another call.
                error = (
                    f"Gave up after {max_attempts} attempts: the worker stopped during the call."
                )
                logger.warning(
                    "job failed: too many attempts", extra={"attempt": question.attempts}
                )
                return await _fail(runtime, question, live, error, llm.model)
            stashed = await stash_get_call(question.pk) if question.attempts > 1 else None
            if stashed is not None:
                logger.info("reusing the answer stashed by an earlier attempt; no new LLM call")
                completion, call_id = stashed
                return await _store(runtime, question, live, completion, call_id)
            return await _call(
                runtime, question, live, llm, max_attempts, lease, watch, claiming_at
            )


async def _call(
    runtime: JobRuntime,
    question: ClaimedQuestion,
    live: LiveAnswer,
    llm: LLMClient,
    max_attempts: int,
    lease: float,
    watch: JobWatch,
    claiming_at: float,
) -> str:
    live.start(question.attempts)
    # 1. The provider's rate limit: a 429's pause can outlast the lease; the watch keeps the
    #    lease, and Stop ends the wait without a call; so does the worker's stop (handed back).
    try:
        await watch.stoppable(
            ratelimit.acquire(llm.model, call_tokens_bound(question=question.text)),
            paying=False,
        )
    except JobStopped:
        return await _stopped_before_call(runtime, question, live)
    except WorkerStopping:
        await _hand_back(runtime, question, live)
    # 2. The claim again, right before paying (fenced on this attempt): a job another worker
    #    claimed, or Stop cancelled, meanwhile is not paid for here. Within half a lease of the
    #    claim it cannot have lapsed (no other worker can hold it), and a Stop is cut off within
    #    CANCEL_POLL_SECONDS anyway: the usual job, which did not wait, is spared the query.
    if time.monotonic() - claiming_at >= lease / 2 and not await runtime.run_db(
        question_claim_renew, question=question, lease_seconds=lease
    ):
        return await _claim_gone_before_call(runtime, question, live)
    # 3. The call. Stop cuts it off, keeping the partial answer. Every way out of it below
    #    follows a call the provider may bill: each writes the call's ledger row.
    progress = Progress()
    call_id = uuid.uuid4()  # its ledger row's id, whatever the outcome
    try:
        completion = await watch.stoppable(
            llm.complete(
                question.text,
                user=provider_user_id(user_id=question.owner_id),
                progress=progress,
                on_text=live.add,
            )
        )
    except JobStopped:
        logger.info("job cancelled during the LLM call; keeping the partial answer")
        partial = progress.partial(question.text, llm.model)
        if not await runtime.run_db(
            question_store_cancelled, question=question, completion=partial, call_id=call_id
        ):
            return await _lost(question, live)  # its ledger row is written all the same
        await live.finish(Status.CANCELLED)
        return Status.CANCELLED
    except WorkerStopping:  # stopping before the call started: nothing was paid
        await _hand_back(runtime, question, live)
    except asyncio.CancelledError:
        # The worker itself is stopping: the call was paid all the same.
        await _record_call(runtime, call_id, question, llm, progress, LLMCall.Outcome.INTERRUPTED)
        raise
    except Exception as exc:
        return await _call_failed(
            runtime, question, live, llm, exc, max_attempts, progress, call_id
        )
    # 4. The store (still watched: the lease holds while PostgreSQL is retried), the answer
    #    stashed first (with the rest of its text for watchers) so a failed store never pays twice.
    await live.settle(question.attempts, completion, call_id=call_id)
    return await _store(runtime, question, live, completion, call_id)


async def _record_call(
    runtime: JobRuntime,
    call_id: uuid.UUID,
    question: Question,
    llm: LLMClient,
    progress: Progress,
    outcome: str,
) -> None:
    """The ledger row of a call that brought no answer, at what it used so far. Shielded: a
    worker stopping mid-write still writes it (as far as the process lives)."""
    usage = call_usage(progress=progress, question=question.text, model=llm.model)
    write = runtime.run_db(
        llm_call_record, call_id=call_id, question=question, completion=usage, outcome=outcome
    )
    try:
        await asyncio.shield(write)
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("could not write the ledger row of an LLM call")


async def _stopped_before_call(runtime: JobRuntime, question: Question, live: LiveAnswer) -> str:
    logger.info("job cancelled while waiting for the provider; no call made")
    if not await runtime.run_db(question_close_cancelled, question=question):
        return await _lost(question, live)
    await live.finish(Status.CANCELLED)
    return Status.CANCELLED


async def _hand_back(runtime: JobRuntime, question: Question, live: LiveAnswer) -> NoReturn:
    """The worker is stopping and this job has not paid: back to `queued` with its attempt given
    back, its message visible again at once, for another worker (a rolling restart is not held
    by a provider pause)."""
    logger.info("worker stopping: job handed back before its call")
    await _release(runtime, question, live, "", 0.0, count_attempt=False)
    raise RetryLater(0.0, "worker stopping")


async def _claim_gone_before_call(runtime: JobRuntime, question: Question, live: LiveAnswer) -> str:
    """The claim check before the call failed: Stop came between two polls, or the job was
    re-queued (a lapsed lease) and perhaps claimed by another worker."""
    if await runtime.run_db(question_close_cancelled, question=question):
        logger.info("job cancelled while waiting for the provider; no call made")
        await live.finish(Status.CANCELLED)
        return Status.CANCELLED
    logger.warning(
        "lost the claim while waiting; not calling", extra={"attempt": question.attempts}
    )
    await live.leave()
    return LOST


async def _lost(question: Question, live: LiveAnswer) -> str:
    """This attempt's claim is gone (another worker runs the job now): no `end` for watchers,
    and a stashed answer is kept for whoever finishes the job (it is paid for)."""
    await live.leave()
    return LOST


async def _call_failed(
    runtime: JobRuntime,
    question: ClaimedQuestion,
    live: LiveAnswer,
    llm: LLMClient,
    exc: Exception,
    max_attempts: int,
    progress: Progress,
    call_id: uuid.UUID,
) -> str:
    failure = classify_llm_error(exc)
    log_extra = {"reason": failure.reason, "attempt": question.attempts}
    outcome = LLMCall.Outcome
    if failure.reason == "rate_limited":
        await _record_call(runtime, call_id, question, llm, progress, outcome.RATE_LIMITED)
        # The provider's limit, not the job's fault: pause every call, keep the attempt.
        await ratelimit.penalize(llm.model, failure.retry_after or PAUSE_WITHOUT_RETRY_AFTER)
        if may_fall_back(question, failure, retries_left=True):
            await _fall_back(runtime, question, live, failure, count_attempt=False)
        waited = (question.db_now - question.created_at).total_seconds()
        if waited > settings.QUESTIONS_MAX_QUEUE_SECONDS:
            error = (
                f"{failure.message} Gave up after waiting {int(waited)} s for the provider's "
                "rate limit."
            )
            logger.warning("job failed: rate limited for too long", extra=log_extra)
            return await _fail(runtime, question, live, error, llm.model)
        delay = JOB_BACKOFF.delay(1, failure.retry_after)
        await _release(runtime, question, live, failure.message, delay, count_attempt=False)
        metrics.JOB_RETRIES.labels(reason=failure.reason).inc()
        logger.warning("rate limited, will retry", extra={**log_extra, "delay": delay})
        raise RetryLater(delay, failure.reason) from exc
    retries_left = failure.retryable and attempts_on_model(question) < max_attempts
    if may_fall_back(question, failure, retries_left=retries_left):
        await _record_call(runtime, call_id, question, llm, progress, outcome.FELL_BACK)
        await _fall_back(runtime, question, live, failure, count_attempt=True)
    if retries_left:
        await _record_call(runtime, call_id, question, llm, progress, outcome.RETRIED)
        delay = JOB_BACKOFF.delay(question.attempts, failure.retry_after)
        await _release(runtime, question, live, failure.message, delay, count_attempt=True)
        metrics.JOB_RETRIES.labels(reason=failure.reason).inc()
        logger.warning("LLM call failed, will retry", extra={**log_extra, "delay": delay})
        raise RetryLater(delay, failure.reason) from exc
    await _record_call(runtime, call_id, question, llm, progress, outcome.FAILED)
    error = failure.message
    if failure.retryable:
        error = f"{failure.message} Gave up after {attempts_on_model(question)} attempts."
    logger.warning("job failed", extra=log_extra)
    return await _fail(runtime, question, live, error, llm.model)


async def _fall_back(
    runtime: JobRuntime,
    question: Question,
    live: LiveAnswer,
    failure: LLMFailure,
    *,
    count_attempt: bool,
) -> NoReturn:
    """The job goes back on the queue for the next model of the chain, at once."""
    await runtime.run_db(
        question_fall_back,
        question=question,
        error=failure.message,
        reason=failure.reason,
        count_attempt=count_attempt,
    )
    await live.requeued()
    raise RetryLater(FALLBACK_DELAY, f"falling back: {failure.reason}")


async def _release(
    runtime: JobRuntime,
    question: Question,
    live: LiveAnswer,
    error: str,
    delay: float,
    *,
    count_attempt: bool,
) -> None:
    await runtime.run_db(
        question_release_for_retry,
        question=question,
        error=error,
        retry_in=delay,
        count_attempt=count_attempt,
    )
    await live.requeued()


async def _store(
    runtime: JobRuntime,
    question: Question,
    live: LiveAnswer,
    completion: Completion,
    call_id: uuid.UUID,
) -> str:
    """Store a paid answer, coalesced with the answers of other jobs finishing within a few
    milliseconds (`questions_succeed`): retried with backoff on a fresh connection; an answer
    PostgreSQL cannot take fails the job (paid once) instead of being asked for again."""
    paid = PaidAnswer(question=question, completion=completion, call_id=call_id)
    for attempt in range(1, STORE_TRIES + 1):
        try:
            outcome = await _succeeder(runtime)(paid)
            if isinstance(outcome, BaseException):
                raise outcome
            stored = outcome
            break
        except DataError:
            logger.exception("the answer could not be stored")
            # Its ledger row went with the failed transaction: the call was paid all the same.
            usage = Completion(
                "", completion.model, completion.prompt_tokens, completion.completion_tokens
            )
            try:
                await runtime.run_db(
                    llm_call_record,
                    call_id=call_id,
                    question=question,
                    completion=usage,
                    outcome=LLMCall.Outcome.FAILED,
                )
            except DataError:
                logger.exception("could not write the ledger row of an LLM call")
            error = "The language model's answer could not be stored (it is not valid text)."
            status = await _fail(runtime, question, live, error, "", drop_stash=True)
            return status
        except (OperationalError, InterfaceError):
            if attempt == STORE_TRIES:
                raise  # redelivered later; the stash spares a second call
            delay = CONNECTION_BACKOFF.delay(attempt)
            logger.warning("could not store the answer; trying again", extra={"delay": delay})
            await asyncio.sleep(delay)
    if stored:
        # Written once the row is committed, with the stream's end: one round trip to Redis.
        await live.finish(Status.SUCCEEDED, drop_stash=True, cache_write=job_cache_write(question))
        logger.info("job succeeded", extra={"attempt": question.attempts})
        return Status.SUCCEEDED
    # Cancelled meanwhile (the answer came in before the cut): keep it on the cancelled row.
    cancelled = await runtime.run_db(
        question_store_cancelled, question=question, completion=completion, call_id=call_id
    )
    if not cancelled:
        # Lost the claim: the paid answer stays stashed (with its ledger row's id) for the
        # claim that finishes the job, which writes the row.
        return await _lost(question, live)
    await live.finish(Status.CANCELLED, drop_stash=True)
    return Status.CANCELLED


async def _fail(
    runtime: JobRuntime,
    question: Question,
    live: LiveAnswer,
    error: str,
    model: str,
    *,
    drop_stash: bool = False,
) -> str:
    if not await runtime.run_db(question_fail, question=question, error=error, model=model):
        return await _lost(question, live)
    await live.finish(Status.FAILED, drop_stash=drop_stash)
    return Status.FAILED


_claimers: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, Callable[[uuid.UUID], Awaitable[Claim]]
] = weakref.WeakKeyDictionary()


def _claimer(runtime: JobRuntime, lease: float) -> Callable[[uuid.UUID], Awaitable[Claim]]:
    """The jobs of one receive batch start together: their claims go as one statement."""
    loop = asyncio.get_running_loop()
    claimer = _claimers.get(loop)
    if claimer is None:

        async def claim_batch(ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, Claim]:
            return await runtime.run_db(questions_claim, question_ids=ids, lease_seconds=lease)

        claimer = _claimers[loop] = runtime.batcher(claim_batch)
    return claimer


# What a coalesced store gives each answer: whether it is stored, or the error of its own store.
StoreOutcome = bool | BaseException
_succeeders: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, Callable[[PaidAnswer], Awaitable[StoreOutcome]]
] = weakref.WeakKeyDictionary()


def _succeeder(runtime: JobRuntime) -> Callable[[PaidAnswer], Awaitable[StoreOutcome]]:
    """Jobs whose calls end together are stored together: one transaction, one statement.

    A batch that fails for want of a connection fails every store in it (each retries). One that
    PostgreSQL refuses for a value (`DataError`) is stored again answer by answer, so that one
    bad answer fails its own job only."""
    loop = asyncio.get_running_loop()
    succeeder = _succeeders.get(loop)
    if succeeder is None:

        async def succeed_batch(items: Sequence[PaidAnswer]) -> dict[PaidAnswer, StoreOutcome]:
            try:
                stored = await runtime.run_db(questions_succeed, items=items)
            except DataError:
                if len(items) == 1:
                    raise
                alone = await asyncio.gather(
                    *(runtime.run_db(questions_succeed, items=[item]) for item in items),
                    return_exceptions=True,
                )
                return {
                    item: outcome if isinstance(outcome, BaseException) else outcome[0]
                    for item, outcome in zip(items, alone, strict=True)
                }
            return dict(zip(items, stored, strict=True))

        succeeder = _succeeders[loop] = runtime.batcher(succeed_batch)
    return succeeder


def _not_claimed(claim: Claim, job_id: str) -> str:
    current = claim.current
    if current is None:
        raise DeadLetter(f"no job with id {job_id}")
    if current.is_finished:
        logger.info("duplicate delivery of a finished job; not asking again")
        return "duplicate"
    # Running under another worker's live claim: look again once that claim could have expired.
    raise RetryLater(claim.retry_in + 1.0, "running under another worker's claim")
