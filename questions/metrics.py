"""Prometheus metrics of the question service (web and worker share these names).

The web app exports them at /metrics through django-prometheus (same default registry);
the worker serves them on `run_sqs_worker --metrics-port`.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
CACHE_FALLBACKS = Counter(
    "questions_cache_fallbacks_total",
    "Cache operations that failed (Redis down) and fell back to PostgreSQL.",
    ["operation"],
)
EVENTS_WATCHERS = Gauge(
    "questions_events_watchers",
    "Server-Sent Events streams of jobs open now in this process.",
    multiprocess_mode="livesum",
)
