"""The worker's liveness signal: a file whose modification time its event loop renews.

`run_sqs_worker --alive-file PATH`: the runner's heartbeat touches the file on every tick (about
once a second), on the event loop itself, so the file goes stale when the loop is blocked or has
stopped, not merely when the process is gone. A probe only compares the file's age, with no
Python start-up: `find PATH -mmin -1 | grep -q .` (deploy/k8s/base/worker.yaml).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger("questions.sqs.worker")


class AliveFile:
    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path else None
        self._failed = False

    def touch(self) -> None:
        if self.path is None:
            return
        try:
            self.path.touch()
        except OSError as exc:
            if not self._failed:  # once, not every second
                logger.warning("could not touch the alive file", extra={"error": repr(exc)})
            self._failed = True
        else:
            self._failed = False
