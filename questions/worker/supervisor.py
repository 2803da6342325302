"""`run_sqs_worker --processes N`: N worker processes (one event loop and GIL each) under one
supervisor, which forwards SIGTERM/SIGINT, restarts a child that died, and serves one metrics
endpoint for all of them (prometheus_client's multiprocess mode, as config/gunicorn.conf.py does
for the web).

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

from questions.sqs.backoff import CONNECTION_BACKOFF

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
        self._signals = 0
        self._metrics_dir = tempfile.mkdtemp(prefix="worker-metrics-")

    def run(self) -> int:
        handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
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
                    # One still starting when SIGTERM came had no handler yet: it stopped as asked.
                    codes[slot] = 0 if self._stopping and code == -signal.SIGTERM else code
                    if code != 0 and not self._stopping:
                        self._restart(slot, child.pid, code)
        finally:
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
            shutil.rmtree(self._metrics_dir, ignore_errors=True)
        logger.info("All worker processes stopped.")
        return 0 if all(code == 0 for code in codes.values()) else 1

    def _start(self, slot: int) -> None:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": self._metrics_dir}
        child = subprocess.Popen(  # noqa: S603 - our own command
            self.child_argv, env=env, preexec_fn=_die_with_parent
        )
        self._children[slot] = child
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
        self._signals += 1
        self._stopping = True
        name = signal.Signals(signum).name
        logger.info(f"{name} received: passing it on to {len(self._children)} worker processes.")
        for child in self._children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)


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
