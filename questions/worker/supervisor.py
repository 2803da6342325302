"""`run_sqs_worker --processes N`: N worker processes (one event loop and GIL each) under one
supervisor, which passes stop signals on, restarts a child that died, and serves one metrics
endpoint for all of them (prometheus_client's multiprocess mode, as config/gunicorn.conf.py does
for the web).

Signals reach it alone (Kubernetes, Docker, ECS, systemd's KillMode=mixed: PID 1 or the main
process) or with its children (systemd's default control-group kill, `kill -- -PGID`, Ctrl-C in a
terminal). Either way:

- SIGTERM (any number) or a first SIGINT: one graceful stop; each child is sent SIGTERM once,
  which a child never counts as a second signal.
- A second SIGINT or a SIGQUIT: forced; each child is sent SIGQUIT, which makes it exit at once.

Each child is the same command with `--processes 1` and no metrics port. A child that exits 0
finished its work (`--burst`) and is not restarted; one that dies (a crash, kill -9) is, after a
pause that grows while it keeps dying. The supervisor exits once every child has: 0 if all did.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from types import FrameType

from django.conf import settings
from prometheus_client import CollectorRegistry, multiprocess, start_http_server

from questions.backoff import CONNECTION_BACKOFF

logger = logging.getLogger("questions.worker")


class Supervisor:
    def __init__(
        self, *, child_argv: list[str], processes: int, metrics_port: int | None = None
    ) -> None:
        self.child_argv = child_argv
        self.processes = processes
        self.metrics_port = metrics_port
        self._children: dict[int, subprocess.Popen[bytes]] = {}  # slot → process
        self._deaths: dict[int, int] = {}
        self._stopping = False
        self._forced = False
        self._interrupts = 0
        self._metrics_dir = tempfile.mkdtemp(prefix="worker-metrics-")

    def run(self) -> int:
        handlers = {s: signal.signal(s, self._on_signal) for s in _STOP_SIGNALS}
        if self.metrics_port is not None:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry, path=self._metrics_dir)
            start_http_server(self.metrics_port, addr=settings.METRICS_ADDR, registry=registry)
        codes: dict[int, int] = {}
        try:
            for slot in range(self.processes):
                self._start(slot)
            while self._children:
                time.sleep(0.2)
                for slot, child in list(self._children.items()):
                    code = child.poll()
                    if code is None:
                        continue
                    del self._children[slot]
                    multiprocess.mark_process_dead(child.pid, self._metrics_dir)
                    # One still starting when a stop came had no handler yet: it stopped as asked.
                    graceful = self._stopping and not self._forced
                    codes[slot] = 0 if graceful and code in _UNHANDLED_STOP else code
                    if codes[slot] != 0 and self._stopping:
                        # Say why the stop is not a clean one (a child killed meanwhile, or
                        # jobs cut off by --shutdown-timeout): the exit code alone does not.
                        logger.warning(
                            f"Worker process {child.pid} ended with exit {code} during the stop."
                        )
                    if code != 0 and not self._stopping:
                        self._restart(slot, child.pid, code)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        logger.info("All worker processes stopped.")
        return 0 if all(code == 0 for code in codes.values()) and not self._forced else 1

    def _start(self, slot: int) -> None:
        if self._stopping:
            return
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        child = subprocess.Popen(  # noqa: S603 - our own command
            self.child_argv, env=env, preexec_fn=_die_with_parent
        )
        self._children[slot] = child
        if self._stopping:  # the signal came while it was being started
            self._pass_on(signal.SIGQUIT if self._forced else signal.SIGTERM)
        logger.info(f"Started worker process {child.pid} (slot {slot}).")

    def _restart(self, slot: int, pid: int, code: int) -> None:
        self._deaths[slot] = self._deaths.get(slot, 0) + 1
        delay = CONNECTION_BACKOFF.delay(self._deaths[slot])
        logger.warning(
            f"Worker process {pid} died (exit {code}); restarting it in {delay:.1f}s.",
        )
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and not self._stopping:
            time.sleep(0.1)
        if not self._stopping:
            self._start(slot)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            self._interrupts += 1
        if signum == signal.SIGQUIT or self._interrupts > 1:
            if not self._forced:
                self._forced = self._stopping = True
                logger.warning(f"{name}: forcing {len(self._children)} worker processes to exit.")
            self._pass_on(signal.SIGQUIT)
            return
        if self._stopping:  # one graceful stop, however many SIGTERMs
            logger.info(
                f"{name} again: already stopping gracefully (Ctrl-C twice or SIGQUIT forces)."
            )
            return
        self._stopping = True
        logger.info(
            f"{name} received: stopping {len(self._children)} worker processes gracefully "
            "(Ctrl-C again or SIGQUIT to force)."
        )
        self._pass_on(signal.SIGTERM)

    def _pass_on(self, signum: int) -> None:
        for child in self._children.values():
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.send_signal(signum)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
# How a child that had no handlers yet ends on a graceful stop (the default actions).
_UNHANDLED_STOP = (-signal.SIGTERM, -signal.SIGINT)


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies (kill -9 included), so no
    worker is ever left running unsupervised (Linux; elsewhere a no-op)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def child_command(argv: list[str]) -> list[str]:
    """This process's command line for one child: `--processes 1`, no metrics port."""
    args: list[str] = []
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg in ("--processes", "--metrics-port"):
            skip = True
            continue
        if arg.startswith(("--processes=", "--metrics-port=")):
            continue
        args.append(arg)
    return [sys.executable, argv[0], *args, "--processes=1"]
