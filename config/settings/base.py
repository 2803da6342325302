"""Settings shared by every environment. Values come from the environment via config.env."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import (
    env_bool,
    env_decimal,
    env_float,
    env_int,
    env_json,
    env_list,
    env_networks,
    env_optional,
    env_str,
    parse_fallback_models,
    parse_price,
    parse_price_table,
    parse_rate,
    parse_rate_limits,
    postgres_timeouts,
    require_min,
)
from config.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent

SECRET_KEY = env_optional("DJANGO_SECRET_KEY")
DEBUG = env_bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "questions",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    # Last but Prometheus's: it turns a locked-out login into the lockout page (429).
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: PostgreSQL in production and tests; SQLite when DATABASE_URL is unset (make run).
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", default=60),
        # A kept connection is checked ("SELECT 1") before its first use in each request or job:
        # one that a PostgreSQL restart terminated is opened again instead of failing a request.
        conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", default=True),
    )
}
# --- Database timeouts (README "Configuration"): a PostgreSQL that does not answer fails a
# connection within DATABASE_CONNECT_TIMEOUT seconds instead of hanging a request or a worker
# thread; no query of a request or a job runs past DATABASE_STATEMENT_TIMEOUT (0: none).
# `migrate` lifts the statement timeout for its own connection (questions/signals.py).
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", default=5)
DATABASE_STATEMENT_TIMEOUT = env_int("DATABASE_STATEMENT_TIMEOUT", default=60)
require_min("DATABASE_CONNECT_TIMEOUT", DATABASE_CONNECT_TIMEOUT, 2)  # libpq's own minimum
require_min("DATABASE_STATEMENT_TIMEOUT", DATABASE_STATEMENT_TIMEOUT, 0)
DATABASES["default"] = postgres_timeouts(
    DATABASES["default"],
    connect_timeout=DATABASE_CONNECT_TIMEOUT,
    statement_timeout=DATABASE_STATEMENT_TIMEOUT,
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # make run: the web app and the worker write to one file. A transaction takes the write lock
    # as it begins and waits up to `timeout` seconds for it; SQLite's default (deferred) ones
    # deadlock when two that have read both write, and one fails "database is locked" at once.
    # WAL lets readers go on while one writes (tests/integration/test_sqlite_writers.py).
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
        "init_command": "PRAGMA journal_mode=WAL;",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: Redis through django-redis. Short socket timeouts: when Redis is down the service
# serves from PostgreSQL (questions.cache counts and logs the fallback).
REDIS_URL = env_str("REDIS_URL", default="redis://127.0.0.1:6379/0")
CACHES = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": REDIS_URL,
        # Every key the service keeps in Redis starts with it: two deployments (or test runs)
        # sharing one Redis database need different ones.
        "KEY_PREFIX": env_str("CACHE_KEY_PREFIX", default="questions"),
        "OPTIONS": {
            "SOCKET_CONNECT_TIMEOUT": 0.5,
            "SOCKET_TIMEOUT": 0.5,
            # JSON, never pickle: a value written to Redis by anyone else runs no code here.
            "SERIALIZER": "questions.cache_serializer.StrictJSONSerializer",
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
AUTHENTICATION_BACKENDS = [
    # First, so that a locked-out login is refused before any password is hashed.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "questions:ask"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"] if (BASE_DIR / "static").is_dir() else []

# --- REST API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "questions.api.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["questions.api.parsers.JSONParserWithDepthLimit"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "EXCEPTION_HANDLER": "questions.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Question service API",
    "DESCRIPTION": "Ask a question; an LLM answers it asynchronously. Poll the job by id.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from this app's static files (drf-spectacular-sidecar), not a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Enums named for what they are (by default they take the field's name: ErrorEnum, …); one
    # name for the webhook events wherever the schema lists them (README "Webhooks").
    "ENUM_NAME_OVERRIDES": {
        "AskRefusedCode": "questions.api.schema.ASK_REFUSED_CODES",
        "JobEventName": "questions.api.schema.EVENT_NAMES",
        "WebhookEventEnum": "questions.webhooks.models.WebhookEvent",
    },
}

# --- Background work: Django's Tasks API, sent to SQS by this project's backend.
TASKS = {
    "default": {
        "BACKEND": "questions.sqs.backend.SQSTaskBackend",
        # "default" is SQS_QUEUE_NAME (the jobs), "webhooks" is SQS_WEBHOOK_QUEUE_NAME.
        "QUEUES": ["default", "webhooks"],
    }
}
AWS_REGION = env_str("AWS_REGION", default="us-east-1")
# AWS_ENDPOINT_URL_SQS (LocalStack, moto) is not a setting: boto3 reads it itself.
SQS_QUEUE_NAME = env_str("SQS_QUEUE_NAME", default="questions")
SQS_DLQ_NAME = env_str("SQS_DLQ_NAME", default="questions-dlq")
SQS_MAX_RECEIVE_COUNT = env_int("SQS_MAX_RECEIVE_COUNT", default=10)
SQS_VISIBILITY_TIMEOUT = env_int("SQS_VISIBILITY_TIMEOUT", default=60)

# --- LLM: the real OpenAI client when a key or a base URL is set, the offline demo model otherwise.
OPENAI_API_KEY = env_optional("OPENAI_API_KEY")
OPENAI_BASE_URL = env_optional("OPENAI_BASE_URL")
OPENAI_MODEL = env_str("OPENAI_MODEL", default="gpt-4o-mini")
OPENAI_TIMEOUT = env_float("OPENAI_TIMEOUT", default=30.0)
# --- A call's two clocks (questions.llm.client). OPENAI_TIMEOUT above is the longest time a call
# may go WITHOUT CONTENT (SSE keepalive comments and empty chunks do not count); this is the
# longest a call may take in all, however steadily it streams. At least OPENAI_TIMEOUT.
OPENAI_CALL_DEADLINE = env_float("OPENAI_CALL_DEADLINE", default=max(300.0, OPENAI_TIMEOUT))
if OPENAI_CALL_DEADLINE < OPENAI_TIMEOUT:
    raise ImproperlyConfigured("OPENAI_CALL_DEADLINE must be at least OPENAI_TIMEOUT.")
OPENAI_SYSTEM_PROMPT = env_str(
    "OPENAI_SYSTEM_PROMPT",
    default="You are a helpful assistant. Answer clearly and concisely, in Markdown.",
)

# --- The question service itself.
QUESTIONS_MAX_LENGTH = env_int("QUESTIONS_MAX_LENGTH", default=4000)
QUESTIONS_CACHE_TTL = env_int("QUESTIONS_CACHE_TTL", default=3600)
# How long an API token's user is cached; a deactivated user keeps API access this long at most.
TOKEN_CACHE_TTL = env_int("TOKEN_CACHE_TTL", default=60)
# A sent job on an empty queue, or a lapsed lease, counts as lost after this many seconds
# (questions_requeue: the sweep resends only what is provably unsent or lost).
QUESTIONS_REQUEUE_AFTER = env_int("QUESTIONS_REQUEUE_AFTER", default=300)
# How long a worker's claim on a job lasts beyond the LLM timeout before another may take it.
QUESTIONS_CLAIM_MARGIN = env_int("QUESTIONS_CLAIM_MARGIN", default=30)

# --- The worker (run_sqs_worker): jobs are coroutines on one event loop per process; their ORM
# work runs on this many threads, each with its one PostgreSQL connection (the process's bound).
QUESTIONS_WORKER_DB_THREADS = env_int("QUESTIONS_WORKER_DB_THREADS", default=10)
# A job rate limited by the provider waits (without using up attempts) at most this long since
# it was asked, then fails saying so.
QUESTIONS_MAX_QUEUE_SECONDS = env_int("QUESTIONS_MAX_QUEUE_SECONDS", default=3600)
# Where `run_sqs_worker --metrics-port` serves Prometheus metrics.
METRICS_ADDR = env_str("METRICS_ADDR", default="0.0.0.0")
for _name in (
    "QUESTIONS_WORKER_DB_THREADS",
    "QUESTIONS_MAX_QUEUE_SECONDS",
):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1.")

# --- The spend ledger (questions.ledger): LLM calls a job may make in all, the worker's default
# `--max-attempts`; the daily budget reserves this many worst-case calls for each new question
# and what is left of them for each unfinished one.
QUESTIONS_MAX_ATTEMPTS = env_int("QUESTIONS_MAX_ATTEMPTS", default=5)
require_min("QUESTIONS_MAX_ATTEMPTS", QUESTIONS_MAX_ATTEMPTS, 1)

# --- Model fallback (README "Model fallback"): the models a job moves to, in order, when the
# primary fails after its retries with a server error or timeout, refuses the question for its
# context length, or keeps it rate limited longer than OPENAI_FALLBACK_RATE_LIMIT_WAIT seconds.
OPENAI_FALLBACK_MODELS = parse_fallback_models(
    env_str("OPENAI_FALLBACK_MODELS", default=""), name="OPENAI_FALLBACK_MODELS"
)
OPENAI_FALLBACK_RATE_LIMIT_WAIT = env_int("OPENAI_FALLBACK_RATE_LIMIT_WAIT", default=300)
require_min("OPENAI_FALLBACK_RATE_LIMIT_WAIT", OPENAI_FALLBACK_RATE_LIMIT_WAIT, 0)

# --- The answer stream of a running job (questions.live.streams): Redis streams the SSE view
# reads.
QUESTIONS_STREAM_TTL = env_int("QUESTIONS_STREAM_TTL", default=3600)
QUESTIONS_STREAM_MAX_ENTRIES = env_int("QUESTIONS_STREAM_MAX_ENTRIES", default=20000)
QUESTIONS_STREAM_REDIS_TIMEOUT = env_float("QUESTIONS_STREAM_REDIS_TIMEOUT", default=0.5)
QUESTIONS_STREAM_REDIS_MAX_CONNECTIONS = env_int(
    "QUESTIONS_STREAM_REDIS_MAX_CONNECTIONS", default=50
)
# --- The worker's asyncio Redis clients (answer streams, the provider rate limiter): a Redis that
# accepts the connection but never answers fails a call after this many seconds. Longer than any
# XREAD BLOCK those clients make (the events hub blocks 0.25 s).
REDIS_SOCKET_TIMEOUT = env_float("REDIS_SOCKET_TIMEOUT", default=5.0)
require_min("REDIS_SOCKET_TIMEOUT", REDIS_SOCKET_TIMEOUT, 1.0)
# --- Spend and limits (README "Spend and limits"). Checked in questions.limits when a question
# is asked, for the API and the page alike; the worker prices each call with questions.pricing
# and passes questions.llm.ratelimit before it calls the provider.
# Questions per user per fixed window, counted atomically in Redis (PostgreSQL when Redis is down).
QUESTIONS_THROTTLE_RATE = env_str("QUESTIONS_THROTTLE_RATE", default="30/hour")
parse_rate(QUESTIONS_THROTTLE_RATE, name="QUESTIONS_THROTTLE_RATE")
# Unfinished (queued + running) jobs a user may have at once; per user in the admin (UserQuota).
QUESTIONS_MAX_OPEN_PER_USER = env_int("QUESTIONS_MAX_OPEN_PER_USER", default=10)
require_min("QUESTIONS_MAX_OPEN_PER_USER", QUESTIONS_MAX_OPEN_PER_USER, 1)
# USD a user may spend per UTC day (0: none); per user in the admin (UserQuota).
QUESTIONS_DAILY_BUDGET_USD = env_decimal(
    "QUESTIONS_DAILY_BUDGET_USD", default="5.00", minimum=Decimal(0)
)
# The longest answer the LLM may write (sent as max_completion_tokens on every call); also the
# output side of a question's worst-case cost.
OPENAI_MAX_COMPLETION_TOKENS = env_int("OPENAI_MAX_COMPLETION_TOKENS", default=1024)
require_min("OPENAI_MAX_COMPLETION_TOKENS", OPENAI_MAX_COMPLETION_TOKENS, 1)
# USD per 1M tokens, input and output, per model. QUESTIONS_PRICES (JSON) adds to or overrides
# these; a model matches its own name or the longest entry it starts with
# ("gpt-4o-mini-2024-07-18" → "gpt-4o-mini"); any other model costs QUESTIONS_DEFAULT_PRICE.
QUESTIONS_PRICES = {
    **parse_price_table(
        {
            # The offline demo model of `make run` (questions.llm.client.DEMO_MODEL) is free.
            "demo (offline, not a real LLM)": {"input": "0", "output": "0"},
            "gpt-4o-mini": {"input": "0.15", "output": "0.60"},
            "gpt-4o": {"input": "2.50", "output": "10.00"},
            "gpt-4.1-nano": {"input": "0.10", "output": "0.40"},
            "gpt-4.1-mini": {"input": "0.40", "output": "1.60"},
            "gpt-4.1": {"input": "2.00", "output": "8.00"},
            "o4-mini": {"input": "1.10", "output": "4.40"},
            "gpt-3.5-turbo": {"input": "0.50", "output": "1.50"},
        },
        name="built-in prices",
    ),
    **parse_price_table(env_json("QUESTIONS_PRICES", default={}), name="QUESTIONS_PRICES"),
}
QUESTIONS_DEFAULT_PRICE = parse_price(
    env_json("QUESTIONS_DEFAULT_PRICE", default={"input": 10, "output": 30}),
    name="QUESTIONS_DEFAULT_PRICE",
)
if not all(QUESTIONS_DEFAULT_PRICE.values()):
    raise ImproperlyConfigured("QUESTIONS_DEFAULT_PRICE may not be free: an unknown model costs.")
# The provider's limits, shared by every worker process through Redis (0: no limit).
# OPENAI_RATE_LIMITS (JSON) sets them per model: {"gpt-4o": {"rpm": 500, "tpm": 30000}}.
OPENAI_RPM = env_int("OPENAI_RPM", default=0)
require_min("OPENAI_RPM", OPENAI_RPM, 0)
OPENAI_TPM = env_int("OPENAI_TPM", default=0)
require_min("OPENAI_TPM", OPENAI_TPM, 0)
OPENAI_RATE_LIMITS = parse_rate_limits(
    env_json("OPENAI_RATE_LIMITS", default={}), name="OPENAI_RATE_LIMITS"
)
# When Redis is down each worker process limits itself to its share: the rate / this.
OPENAI_RATE_LIMIT_PROCESSES = env_int("OPENAI_RATE_LIMIT_PROCESSES", default=2)
require_min("OPENAI_RATE_LIMIT_PROCESSES", OPENAI_RATE_LIMIT_PROCESSES, 1)

# --- Server-Sent Events of a job (questions.api.events) and the static files the app serves.
# A `: keepalive` comment after this many idle seconds (under nginx's proxy_read_timeout).
QUESTIONS_EVENTS_KEEPALIVE = env_float("QUESTIONS_EVENTS_KEEPALIVE", default=15.0)
# A quiet stream looks at what the shared row check found this often.
QUESTIONS_EVENTS_CHECK_INTERVAL = env_float("QUESTIONS_EVENTS_CHECK_INTERVAL", default=2.0)
# The events process checks the rows of all its watched jobs (one query) this often.
QUESTIONS_EVENTS_POLL_INTERVAL = env_float("QUESTIONS_EVENTS_POLL_INTERVAL", default=1.0)
# A job stopped while running ends its watchers' streams when its worker has stored the partial
# answer (the stream's `end`), or after this many seconds if that never comes.
QUESTIONS_EVENTS_CANCEL_GRACE = env_float("QUESTIONS_EVENTS_CANCEL_GRACE", default=5.0)
# The reconnection delay EventSource is told to use (the `retry:` field), in milliseconds.
QUESTIONS_EVENTS_RETRY_MS = env_int("QUESTIONS_EVENTS_RETRY_MS", default=2000)

# --- Limits on event streams (questions.live.slots; README "Limits on event streams").
# Concurrent streams per user and per client IP (0: no cap), counted in Redis across processes;
# one more is a 429. A stream's slot is a lease it refreshes; a dead process's slots lapse after
# QUESTIONS_SSE_LEASE_SECONDS.
QUESTIONS_SSE_MAX_PER_USER = env_int("QUESTIONS_SSE_MAX_PER_USER", default=20)
require_min("QUESTIONS_SSE_MAX_PER_USER", QUESTIONS_SSE_MAX_PER_USER, 0)
QUESTIONS_SSE_MAX_PER_IP = env_int("QUESTIONS_SSE_MAX_PER_IP", default=100)
require_min("QUESTIONS_SSE_MAX_PER_IP", QUESTIONS_SSE_MAX_PER_IP, 0)
QUESTIONS_SSE_LEASE_SECONDS = env_float("QUESTIONS_SSE_LEASE_SECONDS", default=30.0)
if QUESTIONS_SSE_LEASE_SECONDS <= 0:
    raise ImproperlyConfigured("QUESTIONS_SSE_LEASE_SECONDS must be more than 0.")
# Catch-up reads of the answer streams (a watcher's first XREAD) at once per events process:
# after a restart every watcher reconnects together; this keeps them inside the Redis pool.
QUESTIONS_EVENTS_CATCHUP_CONCURRENCY = env_int("QUESTIONS_EVENTS_CATCHUP_CONCURRENCY", default=8)
require_min("QUESTIONS_EVENTS_CATCHUP_CONCURRENCY", QUESTIONS_EVENTS_CATCHUP_CONCURRENCY, 1)
if QUESTIONS_EVENTS_CATCHUP_CONCURRENCY >= QUESTIONS_STREAM_REDIS_MAX_CONNECTIONS:
    raise ImproperlyConfigured(
        "QUESTIONS_EVENTS_CATCHUP_CONCURRENCY must be below QUESTIONS_STREAM_REDIS_MAX_CONNECTIONS "
        "(the shared read and the slot leases need connections too)."
    )

# --- Observability. The admin links a job's trace id to this URL ("{trace_id}" is replaced),
# e.g. Grafana's Explore view of Tempo (docker-compose.yml sets one); unset: no link.
TRACE_URL_TEMPLATE = env_optional("TRACE_URL_TEMPLATE")

LOG_LEVEL = env_str("LOG_LEVEL", default="INFO")
LOG_FORMAT = env_str("LOG_FORMAT", default="json")
LOGGING = logging_config(
    level=LOG_LEVEL,
    formatter=LOG_FORMAT,
    loggers={
        "django.request": {"level": "ERROR"},
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
        "openai": {"level": "WARNING"},
        # Django's own "Task … state=…" lines repeat what questions.tasks logs once per job.
        "django.tasks": {"level": "WARNING"},
    },
)

# --- Security: trusted proxy, login lockout, Content-Security-Policy, retention.
# X-Forwarded-For is believed only from these addresses/networks (nginx); empty: never.
TRUSTED_PROXIES = env_networks("DJANGO_TRUSTED_PROXIES")
# django-axes: after LOGIN_FAILURE_LIMIT failed logins for one username, or from one IP address,
# logins from there are refused (429, a page saying when to try again) for LOGIN_COOLOFF_SECONDS.
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(seconds=env_int("LOGIN_COOLOFF_SECONDS", default=900))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_CLIENT_IP_CALLABLE = "questions.web.client_ip.client_ip"
AXES_LOCKOUT_CALLABLE = "questions.web.lockout.lockout_response"
AXES_RESET_ON_SUCCESS = True
# A lockout ends when its time is up, however many more guesses came in meanwhile.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# Failed attempts are kept (that is the lockout); successful logins are not logged.
AXES_DISABLE_ACCESS_LOG = True
AXES_VERBOSE = False
# Django's own CSP middleware (6.0+): scripts and styles from this site only, no inline code.
SECURE_CSP = {
    "default-src": ["'self'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'", "data:"],
    "connect-src": ["'self'"],
    "font-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
# Finished jobs older than this many days are deleted by `manage.py prune_jobs` (privacy).
QUESTIONS_RETENTION_DAYS = env_int("QUESTIONS_RETENTION_DAYS", default=90)
# /readyz reuses its result this long (seconds), so that probes cannot turn into load.
READYZ_CACHE_SECONDS = env_float("READYZ_CACHE_SECONDS", default=1.0)

# --- Completion webhooks (README "Webhooks"; questions/webhooks/).
# Deliveries have a queue and DLQ of their own, consumed by a second worker process
# (`run_sqs_worker --queue $SQS_WEBHOOK_QUEUE_NAME --dlq $SQS_WEBHOOK_DLQ_NAME`).
SQS_WEBHOOK_QUEUE_NAME = env_str("SQS_WEBHOOK_QUEUE_NAME", default="questions-webhooks")
SQS_WEBHOOK_DLQ_NAME = env_str("SQS_WEBHOOK_DLQ_NAME", default="questions-webhooks-dlq")
# Receives of one delivery message before SQS dead-letters it: above the retries of a day.
SQS_WEBHOOK_MAX_RECEIVE_COUNT = env_int("SQS_WEBHOOK_MAX_RECEIVE_COUNT", default=100)
# The key that encrypts the signing secrets at rest (Fernet, via HKDF). Unset: derived from
# DJANGO_SECRET_KEY, so rotating that key makes the stored secrets unreadable (rotate them then).
QUESTIONS_WEBHOOK_SECRET_KEY = env_optional("QUESTIONS_WEBHOOK_SECRET_KEY")
# https only unless this is true (local development, tests).
QUESTIONS_WEBHOOK_ALLOW_HTTP = env_bool("QUESTIONS_WEBHOOK_ALLOW_HTTP", default=False)
# Loopback, private, link-local, multicast and reserved addresses are refused unless listed here.
QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = env_networks("QUESTIONS_WEBHOOK_ALLOWED_NETWORKS")
# Seconds for one delivery attempt, connect to last byte read.
QUESTIONS_WEBHOOK_TIMEOUT = env_float("QUESTIONS_WEBHOOK_TIMEOUT", default=10.0)
# Retries (the backoff policy of questions/backoff.py): base and cap of the delay, seconds,
# for RETRY_WINDOW seconds; an endpoint failing that long is disabled.
QUESTIONS_WEBHOOK_RETRY_BASE = env_float("QUESTIONS_WEBHOOK_RETRY_BASE", default=30.0)
QUESTIONS_WEBHOOK_RETRY_CAP = env_float("QUESTIONS_WEBHOOK_RETRY_CAP", default=3600.0)
QUESTIONS_WEBHOOK_RETRY_WINDOW = env_int("QUESTIONS_WEBHOOK_RETRY_WINDOW", default=24 * 3600)
# Endpoints one user may register.
QUESTIONS_WEBHOOK_MAX_PER_USER = env_int("QUESTIONS_WEBHOOK_MAX_PER_USER", default=10)
