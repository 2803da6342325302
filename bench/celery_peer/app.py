"""Celery doing the worker's job with the project's own services, so the work is identical.

Configured from the environment the bench sets (the same as the worker's, plus):
    BENCH_CELERY_QUEUE      the queue name;  BENCH_CELERY_QUEUE_URL  its URL, as the server gave it
Run: celery -A bench.celery_peer.app worker -P threads -c C -Q $BENCH_CELERY_QUEUE

Settings a team would choose for this job: acks late (delete only after the outcome is stored,
as the project's worker does), prefetch 1 per thread, no result backend, and at most
BENCH_CELERY_DB_CONNECTIONS (64) threads connected to PostgreSQL at once — what PgBouncer or a
pool would give them: at C = 512 a wave of claims or stores opened more than PostgreSQL's 100
connections, and the tasks that got "too many clients" left their jobs running forever.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import django
import openai

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django.setup()

from celery import Celery  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402

from questions.llm.client import Completion  # noqa: E402
from questions.services import question_claim, question_succeed  # noqa: E402

_openai = openai.OpenAI(
    api_key=settings.OPENAI_API_KEY or "not-needed",
    base_url=settings.OPENAI_BASE_URL,
    timeout=settings.OPENAI_TIMEOUT,
    max_retries=0,
)


_connected = threading.BoundedSemaphore(int(os.environ.get("BENCH_CELERY_DB_CONNECTIONS", "64")))


@contextlib.contextmanager
def _database() -> Iterator[None]:
    """Hold one of the bounded PostgreSQL connections for the block, closed at its end."""
    with _connected:
        try:
            yield
        finally:
            connection.close()


def _complete(text: str) -> Completion:
    """The LLM call as a thread-per-job worker makes it: the synchronous client, no streaming."""
    response = _openai.chat.completions.create(
        model=settings.OPENAI_MODEL,
        messages=[
            {"role": "system", "content": settings.OPENAI_SYSTEM_PROMPT},
            {"role": "user", "content": text},
        ],
        max_completion_tokens=settings.OPENAI_MAX_COMPLETION_TOKENS,
    )
    usage = response.usage
    return Completion(
        text=(response.choices[0].message.content or "") if response.choices else "",
        model=response.model or settings.OPENAI_MODEL,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else 0,
    )


def answer_question(job_id: str) -> str:
    """Claim the row, ask the LLM, store the answer (row + Redis): the worker's happy path."""
    lease = settings.OPENAI_TIMEOUT + settings.QUESTIONS_CLAIM_MARGIN
    # No connection held through the LLM call, or C = 256 threads would hold 256 of
    # PostgreSQL's 100 (the failure issue 9 measured): one for the claim, one for the store.
    with _database():
        claim = question_claim(question_id=uuid.UUID(job_id), lease_seconds=lease)
    if claim.question is None:
        return "not claimed"
    completion = _complete(claim.question.text)
    with _database():
        question_succeed(question=claim.question, completion=completion, call_id=uuid.uuid4())
    return "succeeded"


def make_app(*, queue: str, queue_url: str, endpoint: str) -> Celery:
    """A Celery app on one SQS queue (its URL as the server gave it) with the task registered."""
    parts = urlsplit(endpoint)
    app = Celery("bench_celery_peer")
    app.conf.update(
        broker_url=f"sqs://bench:bench@{parts.hostname}:{parts.port}",
        broker_transport_options={
            "region": settings.AWS_REGION,
            "is_secure": False,
            "visibility_timeout": 300,
            "wait_time_seconds": 1,
            "predefined_queues": {
                queue: {"url": queue_url, "access_key_id": "bench", "secret_access_key": "bench"}
            },
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        task_acks_late=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
    )
    app.task(name=TASK_NAME)(answer_question)
    return app


TASK_NAME = "bench.answer_question"
app = make_app(
    queue=os.environ.get("BENCH_CELERY_QUEUE", "celery"),
    queue_url=os.environ.get("BENCH_CELERY_QUEUE_URL", ""),
    endpoint=os.environ.get("AWS_ENDPOINT_URL_SQS", "http://127.0.0.1:4566"),
)
