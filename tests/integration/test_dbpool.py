"""The worker's database threads against the real PostgreSQL: when it drops their connections
(a restart, a proxy that cut them), one call fails, not one per thread."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.db.utils import OperationalError

from questions.worker.dbpool import run_db_sync, shutdown_db_pool

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 4


def _backend_pid() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


def _on_every_thread() -> list[int]:
    """`_backend_pid` on each pool thread: each call waits for the others, so none shares one."""
    barrier = threading.Barrier(THREADS)

    def together() -> int:
        barrier.wait(timeout=10)
        return _backend_pid()

    with ThreadPoolExecutor(THREADS) as callers:
        return list(callers.map(lambda _: run_db_sync(together), range(THREADS)))


def test_after_postgresql_drops_the_pools_connections_one_call_fails(settings):
    settings.QUESTIONS_WORKER_DB_THREADS = THREADS
    shutdown_db_pool()
    try:
        pids = _on_every_thread()
        assert len(set(pids)) == THREADS
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM unnest(%s) AS pid", [pids])
            assert cursor.fetchone()[0] == THREADS

        with pytest.raises(OperationalError):
            run_db_sync(_backend_pid)  # the first call finds its connection gone...
        # ...and every thread opens a fresh one before its next call.
        fresh = _on_every_thread()
        assert not set(fresh) & set(pids)
    finally:
        shutdown_db_pool()
