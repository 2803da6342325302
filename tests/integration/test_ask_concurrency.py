"""The per-user limit is exact under real concurrency: 200 simultaneous POSTs by one user to a
gunicorn with two processes × eight threads, limit 100 → exactly 100 jobs in PostgreSQL and 100
messages on the queue. With Redis up (the atomic Redis window) and with Redis unreachable (the
PostgreSQL count under the per-user advisory lock)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from rest_framework.authtoken.models import Token

from questions.models import Question
from tests.support import ROOT, child_env, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LIMIT = 100
REQUESTS = 200


@pytest.fixture
def gunicorn(queues: Any, artifacts: Any) -> Iterator[Any]:
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start(**env: str) -> str:
        port = free_port()
        log = (artifacts / f"gunicorn-{len(started)}.log").open("w")
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
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"],
            cwd=ROOT,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append((server, log))
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=5).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, timeout=60, interval=0.2, what="gunicorn to answer")
        return base

    yield start
    for server, log in started:
        server.terminate()
        server.wait(timeout=30)
        log.close()


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
    token = Token.objects.create(user=user).key

    statuses = _burst(base, token)

    assert statuses == {202: LIMIT, 429: REQUESTS - LIMIT}
    assert Question.objects.filter(owner=user).count() == LIMIT
    wait_until(
        lambda: queues.depth()["visible"] == LIMIT,
        timeout=30,
        what=f"{LIMIT} messages on the queue",
    )
    assert queues.depth()["visible"] == LIMIT
