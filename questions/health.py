"""Liveness and readiness: is the process up; can it reach PostgreSQL, Redis and SQS."""

from __future__ import annotations

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


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
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
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": results},
        status=200 if ready else 503,
    )
