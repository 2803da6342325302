"""Liveness and readiness: is the process up; can it reach PostgreSQL, Redis and SQS."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from questions.sqs.client import get_queue_url, get_sqs_client


def _check_database() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def _check_cache() -> None:
    cache.set("readyz", "ok", timeout=10)
    if cache.get("readyz") != "ok":
        raise RuntimeError("cache did not return what was written")


def _check_sqs() -> None:
    get_sqs_client().get_queue_attributes(
        QueueUrl=get_queue_url(settings.SQS_QUEUE_NAME),
        AttributeNames=["ApproximateNumberOfMessages"],
    )


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "cache": _check_cache,
    "sqs": _check_sqs,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


_ready_lock = threading.Lock()
_ready_result: tuple[float, dict[str, object], int] | None = None


def _run_checks() -> tuple[dict[str, object], int]:
    results: dict[str, dict[str, object]] = {}
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:
            # The exception's class only: messages can carry hosts or credentials.
            results[name] = {"ok": False, "error": type(exc).__name__}
        else:
            results[name] = {"ok": True}
        results[name]["latency_ms"] = round((time.perf_counter() - started) * 1000, 1)
    ready = all(result["ok"] for result in results.values())
    return {"status": "ok" if ready else "unavailable", "checks": results}, 200 if ready else 503


def reset_readiness() -> None:
    """Forget the last result (tests; after an operator fixed a dependency)."""
    global _ready_result
    with _ready_lock:
        _ready_result = None


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    """Each call costs a query, a Redis write and an SQS call: the result is reused for
    READYZ_CACHE_SECONDS, so a burst of probes (or of callers) costs one round of checks."""
    global _ready_result
    with _ready_lock:
        now = time.monotonic()
        if _ready_result is None or now - _ready_result[0] >= settings.READYZ_CACHE_SECONDS:
            body, status = _run_checks()
            _ready_result = (now, body, status)
        _, body, status = _ready_result
    return JsonResponse(body, status=status)
