"""Timeouts against servers that accept a connection and never answer (a tiny socket server in
the test): the worker's asyncio Redis clients give up after REDIS_SOCKET_TIMEOUT, a PostgreSQL
connection after DATABASE_CONNECT_TIMEOUT; a query stops at DATABASE_STATEMENT_TIMEOUT, except
in `migrate`."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import redis.exceptions

from questions.live.streams import stream_append
from questions.llm import ratelimit
from tests.support import ROOT, child_env


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never says a word; yields the port."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # closed
            accepted.append(client)

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield server.getsockname()[1]
    finally:
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_RDWR)
        server.close()
        for client in accepted:
            client.close()


@pytest.fixture
def silent_redis(settings) -> Iterator[None]:
    with silent_server() as port:
        settings.CACHES = {
            "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{port}/0"}
        }
        settings.REDIS_SOCKET_TIMEOUT = 1.0
        ratelimit.reset_rate_limiter()
        yield
        ratelimit.reset_rate_limiter()


def test_a_silent_redis_fails_a_stream_write_within_the_socket_timeout(silent_redis):
    async def write() -> None:
        # The outer bound only keeps a hanging client from hanging the test.
        await asyncio.wait_for(stream_append(uuid.uuid4(), [("delta", "text")]), 15)

    started = time.monotonic()
    with pytest.raises(redis.exceptions.RedisError):
        asyncio.run(write())
    assert time.monotonic() - started < 3.0


def test_a_silent_redis_holds_the_rate_limiter_no_longer_than_the_socket_timeout(
    silent_redis, settings
):
    settings.OPENAI_RPM = 600  # a limit, so acquire asks Redis

    async def acquire() -> None:
        await asyncio.wait_for(ratelimit.acquire(f"model-{uuid.uuid4().hex[:8]}", 1), 15)

    started = time.monotonic()
    asyncio.run(acquire())  # Redis given up on: the per-process limit lets it through
    assert time.monotonic() - started < 3.0


def django_shell(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [sys.executable, str(ROOT / "manage.py"), "shell", "--no-imports", "-c", code],
            cwd=ROOT,
            env=child_env(**env),
            capture_output=True,
            text=True,
            timeout=40,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the process hung: {exc.stdout!r} {exc.stderr!r}") from exc


TIMED_CONNECT = """
import time
from django.db import connection
started = time.monotonic()
try:
    connection.ensure_connection()
except Exception as exc:
    print("failed", type(exc).__name__, round(time.monotonic() - started, 1))
else:
    print("connected")
"""


def test_a_postgresql_that_never_answers_fails_within_the_connect_timeout():
    with silent_server() as port:
        result = django_shell(
            TIMED_CONNECT,
            DATABASE_URL=f"postgres://postgres@127.0.0.1:{port}/questions",
            DATABASE_CONNECT_TIMEOUT="2",
        )
    assert result.returncode == 0, result.stderr
    kind, name, seconds = result.stdout.split()
    assert (kind, name) == ("failed", "OperationalError")
    assert float(seconds) < 2 + 2.0


STATEMENTS = """
import time
from django.core.management import call_command
from django.db import connection
started = time.monotonic()
try:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_sleep(5)")
except Exception as exc:
    print("cancelled", type(exc).__name__, round(time.monotonic() - started, 1))
call_command("migrate", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute("SHOW statement_timeout")
    print("migrate", cursor.fetchone()[0])
"""


@pytest.mark.django_db(transaction=True)
def test_a_query_stops_at_the_statement_timeout_but_migrate_runs_without_one():
    result = django_shell(STATEMENTS, DATABASE_STATEMENT_TIMEOUT="1")
    assert result.returncode == 0, result.stderr
    cancelled, migrate = result.stdout.splitlines()
    kind, name, seconds = cancelled.split()
    assert (kind, name) == ("cancelled", "OperationalError")
    assert float(seconds) < 3.0
    assert migrate == "migrate 0"
