"""Prometheus metrics of the question service (web and worker share these names).

The web app exports them at /metrics through django-prometheus (same default registry);
the worker serves them on `run_sqs_worker --metrics-port`.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram

from questions.pricing import priced_model_name

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)

QUESTIONS_CREATED = Counter("questions_created_total", "Questions accepted by the API or the page.")
ENQUEUE_FAILURES = Counter(
    "questions_enqueue_failures_total",
    "Jobs that could not be sent to SQS at once (they stay queued; requeue_jobs sends them).",
)
JOBS_REQUEUED = Counter(
    "questions_jobs_requeued_total", "Jobs sent to SQS again by requeue_jobs.", ["reason"]
)
JOBS_FINISHED = Counter(
    "questions_jobs_finished_total", "Jobs that reached a final state.", ["outcome"]
)
JOBS_CANCELLED = Counter(
    "questions_jobs_cancelled_total",
    "Jobs stopped by their asker or staff (Stop), by the status they had.",
    ["previous_status"],
)
JOB_RETRIES = Counter(
    "questions_job_retries_total", "LLM attempts that will be retried.", ["reason"]
)
JOB_DURATION = Histogram(
    "questions_job_duration_seconds",
    "Time from a job's last start to its final state.",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
QUEUE_WAIT = Histogram(
    "questions_queue_wait_seconds",
    "Time from enqueue to a worker starting the job.",
    buckets=_LATENCY_BUCKETS,
)
LLM_LATENCY = Histogram(
    "questions_llm_request_duration_seconds",
    "Duration of one LLM request.",
    ["outcome"],
    buckets=_LATENCY_BUCKETS,
)
LLM_TOKENS = Counter("questions_llm_tokens_total", "Tokens used, by kind.", ["kind"])
JOBS_IN_FLIGHT = Gauge("questions_worker_jobs_in_flight", "Jobs this worker is running now.")
SQS_MESSAGES = Counter(
    "questions_sqs_messages_total",
    "SQS messages handled by the worker, by what happened to them.",
    ["action"],
)
QUEUE_MESSAGES = Gauge(
    "questions_sqs_queue_messages",
    "Approximate messages in an SQS queue, polled from SQS.",
    ["queue", "state"],
)
OLDEST_QUEUED_JOB_AGE = Gauge(
    "questions_oldest_queued_job_age_seconds",
    "Age of the oldest job still queued, from the database (0: none); set by every worker, so "
    "dashboards and alerts take max() over them.",
    multiprocess_mode="livemax",
)
CACHE_FALLBACKS = Counter(
    "questions_cache_fallbacks_total",
    "Cache operations that failed (Redis down) and fell back to PostgreSQL.",
    ["operation"],
)
ASKS_REFUSED = Counter(
    "questions_asks_refused_total",
    "Questions refused by a limit (rate, open_jobs, budget), API and page.",
    ["reason"],
)
LLM_RATE_LIMIT_WAIT = Histogram(
    "questions_llm_rate_limit_wait_seconds",
    "Time a worker waited for the shared provider rate limit before an LLM call.",
    buckets=(0, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300),
)
LLM_RATE_LIMIT_PENALTIES = Counter(
    "questions_llm_rate_limit_penalties_total",
    "Provider 429s that paused every worker and lowered the shared rate.",
)
LLM_COST = Counter(
    "questions_llm_cost_usd_total",
    "USD paid for LLM calls, as stored on the jobs, by the price entry of the model.",
    ["model"],
)
# Every series exists from the start (0), so dashboards and alerts see them before the first
# paid call; the label is the price entry, never the provider's free-form model name.
for _model in [*settings.QUESTIONS_PRICES, "other"]:
    LLM_COST.labels(model=_model)


def record_llm_cost(*, model: str, cost: Decimal | None) -> None:
    """Count what a finished job's LLM call cost; call it once, when the cost is stored."""
    if cost:
        LLM_COST.labels(model=priced_model_name(model)).inc(float(cost))


LLM_FALLBACKS = Counter(
    "questions_llm_fallbacks_total",
    "Jobs moved to the next model of OPENAI_FALLBACK_MODELS, by why "
    "(server_error, timeout, connection_error, context_length, rate_limited).",
    ["reason"],
)
ANSWERS_BY_FALLBACK = Counter(
    "questions_answers_by_fallback_total",
    "Jobs answered by a fallback model rather than the primary.",
)

EVENTS_WATCHERS = Gauge(
    "questions_events_watchers",
    "Server-Sent Events streams of jobs open now in this process.",
    multiprocess_mode="livesum",
)

WEBHOOK_DELIVERIES = Counter(
    "questions_webhook_deliveries_total",
    "Webhook delivery attempts by outcome: succeeded, retry (failed, will be retried), blocked "
    "(address refused, will be retried), gone (410, endpoint disabled), failed (given up), "
    "skipped (endpoint disabled), enqueue_failed (not sent to SQS).",
    ["outcome"],
)
# Every outcome's series exists from the start (0), for the dashboard's webhook panel.
for _outcome in ("succeeded", "retry", "blocked", "gone", "failed", "skipped", "enqueue_failed"):
    WEBHOOK_DELIVERIES.labels(outcome=_outcome)
