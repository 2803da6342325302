"""The faults, on schedule, and the samplers that watch the run (PostgreSQL sessions, RSS)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from bench.soak.plan import Plan
from bench.soak.provider import Provider
from bench.soak.services import (
    Managed,
    PrivatePostgres,
    accepts,
    children_of,
    ports_connected_to,
    rss_mib,
    wait_for,
)
from tests.support import TCPProxy


@dataclass
class Stack:
    postgres: PrivatePostgres
    redis: Managed
    redis_port: int
    sqs_proxy: TCPProxy
    provider: Provider
    web: Managed
    events: Managed
    events_port: int
    supervisors: list[Managed]


# How often the worker children's connections to the provider are sampled, and how long a
# closed one still counts as a call its child may not have stored yet.
SAMPLE_SECONDS = 0.2
RECENT_SECONDS = 3.0


@dataclass
class Fault:
    at: float  # time.monotonic()
    kind: str
    detail: dict[str, Any] = field(default_factory=dict)


class Chaos:
    def __init__(self, plan: Plan, stack: Stack) -> None:
        self.plan = plan
        self.stack = stack
        self.log: list[Fault] = []
        self._random = random.Random(plan.seed)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sigterms = 0
        self._lock = threading.Lock()
        # Supervisors being stopped: a kill -9 of one of their children would make the stop's
        # exit code say "killed", and the SIGTERM check would test the kill, not the stop.
        self._stopping: set[str] = set()
        # pid → {local port of a connection to the provider: when last seen}, sampled every
        # SAMPLE_SECONDS: a call whose answer came in just before a kill -9 has closed its
        # connection by then, yet the killed child had not stored (or stashed) its answer.
        self._seen: dict[int, dict[int, float]] = {}

    def run(self, t0: float) -> None:
        sampler = threading.Thread(target=self._sample_connections, daemon=True)
        sampler.start()
        self._threads.append(sampler)
        for offset, name in self.plan.schedule():
            if self._stop.wait(max(0.0, t0 + offset - time.monotonic())):
                return
            action = self._actions()[name]
            thread = threading.Thread(target=self._guarded, args=(name, action), daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()

    def _worker_children(self) -> list[int]:
        return [
            pid for sup in self.stack.supervisors if sup.alive() for pid in children_of(sup.pid)
        ]

    def _sample_connections(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            now = time.monotonic()
            for pid in self._worker_children():
                ports = ports_connected_to(pid, self.stack.provider.fake.port)
                with self._lock:
                    seen = self._seen.setdefault(pid, {})
                    seen.update(dict.fromkeys(ports, now))
                    for port in [p for p, at in seen.items() if at < now - RECENT_SECONDS]:
                        del seen[port]

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(timeout=max(0.1, deadline - time.monotonic()))

    def _note(self, kind: str, **detail: Any) -> Fault:
        fault = Fault(time.monotonic(), kind, detail)
        with self._lock:
            self.log.append(fault)
        return fault

    def _guarded(self, name: str, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # a fault that could not be dealt is part of the report
            self._note("fault failed", fault=name, error=repr(exc))

    def _actions(self) -> dict[str, Any]:
        return {
            "kill -9 a worker child": self.kill_child,
            "SIGTERM a worker's group, then start it": self.sigterm_group,
            "restart Redis": self.restart_redis,
            "restart PostgreSQL": self.restart_postgres,
            "cut SQS off": self.cut_sqs,
            "restart the events process": self.restart_events,
            "provider pause (429)": self.pause_provider,
        }

    def kill_child(self) -> None:
        with self._lock:
            stopping = set(self._stopping)
        children = [
            pid
            for sup in self.stack.supervisors
            if sup.alive() and sup.name not in stopping
            for pid in children_of(sup.pid)
        ]
        if not children:
            self._note("kill -9", pid=None, skipped="no worker child alive")
            return
        pid = self._random.choice(children)
        # the calls it cuts: its connections to the provider, taken just before the kill, and
        # those it closed in the last RECENT_SECONDS (answered, but perhaps not yet stored)
        ports = ports_connected_to(pid, self.stack.provider.fake.port)
        with self._lock:
            recent = [port for port in self._seen.pop(pid, {}) if port not in ports]
        ports = [*ports, *recent]
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        fault = self._note("kill -9", pid=pid, ports=ports)
        fault.detail["done"] = True

    def sigterm_group(self) -> None:
        with self._lock:
            supervisor = self.stack.supervisors[self._sigterms % len(self.stack.supervisors)]
            self._sigterms += 1
            self._stopping.add(supervisor.name)
        fault = self._note("SIGTERM group", name=supervisor.name)
        try:
            code = supervisor.stop(timeout=self.plan.shutdown_timeout + 15)
            fault.detail.update(exit_code=code, seconds=round(time.monotonic() - fault.at, 1))
            fault.detail["stopped_at"] = time.monotonic()
            supervisor.start()
        finally:
            with self._lock:
                self._stopping.discard(supervisor.name)

    def restart_redis(self) -> None:
        fault = self._note("restart Redis")
        self.stack.redis.stop(timeout=10)
        self.stack.redis.start()
        wait_for(lambda: accepts(self.stack.redis_port), timeout=30, what="redis")
        fault.detail["seconds"] = round(time.monotonic() - fault.at, 1)

    def restart_postgres(self) -> None:
        fault = self._note("restart PostgreSQL")
        self.stack.postgres.restart()
        fault.detail["seconds"] = round(time.monotonic() - fault.at, 1)

    def cut_sqs(self) -> None:
        fault = self._note("cut SQS", seconds=self.plan.sqs_cut_seconds)
        self.stack.sqs_proxy.cut()
        try:
            self._stop.wait(self.plan.sqs_cut_seconds)
        finally:
            self.stack.sqs_proxy.restore()
        fault.detail["restored"] = True

    def restart_events(self) -> None:
        fault = self._note("restart events")
        code = self.stack.events.stop(timeout=15)
        self.stack.events.start()
        wait_for(lambda: accepts(self.stack.events_port), timeout=60, what="the events process")
        fault.detail.update(exit_code=code, seconds=round(time.monotonic() - fault.at, 1))

    def pause_provider(self) -> None:
        self._note("provider pause", seconds=self.plan.pause_seconds)
        self.stack.provider.pause(self.plan.pause_seconds)


# --------------------------------------------------------------------------- samplers


@dataclass
class Samples:
    pg: list[tuple[float, int]] = field(default_factory=list)
    rss: list[tuple[float, str, int, float]] = field(default_factory=list)  # t, role, pid, MiB


class Sampler:
    """Every `interval` s: the sessions on the soak database (pg_stat_activity, the sampler's
    own left out) and the RSS of every process of the service (leaders and their children)."""

    def __init__(
        self, stack: Stack, *, database: str, leave_out: str, interval: float = 2.0
    ) -> None:
        self.stack = stack
        self.database = database
        self.leave_out = leave_out
        self.interval = interval
        self.samples = Samples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-sampler", daemon=True)
        self._conn: Any = None

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            count = self._pg_sessions()
            if count is not None:
                self.samples.pg.append((now, count))
            for managed in [self.stack.web, self.stack.events, *self.stack.supervisors]:
                if not managed.alive():
                    continue
                pids = [(managed.name, managed.pid)]
                pids += [(f"{managed.name} child", pid) for pid in children_of(managed.pid)]
                for role, pid in pids:
                    mib = rss_mib(pid)
                    if mib:
                        self.samples.rss.append((now, role, pid, mib))

    def _pg_sessions(self) -> int | None:
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self.stack.postgres.admin_url, autocommit=True, connect_timeout=2
                )
            row = self._conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s",
                (self.database, self.leave_out),
            ).fetchone()
            return int(row[0]) if row else None
        except psycopg.Error:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            return None
