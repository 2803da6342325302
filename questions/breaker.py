"""One circuit breaker for a service the process can do without for a while (Redis).

After a failure, callers skip the service for `retry_after` seconds instead of paying a timeout
on every call; the outage is logged once when it starts and once when it ends, never per call.
Thread-safe, and cheap on the happy path (one comparison, one attribute read).
"""

from __future__ import annotations

import logging
import threading
import time


class Breaker:
    def __init__(self, *, logger: logging.Logger, retry_after: float, down: str, up: str) -> None:
        self._logger = logger
        self._retry_after = retry_after
        self._down_message = down
        self._up_message = up
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._last_failure: float | None = None
        self._outage_logged = False

    def available(self) -> bool:
        """False while the breaker is open (a failure less than `retry_after` ago)."""
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._last_failure = time.monotonic()
            self._down_until = self._last_failure + self._retry_after
            if self._outage_logged:
                return
            self._outage_logged = True
        self._logger.warning(self._down_message, extra={"error": type(exc).__name__})

    def failed_within(self, seconds: float) -> bool:
        """Whether the service failed less than `seconds` ago (what it holds may be stale)."""
        last = self._last_failure
        return last is not None and time.monotonic() - last < seconds

    def succeeded(self) -> None:
        if not self._outage_logged:
            return
        with self._lock:
            if not self._outage_logged:
                return
            self._outage_logged = False
        self._logger.info(self._up_message)

    def reset(self) -> None:
        """Close the breaker (tests, and after an operator fixed the service)."""
        with self._lock:
            self._down_until = 0.0
            self._last_failure = None
            self._outage_logged = False
