"""The per-user limit is exact under real concurrency: 200 simultaneous POSTs by one user to a
gunicorn with two processes × eight threads, limit 100 → exactly 100 jobs in PostgreSQL and 100
messages on the queue. With Redis up (the atomic Redis window) and with Redis unreachable (the
PostgreSQL count under the per-user advisory lock)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests

from questions.accounts import api_token_create
from questions.models import Question
from tests.support import GUNICORN, child_env, free_port, serving, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 100
REQUESTS = 200


@pytest.fixture
def gunicorn(queues: Any, artifacts: Any) -> Iterator[Any]:
    with contextlib.ExitStack() as servers:
        started: list[str] = []

        def start(**env: str) -> str:
            port = free_port()
            environment = child_env(
                GUNICORN_BIND=f"127.0.0.1:{port}",
                GUNICORN_WORKERS="2",
                GUNICORN_THREADS="8",
                OTEL_SDK_DISABLED="true",
                QUESTIONS_THROTTLE_RATE=f"{LIMIT}/hour",
                QUESTIONS_MAX_OPEN_PER_USER=str(REQUESTS * 10),
                **env,
            )
            environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
            base = f"http://127.0.0.1:{port}"
            log_path = artifacts / f"gunicorn-{len(started)}.log"
            servers.enter_context(
                serving(GUNICORN, env=environment, log_path=log_path, base_url=base, timeout=60)
            )
            started.append(base)
            return base

        yield start


def _burst(base: str, token: str) -> Counter[int]:
    def ask(number: int) -> requests.Response:
        return requests.post(
            f"{base}/api/questions/",
            json={"question": f"question {number}"},
            headers={"Authorization": f"Token {token}"},
            timeout=60,
        )

    with ThreadPoolExecutor(max_workers=32) as pool:
        responses = list(pool.map(ask, range(REQUESTS)))
    refused = [r for r in responses if r.status_code == 429]
    for response in refused:
        body = response.json()
        assert body["error"] == "throttled"
        assert 0 < int(response.headers["Retry-After"]) <= 3600
        assert body["retry_after"] == int(response.headers["Retry-After"])
    return Counter(r.status_code for r in responses)


@pytest.mark.parametrize("redis", ["up", "unreachable"])
def test_200_concurrent_posts_with_a_limit_of_100_accept_exactly_100(redis, gunicorn, queues, user):
    # Up: a Redis database of its own, which no other test run on this machine flushes.
    port = 6379 if redis == "up" else free_port()
    env = {"REDIS_URL": f"redis://127.0.0.1:{port}/13"}
    base = gunicorn(**env)
    token = api_token_create(user=user, name="tests").key

    statuses = _burst(base, token)

    assert statuses == {202: LIMIT, 429: REQUESTS - LIMIT}
    assert Question.objects.filter(owner=user).count() == LIMIT
    wait_until(
        lambda: queues.depth()["visible"] == LIMIT,
        timeout=30,
        what=f"{LIMIT} messages on the queue",
    )
    assert queues.depth()["visible"] == LIMIT
