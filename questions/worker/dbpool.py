"""The worker's database access: a small, bounded pool of threads, each with its one connection.

Jobs run as coroutines; every ORM call they make goes through `run_db`, onto one of
`QUESTIONS_WORKER_DB_THREADS` threads. So however many jobs are in flight, the process holds at
most that many PostgreSQL connections (Django's connections are per thread, and each thread
keeps its own open), and none is held by a job while its LLM call runs. It works the same on
SQLite (`make run`).
A connection that broke (PostgreSQL restarted, a proxy dropped it) is closed after its first
error, and so is every other thread's before its next call (a restart broke them all): one
failed call per outage, not one per thread; each thread's next call opens a fresh connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.utils import InterfaceError, OperationalError

_lock = threading.Lock()
_executor: ThreadPoolExecutor | None = None
_opened: list[Any] = []  # each pool thread's connection wrapper
_thread = threading.local()
# Bumped when a connection breaks: a thread whose connection is older closes it first.
_generation = 0


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
    # Each thread keeps its connection between calls whatever CONN_MAX_AGE says: the threads
    # are the pool. Only a connection that broke is closed, so the next call reconnects.
    global _generation
    if not getattr(_thread, "registered", False):
        _thread.registered = True
        _thread.generation = _generation
        with _lock:
            _opened.append(connections[DEFAULT_DB_ALIAS])
    if _thread.generation != _generation:
        _thread.generation = _generation
        connection.close()
    try:
        return call()
    except (OperationalError, InterfaceError):
        connection.close()
        with _lock:
            _generation += 1
            _thread.generation = _generation
        raise


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


def shutdown_db_pool() -> None:
    """Close the pool's connections and threads (the worker's exit; tests between runs)."""
    global _executor
    with _lock:
        executor, _executor = _executor, None
        wrappers = list(_opened)
        _opened.clear()
    if executor is not None:
        executor.shutdown(wait=True, cancel_futures=True)
    for wrapper in wrappers:
        # The threads are gone: close what they left open, bypassing the thread check.
        raw = wrapper.connection
        if raw is not None:
            with contextlib.suppress(Exception):
                raw.close()
            wrapper.connection = None
