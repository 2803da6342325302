"""The worker's database access: a small, bounded pool of threads, each with its one connection.

Jobs run as coroutines; every ORM call they make goes through `run_db`, onto one of
`QUESTIONS_WORKER_DB_THREADS` threads. So however many jobs are in flight, the process holds at
most that many PostgreSQL connections (Django's connections are per thread, kept `CONN_MAX_AGE`),
and none is held by a job while its LLM call runs. It works the same on SQLite (`make run`).
A connection that broke (PostgreSQL restarted, a proxy dropped it) is closed after its first
error, so the next call on that thread opens a fresh one.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection
from django.db.utils import InterfaceError, OperationalError

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None


def db_executor() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(
                    max_workers=settings.QUESTIONS_WORKER_DB_THREADS, thread_name_prefix="db"
                )
    return _executor


def _in_db_thread[T](call: Callable[[], T]) -> T:
    try:
        return call()
    except (OperationalError, InterfaceError):
        connection.close()  # broken: the next call on this thread reconnects
        raise
    finally:
        close_old_connections()


async def run_db[T](function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """Run `function` (ORM work) on the pool and wait for it without blocking the event loop."""
    loop = asyncio.get_running_loop()
    # The job's context (trace span, job id for logs) goes along, as asyncio.to_thread does.
    context = contextvars.copy_context()
    return await loop.run_in_executor(
        db_executor(), context.run, _in_db_thread, partial(function, *args, **kwargs)
    )


def run_db_sync[T](function: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`run_db` for plain threads (the worker's chores): same pool, same connection bound."""
    return db_executor().submit(_in_db_thread, partial(function, *args, **kwargs)).result()
