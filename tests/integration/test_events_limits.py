"""Event streams are bounded: per user and per client IP (429 as JSON past the cap, counted in
Redis across events processes, a dead process's slots lapsing with their lease), and a stream's
keepalives cost no new PostgreSQL connections. Real uvicorn processes serving config.asgi, real
PostgreSQL and Redis."""

from __future__ import annotations

import contextlib
import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.utils import timezone

from questions.accounts import api_token_create
from tests.factories import QuestionFactory
from tests.fakes.sse import iter_events
from tests.support import child_env, free_port, open_events, serving, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# Refreshed every third of it: a process starved of the CPU for over two thirds of it (a
# loaded 2-core machine, tests running in parallel) would see its held slots lapse mid-test.
# 5 s lapsed once in a fresh-clone CI run (three pytest processes, each with its servers).
LEASE_SECONDS = 10.0


class Events:
    """One uvicorn events process."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port

    def open(self, job: Any, token: str, *, source: str = "127.0.0.1") -> http.client.HTTPResponse:
        """GET the job's events from the loopback address `source`; the response, unread."""
        return open_events(self.port, job, token, source=source)


@pytest.fixture
def events_server(artifacts: Path) -> Iterator[Callable[..., Events]]:
    with contextlib.ExitStack() as stack:

        def start(**env: str) -> Events:
            port = free_port()
            argv = [
                sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
                "--port", str(port), "--no-access-log", "--lifespan", "off",
                "--timeout-graceful-shutdown", "1",
            ]  # fmt: skip
            process = stack.enter_context(
                serving(
                    argv,
                    env=child_env(
                        **{
                            "QUESTIONS_SSE_MAX_PER_USER": "2",
                            "QUESTIONS_SSE_MAX_PER_IP": "3",
                            "QUESTIONS_SSE_LEASE_SECONDS": str(LEASE_SECONDS),
                            **env,
                        }
                    ),
                    log_path=artifacts / f"uvicorn-{port}.log",
                    base_url=f"http://127.0.0.1:{port}",
                )
            )
            return Events(process, port)

        yield start


def _token(user: Any) -> str:
    return api_token_create(user=user, name="tests").key


def _running(user: Any) -> Any:
    return QuestionFactory(owner=user, status="running", attempts=1, started_at=timezone.now())


def _attached(response: http.client.HTTPResponse) -> http.client.HTTPResponse:
    """A 200 stream that has sent its first event (its slot is held)."""
    assert response.status == 200, response.read()
    next(iter_events(response))
    return response


def _refused(response: http.client.HTTPResponse) -> dict[str, Any]:
    assert response.status == 429
    assert response.getheader("Content-Type").startswith("application/json")
    assert int(response.getheader("Retry-After")) >= 1
    body = json.loads(response.read())
    assert body["error"] == "too_many_streams"
    assert body["retry_after"] >= 1
    return body


def _close(response: http.client.HTTPResponse) -> None:
    response.connection.close()  # type: ignore[attr-defined]


def test_a_user_gets_at_most_the_cap_of_streams_and_closing_one_frees_a_slot(events_server, user):
    events = events_server()
    token = _token(user)
    jobs = [_running(user) for _ in range(3)]
    first, second = (_attached(events.open(job, token)) for job in jobs[:2])

    body = _refused(events.open(jobs[2], token))
    assert "for this user" in body["detail"] and "at most 2" in body["detail"]

    _close(first)

    def opens() -> http.client.HTTPResponse | None:
        response = events.open(jobs[2], token)
        if response.status == 200:
            return response
        _refused(response)
        return None

    # Freed when the server sees the connection go, well before the lease would lapse.
    third = _attached(wait_until(opens, timeout=LEASE_SECONDS, what="a freed slot"))
    _refused(events.open(jobs[0], token))
    _close(second)
    _close(third)


def test_a_client_ip_gets_at_most_its_cap_whoever_the_users_are(events_server, user, other_user):
    events = events_server()
    mine, theirs = _token(user), _token(other_user)
    held = [
        _attached(events.open(_running(user), mine, source="127.0.0.21")),
        _attached(events.open(_running(user), mine, source="127.0.0.21")),
        _attached(events.open(_running(other_user), theirs, source="127.0.0.21")),
    ]
    body = _refused(events.open(_running(other_user), theirs, source="127.0.0.21"))
    assert "from this address" in body["detail"] and "at most 3" in body["detail"]
    # Another address is not affected.
    held.append(_attached(events.open(_running(other_user), theirs, source="127.0.0.22")))
    for response in held:
        _close(response)


def test_slots_are_counted_across_processes_and_a_killed_process_frees_its_own(events_server, user):
    first, second = events_server(), events_server()
    token = _token(user)
    # Both responses are kept: one dropped would be closed by the garbage collector, and its
    # server would give the slot back (a fresh-clone CI run saw 200 for 429 that way).
    on_first = _attached(first.open(_running(user), token))
    held = _attached(second.open(_running(user), token))
    # One stream on each process: the user's cap (2) is reached, whichever process is asked.
    _refused(second.open(_running(user), token))
    _refused(first.open(_running(user), token))

    first.process.kill()  # no chance to give its slot back
    first.process.wait(timeout=10)
    _close(on_first)
    job = _running(user)
    _refused(second.open(job, token))  # still held: its lease has not run out

    def opens() -> http.client.HTTPResponse | None:
        response = second.open(job, token)
        return response if response.status == 200 else None

    freed = _attached(
        wait_until(opens, timeout=LEASE_SECONDS * 3, interval=0.2, what="the lease to lapse")
    )
    _close(freed)
    _close(held)


def _database_stat(column: str) -> int:
    """A counter of this test database in pg_stat_database (`sessions`: connections opened;
    `xact_commit`: transactions, each autocommitted query one)."""
    db = settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], dbname="postgres"
    ) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            f"SELECT {column} FROM pg_stat_database WHERE datname = %s",  # noqa: S608
            [db["NAME"]],
        ).fetchone()
    assert row is not None
    return int(row[0])


def _sessions() -> int:
    return _database_stat("sessions")


def _keepalives(response: http.client.HTTPResponse, count: int) -> None:
    seen = 0
    for item in iter_events(response):
        seen += item == ": keepalive"
        if seen == count:
            return


def test_keepalives_open_no_postgresql_connections(events_server, user):
    events = events_server(
        QUESTIONS_EVENTS_KEEPALIVE="0.2",
        QUESTIONS_EVENTS_CHECK_INTERVAL="0.1",
        QUESTIONS_EVENTS_POLL_INTERVAL="0.1",
    )
    token = _token(user)
    streams = [_attached(events.open(_running(user), token)) for _ in range(2)]
    for response in streams:
        _keepalives(response, 2)  # attached and idle
    before = _sessions()
    for response in streams:
        _keepalives(response, 10)
    opened = _sessions() - before
    # Ten keepalives each: before the fix, a connection opened and closed per keepalive per
    # stream (20 here); now the process's database threads keep theirs.
    assert opened <= 1, opened
    for response in streams:
        _close(response)


def test_with_redis_down_the_rows_are_checked_once_per_interval_not_once_per_watcher(
    events_server, user
):
    # Redis unreachable for the events process: every stream waits on the row check alone.
    events = events_server(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        QUESTIONS_SSE_MAX_PER_USER="0",
        QUESTIONS_SSE_MAX_PER_IP="0",
        QUESTIONS_EVENTS_KEEPALIVE="0.5",
        QUESTIONS_EVENTS_POLL_INTERVAL="0.25",
    )
    token = _token(user)
    watchers = 8
    streams = [_attached(events.open(_running(user), token)) for _ in range(watchers)]
    for response in streams:
        _keepalives(response, 1)
    started, before = time.monotonic(), _database_stat("xact_commit")
    for response in streams:
        _keepalives(response, 6)  # about 3 s for each
    queries = _database_stat("xact_commit") - before
    checks = (time.monotonic() - started) / 0.25
    # One query per interval for all eight (plus PostgreSQL's own lag in counting); before the
    # fix, one per interval per watcher, each on a new connection.
    assert queries <= checks * 2 + 5, (queries, checks)
    for response in streams:
        _close(response)
