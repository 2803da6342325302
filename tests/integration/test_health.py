from __future__ import annotations

import pytest

from questions.sqs.client import reset_sqs_client
from tests.support import free_port, wait_until

pytestmark = pytest.mark.django_db


def test_healthz_is_always_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ok_when_everything_is_reachable(client, queues):
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["ok"] for name, check in body["checks"].items()} == {
        "database": True,
        "cache": True,
        "sqs": True,
    }


def test_readyz_is_503_with_the_reason_when_sqs_is_unreachable(client, queues, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{free_port()}")
    reset_sqs_client()
    try:
        response = client.get("/readyz")
    finally:
        monkeypatch.undo()
        reset_sqs_client()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["sqs"]["ok"] is False
    assert body["checks"]["sqs"]["error"] == "EndpointConnectionError"
    assert body["checks"]["database"]["ok"] is True


def test_readyz_is_503_when_redis_is_unreachable(client, queues, settings):
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}
    }
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["cache"]["ok"] is False


def test_metrics_are_exposed(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    text = response.content.decode()
    assert "django_http_requests_total_by_method_total" in text
    assert "questions_created_total" in text


def test_readyz_reuses_its_result_for_a_second(client, queues, settings, django_assert_num_queries):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from questions.web.health import reset_readiness

    reset_readiness()  # a result left by the test before
    settings.READYZ_CACHE_SECONDS = 1.0
    with CaptureQueriesContext(connection) as first:
        assert client.get("/readyz").status_code == 200
    assert any("SELECT 1" in q["sql"] for q in first.captured_queries)
    with django_assert_num_queries(0):  # checks not run again (the request itself needs no DB)
        again = client.get("/readyz")
    assert again.status_code == 200 and again.json()["checks"]["database"]["ok"] is True

    def checked_again() -> bool:
        with CaptureQueriesContext(connection) as later:
            client.get("/readyz")
        return any("SELECT 1" in q["sql"] for q in later.captured_queries)

    wait_until(checked_again, timeout=10, interval=0.2, what="the readiness result to expire")
