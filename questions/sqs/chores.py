"""Periodic chores (a requeue sweep, a queue-depth gauge) on a thread of their own.

The command passes them in as plain callables with an interval; this module knows nothing of
what they do. A chore that raises is logged and tried again at its next turn; `stop()` (called
on the first SIGTERM) ends the thread between chores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

logger = logging.getLogger("questions.sqs.worker")


@dataclass(frozen=True, slots=True)
class Chore:
    name: str
    interval: float
    run: Callable[[], None]
    first_after: float = 0.0  # seconds after start-up of the first run


class ChoreThread(threading.Thread):
    def __init__(self, chores: Sequence[Chore]) -> None:
        super().__init__(name="worker-chores", daemon=True)
        self.chores = [chore for chore in chores if chore.interval > 0]
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        start = time.monotonic()
        due = {chore.name: start + chore.first_after for chore in self.chores}
        while self.chores and not self._halt.is_set():
            now = time.monotonic()
            for chore in self.chores:
                if self._halt.is_set():
                    return
                if now >= due[chore.name]:
                    due[chore.name] = now + chore.interval
                    try:
                        chore.run()
                    except Exception as exc:
                        logger.warning(
                            "worker chore failed", extra={"chore": chore.name, "error": repr(exc)}
                        )
            self._halt.wait(max(min(due.values()) - time.monotonic(), 0.05))
