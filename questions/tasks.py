"""Background work, declared with Django's Tasks API and run by `run_sqs_worker`."""

from __future__ import annotations

from django.tasks import task
from django.tasks.base import TaskContext

from questions.answering import question_answer
from questions.backoff import DEFAULT_MAX_ATTEMPTS
from questions.jobqueue import ANSWER_QUESTION, DELIVER_WEBHOOK, task_register
from questions.webhooks.services import webhook_deliver
from questions.worker.runtime import WORKER_RUNTIME


@task(takes_context=True)
async def answer_question(context: TaskContext, job_id: str) -> str:
    """Ask the LLM one question and store the outcome (questions.answering). Returns what
    happened. Asynchronous: hundreds run at once on the worker's event loop."""
    max_attempts = getattr(context, "max_attempts", DEFAULT_MAX_ATTEMPTS)
    return await question_answer(job_id=job_id, max_attempts=max_attempts, runtime=WORKER_RUNTIME)


@task(queue_name="webhooks")
def deliver_webhook(delivery_id: str) -> str:
    """One attempt to deliver a webhook (questions.webhooks.services.webhook_deliver). Runs on
    a thread of the worker that consumes SQS_WEBHOOK_QUEUE_NAME; a failed attempt raises
    RetryLater and comes back after the backoff."""
    return webhook_deliver(delivery_id=delivery_id)


# The services enqueue these through questions.jobqueue, without importing this module.
task_register(ANSWER_QUESTION, answer_question)
task_register(DELIVER_WEBHOOK, deliver_webhook)
