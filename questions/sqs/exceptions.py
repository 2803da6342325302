"""How a task tells the worker what to do with its message, besides finishing normally."""

from __future__ import annotations


class RetryLater(Exception):  # noqa: N818 - an instruction, not an error
    """Leave the message on the queue and deliver it again after `delay` seconds."""

    def __init__(self, delay: float, reason: str) -> None:
        super().__init__(f"retry in {delay:.1f}s: {reason}")
        self.delay = delay
        self.reason = reason


class DeadLetter(Exception):  # noqa: N818 - an instruction, not an error
    """The message can never succeed (it names no job, say): move it to the DLQ."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
