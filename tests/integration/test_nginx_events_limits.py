"""nginx/nginx.conf's cap on open event streams per client IP, natively: Debian's nginx in front
of a uvicorn events process (production settings), the cap lowered to 3 for the test. Past it
nginx answers 429 with the API's JSON error shape; the app's own caps (per user, per IP, as
X-Forwarded-For from the trusted proxy tells it) answer through nginx unchanged."""

from __future__ import annotations

import http.client
import json
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from questions.accounts import api_token_create
from tests.factories import QuestionFactory, UserFactory
from tests.fakes.sse import iter_events
from tests.integration.stack_configs import render_nginx_conf
from tests.integration.test_stack import Processes
from tests.support import ROOT, answers_health, free_port, open_events, production_env, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True)]

NGINX_CAP = 3


@dataclass(frozen=True)
class Edge:
    port: int


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Edge]:
    workdir = tmp_path_factory.mktemp("nginx-events")
    processes = Processes(workdir)
    events_port, nginx_port = free_port(), free_port()
    env = production_env(
        DJANGO_TRUSTED_PROXIES="127.0.0.1",
        QUESTIONS_SSE_MAX_PER_USER="2",
        QUESTIONS_SSE_MAX_PER_IP="100",
    )
    try:
        processes.start(
            "events",
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
             "--port", str(events_port), "--no-access-log", "--lifespan", "off",
             "--timeout-graceful-shutdown", "1"],
            env=env,
        )  # fmt: skip
        conf = render_nginx_conf(
            workdir=workdir,
            listen=f"127.0.0.1:{nginx_port}",
            upstreams=[f"127.0.0.1:{free_port()}"],  # no web replica: only events are asked
            events_upstreams=[f"127.0.0.1:{events_port}"],
            static_root=ROOT / "staticfiles",
        )
        text = conf.read_text()
        assert "limit_conn events_per_ip 200;" in text
        conf.write_text(
            text.replace("limit_conn events_per_ip 200;", f"limit_conn events_per_ip {NGINX_CAP};")
        )
        processes.start(
            "nginx",
            [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(workdir), "-c", str(conf),
             "-g", "daemon off;"],
        )  # fmt: skip
        wait_until(
            answers_health(f"http://127.0.0.1:{events_port}", timeout=2),
            timeout=60,
            interval=0.2,
            what="uvicorn",
        )
        yield Edge(port=nginx_port)
    finally:
        processes.stop_all()


def _open(edge: Edge, job: Any, token: str, source: str) -> http.client.HTTPResponse:
    return open_events(edge.port, job, token, source=source)


def _running(user: Any) -> Any:
    return QuestionFactory(owner=user, status="running", attempts=1, started_at=timezone.now())


def _streaming(response: http.client.HTTPResponse) -> http.client.HTTPResponse:
    assert response.status == 200, response.read()
    next(iter_events(response))
    return response


def test_nginx_caps_open_streams_per_client_ip_with_a_json_429(edge: Edge):
    users = [UserFactory() for _ in range(2)]
    tokens = [api_token_create(user=user, name="t").key for user in users]
    held = [
        _streaming(_open(edge, _running(users[0]), tokens[0], "127.0.0.41")),
        _streaming(_open(edge, _running(users[0]), tokens[0], "127.0.0.41")),
        _streaming(_open(edge, _running(users[1]), tokens[1], "127.0.0.41")),
    ]
    refused = _open(edge, _running(users[1]), tokens[1], "127.0.0.41")
    assert refused.status == 429
    assert refused.getheader("Content-Type").startswith("application/json")
    assert refused.getheader("Retry-After") == "10"
    assert json.loads(refused.read())["error"] == "too_many_streams"

    # Another address has its own count at nginx; there the app's own per-user cap (2) answers,
    # as JSON, through nginx.
    other = [_streaming(_open(edge, _running(users[1]), tokens[1], "127.0.0.42"))]
    # users[1] holds 2 streams now (one from .41): the app refuses the third, nginx passes it on.
    app_refused = _open(edge, _running(users[1]), tokens[1], "127.0.0.43")
    assert app_refused.status == 429
    body = json.loads(app_refused.read())
    assert body["error"] == "too_many_streams" and "for this user" in body["detail"]
    for response in held + other:
        response.connection.close()  # type: ignore[attr-defined]
