"""nginx/nginx.conf's protections, natively: Debian's nginx in front of a gunicorn replica
(production settings). Rate limits per client IP on the login pages and on asking, 429 past the
rate; /readyz and /metrics denied from outside; X-Forwarded-For replaced, not appended to, and
believed by Django because it comes from the trusted proxy.

Each test talks from its own loopback address (127.0.0.x), so nginx's per-IP zones and
django-axes's per-IP counters of one test do not leak into another."""

from __future__ import annotations

import http.client
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlencode

import pytest

from tests.factories import PASSWORD, UserFactory
from tests.integration.stack_configs import render_nginx_conf
from tests.integration.test_stack import Processes
from tests.support import (
    GUNICORN,
    ROOT,
    answers_health,
    collectstatic,
    free_port,
    production_env,
    wait_until,
)

# One parallel worker runs them all: they share the module's nginx and gunicorn (`stack`).
pytestmark = [
    pytest.mark.stack,
    pytest.mark.xdist_group("nginx_limits"),
    pytest.mark.django_db(transaction=True),
]


@dataclass(frozen=True)
class Stack:
    nginx_port: int
    web_port: int


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, django_db_setup: None) -> Iterator[Stack]:
    """Started after the test database exists: gunicorn is pointed at it by child_env()."""
    workdir = tmp_path_factory.mktemp("nginx-limits")
    processes = Processes(workdir)
    web_port, nginx_port = free_port(), free_port()
    production = production_env(DJANGO_TRUSTED_PROXIES="127.0.0.1", LOGIN_FAILURE_LIMIT="5")
    collectstatic(production)
    try:
        processes.start(
            "web",
            GUNICORN,
            env={**production, "GUNICORN_BIND": f"127.0.0.1:{web_port}", "GUNICORN_THREADS": "4"},
        )
        conf = render_nginx_conf(
            workdir=workdir,
            listen=f"127.0.0.1:{nginx_port}",
            upstreams=[f"127.0.0.1:{web_port}"],
            static_root=ROOT / "staticfiles",
        )
        processes.start(
            "nginx",
            [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(workdir), "-c", str(conf),
             "-g", "daemon off;"],
        )  # fmt: skip

        web, edge = (f"http://127.0.0.1:{port}" for port in (web_port, nginx_port))
        wait_until(answers_health(web, timeout=2), timeout=60, interval=0.2, what="gunicorn")
        wait_until(answers_health(edge, timeout=2), timeout=20, interval=0.1, what="nginx")
        yield Stack(nginx_port=nginx_port, web_port=web_port)
    finally:
        processes.stop_all()


def _request(
    port: int,
    method: str,
    path: str,
    *,
    source: str,
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """One request from the loopback address `source` (nginx sees it as the client's IP)."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=10, source_address=(source, 0)
    )
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def test_readyz_and_metrics_are_denied_through_nginx_but_answer_inside(stack: Stack) -> None:
    for path in ("/readyz", "/metrics", "/metrics/"):
        status, _ = _request(stack.nginx_port, "GET", path, source="127.0.0.2")
        assert status == 403, path
    assert _request(stack.nginx_port, "GET", "/healthz", source="127.0.0.2")[0] == 200
    # Inside the network (the orchestrator, Prometheus) they answer.
    inside, body = _request(stack.web_port, "GET", "/readyz", source="127.0.0.2")
    assert inside in (200, 503) and '"checks"' in body
    assert _request(stack.web_port, "GET", "/metrics", source="127.0.0.2")[0] == 200


def test_the_login_page_is_rate_limited_per_client_ip(stack: Stack) -> None:
    statuses = [
        _request(stack.nginx_port, "GET", "/accounts/login/", source="127.0.0.3")[0]
        for _ in range(20)
    ]
    # burst=10 nodelay: the first 11 pass at once, the rest are refused by nginx.
    assert statuses[:10] == [200] * 10
    assert statuses[-5:] == [429] * 5
    # Another client is not affected; the admin's login shares the zone per IP.
    assert _request(stack.nginx_port, "GET", "/accounts/login/", source="127.0.0.4")[0] == 200
    assert _request(stack.nginx_port, "GET", "/admin/login/", source="127.0.0.3")[0] == 429


def test_asking_is_rate_limited_per_client_ip_but_reading_is_not(stack: Stack) -> None:
    headers = {"Content-Type": "application/json"}
    posts = [
        _request(
            stack.nginx_port, "POST", "/api/questions/", source="127.0.0.5",
            body='{"question": "q?"}', headers=headers,
        )[0]
        for _ in range(30)
    ]  # fmt: skip
    assert posts[:20] == [401] * 20  # reached Django (not logged in)
    assert posts[-5:] == [429] * 5  # refused by nginx past burst=20
    gets = [
        _request(stack.nginx_port, "GET", "/api/questions/", source="127.0.0.5")[0]
        for _ in range(30)
    ]
    assert set(gets) == {401}


def test_a_spoofed_x_forwarded_for_does_not_escape_the_ip_lockout(stack: Stack) -> None:
    victim = UserFactory()
    browser = _LoopbackBrowser(stack.nginx_port, source="127.0.0.6")
    assert browser.send("GET", "/accounts/login/") == 200  # the CSRF cookie
    failures = [browser.login(f"guess{n}", "wrong", spoofed=f"203.0.113.{n}") for n in range(5)]
    assert failures[:4] == [200] * 4  # the form again: each counted against 127.0.0.6
    status = browser.login(victim.username, PASSWORD, spoofed="203.0.113.99")
    assert status == 429  # locked by the real client address, whatever the header said
    assert "Too many failed logins" in browser.last_body


class _LoopbackBrowser:
    """Just enough of a browser for Django's login form (cookies, CSRF token, Origin), from one
    loopback source address."""

    def __init__(self, port: int, *, source: str) -> None:
        self.port, self.source = port, source
        self.origin = f"http://127.0.0.1:{port}"
        self.cookies: dict[str, str] = {}
        self.last_body = ""

    def send(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> int:
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(self.source, 0)
        )
        all_headers = dict(headers or {})
        if self.cookies:
            all_headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            connection.request(method, path, body=body, headers=all_headers)
            response = connection.getresponse()
            for header, value in response.getheaders():
                if header.lower() == "set-cookie":
                    name, _, rest = value.partition("=")
                    self.cookies[name] = rest.split(";", 1)[0]
            self.last_body = response.read().decode(errors="replace")
            return response.status
        finally:
            connection.close()

    def login(self, username: str, password: str, *, spoofed: str) -> int:
        form = {
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": self.cookies["csrftoken"],
        }
        return self.send(
            "POST",
            "/accounts/login/",
            urlencode(form),
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Origin": self.origin,
                "Referer": f"{self.origin}/accounts/login/",
                "X-Forwarded-For": spoofed,
            },
        )


def test_nginx_config_sets_forwarded_for_from_the_peer_only() -> None:
    text = (ROOT / "nginx" / "nginx.conf").read_text()
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in text
    assert "$proxy_add_x_forwarded_for" not in text
