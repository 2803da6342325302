"""The SQS worker behind `manage.py run_sqs_worker`: a consumer (SQS), an executor (the task a
message names) and a runner (slots, heartbeat, acknowledgements, grace period) put together,
plus signals and the chores the command passes in.

Signals (Celery's warm shutdown; README "Stopping and deploying"):

- SIGTERM, however many times and from wherever (the kernel to the process group, the
  supervisor's forwarded copy, systemd's control-group kill), is one graceful stop: stop receiving
  and the chores, give back what arrives after it (a long poll in flight included), hand back
  the jobs that have not started paying (the command's `on_stop`), let jobs mid-call finish
  within the grace period, exit 0 (1 when jobs were cut off mid-call; their messages were given
  back). An SQS outage meanwhile does not make it fail: what cannot be settled reappears after
  its visibility timeout.
- SIGINT (Ctrl-C) once is that same graceful stop; a second SIGINT forces. SIGTERM never counts
  towards it, so Ctrl-C in a terminal (SIGINT from the tty plus the supervisor's SIGTERM) is still
  one graceful stop.
- SIGQUIT forces at once. A forced stop exits 1 without waiting; what it cuts off is redelivered
  (the message after its visibility timeout, the job once its lease lapses).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Awaitable, Callable, Sequence
from types import FrameType
from typing import Any

from questions.backoff import DEFAULT_MAX_ATTEMPTS
from questions.sqs.chores import Chore, ChoreThread
from questions.sqs.consumer import Consumer
from questions.sqs.executor import TaskExecutor, WorkerTaskContext
from questions.sqs.runner import Runner

__all__ = [
    "STOP_SIGNALS",
    "Chore",
    "Worker",
    "WorkerTaskContext",
    "flush_and_exit",
    "restore_signal_handlers",
]

logger = logging.getLogger(__name__)


class Worker:
    """Consumes one SQS queue and runs the `django.tasks` tasks its messages name."""

    def __init__(
        self,
        *,
        queue_name: str,
        dlq_name: str,
        concurrency: int = 4,
        batch_size: int = 10,
        wait_time: int = 20,
        visibility_timeout: int = 60,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        burst: bool = False,
        shutdown_timeout: float = 30.0,
        chores: Sequence[Chore] = (),
        alive_file: str | None = None,
        on_stop: Callable[[], None] | None = None,
        on_loop_end: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.queue_name = queue_name
        self.runner = Runner(
            consumer=Consumer(
                queue_name=queue_name, dlq_name=dlq_name, visibility_timeout=visibility_timeout
            ),
            handler=TaskExecutor(
                queue_name=queue_name, worker_id=self.worker_id, max_attempts=max_attempts
            ),
            concurrency=concurrency,
            batch_size=batch_size,
            wait_time=wait_time,
            burst=burst,
            shutdown_timeout=shutdown_timeout,
            alive_file=alive_file,
            on_stop=on_stop,
            on_loop_end=on_loop_end,
        )
        self.chores = ChoreThread(chores)
        self._stopping = False
        self._interrupts = 0

    @property
    def processed(self) -> int:
        return self.runner.processed

    @property
    def unfinished(self) -> int:
        return self.runner.unfinished

    def stop(self) -> None:
        """Stop receiving and wind down (thread-safe)."""
        self.chores.stop()
        self.runner.stop()

    def run(self) -> bool:
        """Consume until stopped; False if jobs were cut off by the grace period."""
        logger.info(
            f"Worker {self.worker_id} consuming {self.queue_name} "
            f"(concurrency {self.concurrency}, max attempts {self.max_attempts})"
        )
        self.chores.start()
        try:
            return self.runner.run()
        finally:
            self.chores.stop()

    def install_signal_handlers(self) -> dict[int, Any]:
        """Route SIGTERM/SIGINT to a graceful stop and a second SIGINT or SIGQUIT to a forced
        one (main thread only); returns the old handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self._interrupts += 1
        if signum == signal.SIGQUIT or self._interrupts > 1:
            logger.warning(
                f"{name}: forced stop, exiting now; what was cut off will be redelivered."
            )
            flush_and_exit(1)
        if self._stopping:  # one graceful stop, however many SIGTERMs (Celery's warm shutdown)
            logger.info(
                f"{name} again: already stopping gracefully (Ctrl-C twice or SIGQUIT forces)."
            )
            return
        self._stopping = True
        logger.info(
            f"{name} received: finishing jobs in flight, then exiting "
            "(Ctrl-C again or SIGQUIT to force)."
        )
        self.stop()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


def flush_and_exit(code: int) -> None:
    """Exit the process now, without waiting for running jobs (after flushing output)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def restore_signal_handlers(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
