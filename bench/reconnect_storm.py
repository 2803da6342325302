"""Reconnect storm: the events process restarts under N watchers, who all come back at once.

    python -m bench.reconnect_storm                       # 1,000 watchers of 1,000 jobs
    python -m bench.reconnect_storm --watchers 200        # a short pass
    python -m bench.reconnect_storm --code /tmp/before    # the events process from another tree

The rig: a private redis-server (so that CLIENT LIST counts the events process's connections
and nothing else), a database of its own (`questions_bench_storm`, so that pg_stat_activity
counts only this run), one uvicorn events process on production settings. No worker and no
SQS: every job is `running`, with a `status` and a few `delta` entries in its answer stream.

1. N watchers (N jobs of N / 10 users, from 20 loopback addresses) open their streams and read
   up to the last entry; they then remember the id of the entry before it, as a client would
   whose connection dropped just before the last event.
2. The events process is killed (SIGKILL: a crash, or the restart of a deploy that did not wait)
   and a new one started on the same port; when it answers /healthz every watcher reconnects at
   the same moment with `Last-Event-ID`, so every job needs its catch-up read.
3. Measured from that moment: the time until each watcher has its missed entry again
   (re-attached), peak PostgreSQL connections of the run's database (pg_stat_activity, sampled
   every 20 ms), peak Redis connections (CLIENT LIST), connections PostgreSQL opened
   (pg_stat_database.sessions), responses that were not 200 and streams that failed; then the
   same counts over an idle minute after (keepalives, the check for finished jobs).

A watcher refused with 429 waits its Retry-After and tries again (EventSource would give up and
the page fall back to polling); refusals are counted. Prints a Markdown table and writes JSON
to bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("BENCH_DATABASE", "questions_bench_storm")

from bench.rig import (  # noqa: E402
    BENCH_DB,
    PG_ADMIN_URL,
    ROOT,
    Rig,
    cpu_seconds,
    prepare_database,
    setup_django,
)
from tests.support import free_port  # noqa: E402
from tests.support import wait_until as wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SOURCES = [f"127.0.0.{n}" for n in range(10, 30)]
WATCHERS_PER_USER = 10


@dataclass
class Watcher:
    job_id: str
    token: str
    source: str
    last_id: str = "0"
    resume_from: str = "0"
    attached: asyncio.Event = field(default_factory=asyncio.Event)
    reattached_at: float | None = None
    refused: int = 0
    errors: list[str] = field(default_factory=list)
    writer: asyncio.StreamWriter | None = None

    async def connect(self, port: int, *, after: str, until: str, go: asyncio.Event) -> None:
        """Open the stream (again while refused) and read until the entry `until` arrives."""
        await go.wait()
        while True:
            try:
                reader, writer = await asyncio.open_connection(
                    "127.0.0.1", port, local_addr=(self.source, 0), limit=1 << 16
                )
                self.writer = writer
                writer.write(
                    (
                        f"GET /api/questions/{self.job_id}/events HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        f"Authorization: Token {self.token}\r\nAccept: text/event-stream\r\n"
                        f"Last-Event-ID: {after}\r\n\r\n"
                    ).encode()
                )
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                headers = {}
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                if status == 429:
                    self.refused += 1
                    writer.close()
                    await asyncio.sleep(float(headers.get("retry-after", "1")))
                    continue
                if status != 200:
                    self.errors.append(f"status {status}")
                    writer.close()
                    return
                await self._read(reader, until)
                return
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                self.errors.append(type(exc).__name__)
                await asyncio.sleep(0.5)

    async def _read(self, reader: asyncio.StreamReader, until: str) -> None:
        # uvicorn answers chunked; an event's lines may span chunks, ids are on their own line.
        while True:
            size_line = await reader.readline()
            if not size_line:
                raise asyncio.IncompleteReadError(b"", None)
            size = int(size_line.strip() or b"0", 16)
            chunk = await reader.readexactly(size + 2)
            for line in chunk.decode().splitlines():
                if line.startswith("id: "):
                    self.last_id = line[4:]
                    if self.last_id == until:
                        self.reattached_at = time.monotonic()
                        self.attached.set()
                        return

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Sampler:
    """Peak PostgreSQL and Redis connections, every 20 ms, in a thread."""

    def __init__(self, redis_port: int) -> None:
        import psycopg
        import redis

        self._pg = psycopg.connect(
            PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
        )
        self._redis = redis.Redis(port=redis_port)
        self.peak_pg = self.peak_redis = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def pg_connections(self) -> int:
        row = self._pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [BENCH_DB]
        ).fetchone()
        return int(row[0]) if row else 0

    def pg_sessions(self) -> int:
        self._pg.execute("SELECT pg_stat_clear_snapshot()")
        row = self._pg.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [BENCH_DB]
        ).fetchone()
        return int(row[0]) if row else 0

    def redis_connections(self) -> int:
        return len(self._redis.client_list()) - 1  # not this one

    def _loop(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_pg = max(self.peak_pg, self.pg_connections())
            self.peak_redis = max(self.peak_redis, self.redis_connections())

    def start(self) -> None:
        self.peak_pg = self.peak_redis = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        self._thread.join()
        return self.peak_pg, self.peak_redis


def _seed(watchers: int) -> list[tuple[str, str, list[str]]]:
    """N running jobs of N / 10 users, each with a stream: (job id, token, entry ids)."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.utils import timezone
    from django_redis import get_redis_connection

    from questions.accounts import api_token_create
    from questions.live.streams import stream_key
    from questions.models import Question

    suffix = uuid.uuid4().hex[:6]
    users = get_user_model().objects.bulk_create(
        get_user_model()(username=f"storm-{suffix}-{n}", password="!")  # unusable: tokens only
        for n in range(max(1, watchers // WATCHERS_PER_USER))
    )
    tokens = [api_token_create(user=user, name="bench") for user in users]
    now = timezone.now()
    jobs = Question.objects.bulk_create(
        Question(
            owner=tokens[n % len(tokens)].token.user, text=f"Storm question {n}?",
            status=Question.Status.RUNNING, attempts=1, enqueued_at=now, started_at=now,
        )
        for n in range(watchers)
    )  # fmt: skip
    redis = get_redis_connection("default")
    pipe = redis.pipeline(transaction=False)
    for job in jobs:
        key = stream_key(job.pk)
        pipe.xadd(key, {"status": "running"})
        for word in range(3):
            pipe.xadd(key, {"delta": f"word{word} "})
        pipe.expire(key, 3600)
    pipe.execute()
    pipe = redis.pipeline(transaction=False)
    for job in jobs:
        pipe.xrange(stream_key(job.pk))
    ids = [[entry_id.decode() for entry_id, _ in entries] for entries in pipe.execute()]
    connection.close()
    return [(str(job.pk), tokens[n % len(tokens)].key, ids[n]) for n, job in enumerate(jobs)]


def _start_events(rig: Rig, env: dict[str, str], port: int, code: Path, name: str) -> Any:
    return rig.start(
        name,
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--app-dir", str(code),
         "--host=127.0.0.1", f"--port={port}", "--no-access-log", "--lifespan=off",
         "--timeout-graceful-shutdown=2"],
        env={**env, "PYTHONPATH": str(code)},
        ready="Uvicorn running",
    )  # fmt: skip


async def _storm(
    watchers: list[Watcher], port: int, *, phase: str, timeout: float
) -> dict[str, Any]:
    go = asyncio.Event()
    for watcher in watchers:
        watcher.attached.clear()
        watcher.reattached_at = None
    tasks = [
        asyncio.create_task(
            w.connect(port, after=w.resume_from if phase == "reconnect" else "0",
                      until=w.last_id, go=go)
        )
        for w in watchers
    ]  # fmt: skip
    started = time.monotonic()
    go.set()
    done, _ = await asyncio.wait(tasks, timeout=timeout)
    attached = [w.reattached_at - started for w in watchers if w.reattached_at is not None]
    attached.sort()
    return {
        "attached": len(attached),
        "p50_s": attached[len(attached) // 2] if attached else None,
        "all_s": attached[-1] if len(attached) == len(watchers) else None,
        "unfinished": len(tasks) - len(done),
    }


def run(n: int, code: Path, idle: float) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logdir = RESULTS / f"{stamp}-reconnect-storm"
    logdir.mkdir(parents=True, exist_ok=True)
    redis_port, events_port = free_port(), free_port()
    redis_server = subprocess.Popen(
        [shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
         "--save", "", "--appendonly", "no", "--maxclients", "10000"],
        stdout=(logdir / "redis.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    rig = Rig(logdir=logdir)
    try:
        env = rig.env(
            REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
            OTEL_SDK_DISABLED="true",
            DJANGO_SECURE_SSL_REDIRECT="false",
            LOG_LEVEL="WARNING",
        )
        prepare_database(env)
        setup_django(env)
        wait_for(lambda: _redis_up(redis_port), timeout=10, what="redis-server")
        seeded = _seed(n)
        watchers = [
            Watcher(job_id=job_id, token=token, source=SOURCES[i % len(SOURCES)], last_id=ids[-1])
            for i, (job_id, token, ids) in enumerate(seeded)
        ]
        for watcher, (_, _, ids) in zip(watchers, seeded, strict=True):
            watcher.resume_from = ids[-2]
        sampler = Sampler(redis_port)
        process = _start_events(rig, env, events_port, code, "events-first")
        first = asyncio.run(_attach_then_storm(watchers, rig, env, events_port, code, sampler,
                                               process, idle))  # fmt: skip
    finally:
        rig.close()
        redis_server.send_signal(signal.SIGTERM)
        redis_server.wait(timeout=10)
    events_log = (logdir / "events.log").read_text(errors="replace")
    first["log_max_connections_errors"] = events_log.count("MaxConnectionsError")
    first["log_redis_unreadable"] = events_log.count("answer streams unreadable")
    first["watchers"] = n
    first["code"] = str(code)
    (logdir / "report.json").write_text(json.dumps(first, indent=2))
    return first


def _redis_up(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port).ping())
    except redis.RedisError:
        return False


async def _attach_then_storm(
    watchers: list[Watcher], rig: Rig, env: dict[str, str], port: int, code: Path,
    sampler: Sampler, process: Any, idle: float,
) -> dict[str, Any]:  # fmt: skip
    attach = await _storm(watchers, port, phase="attach", timeout=120)
    # The process dies under its watchers; a new one starts on the same port.
    process.popen.send_signal(signal.SIGKILL)
    process.popen.wait(timeout=10)
    rig.stop(process)
    for watcher in watchers:
        watcher.close()
        watcher.errors.clear()
        watcher.refused = 0
    process = _start_events(rig, env, port, code, "events")
    sessions_before = sampler.pg_sessions()
    cpu_before = cpu_seconds(process.pid)
    sampler.start()
    storm = await _storm(watchers, port, phase="reconnect", timeout=180)
    peak_pg, peak_redis = sampler.stop()
    sessions_storm = sampler.pg_sessions() - sessions_before
    cpu_storm = cpu_seconds(process.pid) - cpu_before
    # Idle: every watcher attached, nothing written. Keepalives and the finished-job check.
    sampler.start()
    idle_sessions_before = sampler.pg_sessions()
    cpu_before = cpu_seconds(process.pid)
    await asyncio.sleep(idle)  # the measured span itself
    idle_peak_pg, idle_peak_redis = sampler.stop()
    idle_sessions = sampler.pg_sessions() - idle_sessions_before
    cpu_idle = cpu_seconds(process.pid) - cpu_before
    settled_pg, settled_redis = sampler.pg_connections(), sampler.redis_connections()
    for watcher in watchers:
        watcher.close()
    return {
        "first_attach": attach,
        "storm": storm,
        "storm_peak_pg_connections": peak_pg,
        "storm_peak_redis_connections": peak_redis,
        "storm_pg_sessions_opened": sessions_storm,
        "storm_cpu_s": cpu_storm,
        "idle_cpu_s": cpu_idle,
        "refused_429": sum(w.refused for w in watchers),
        "failed_streams": sum(bool(w.errors) for w in watchers),
        "errors": sorted({e for w in watchers for e in w.errors})[:5],
        "idle_seconds": idle,
        "idle_peak_pg_connections": idle_peak_pg,
        "idle_peak_redis_connections": idle_peak_redis,
        "idle_pg_sessions_opened": idle_sessions,
        "settled_pg_connections": settled_pg,
        "settled_redis_connections": settled_redis,
    }


def print_report(report: dict[str, Any]) -> None:
    storm = report["storm"]

    def seconds(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f} s"

    print(f"\n### Reconnect storm: {report['watchers']} watchers ({report['code']})\n")
    print("| re-attached | p50 / all | peak PG conns | PG conns opened | peak Redis conns | "
          f"429s | failed streams | pool errors in log | CPU (storm) | idle "
          f"{report['idle_seconds']:.0f} s: PG conns opened, peak PG / Redis, CPU |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(
        f"| {storm['attached']}/{report['watchers']} "
        f"| {seconds(storm['p50_s'])} / {seconds(storm['all_s'])} "
        f"| {report['storm_peak_pg_connections']} | {report['storm_pg_sessions_opened']} "
        f"| {report['storm_peak_redis_connections']} | {report['refused_429']} "
        f"| {report['failed_streams']} | {report['log_max_connections_errors']} "
        f"| {report['storm_cpu_s']:.1f} s "
        f"| {report['idle_pg_sessions_opened']}, {report['idle_peak_pg_connections']} / "
        f"{report['idle_peak_redis_connections']}, {report['idle_cpu_s']:.1f} s |"
    )
    if report["errors"]:
        print(f"\nerrors (first 5): {report['errors']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--watchers", type=int, default=1000, help="watchers, one job each")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of the idle span")
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the tree the events process runs (default: this)"
    )
    args = parser.parse_args(argv)
    report = run(args.watchers, args.code.resolve(), args.idle)
    print_report(report)
    return 0 if report["storm"]["attached"] == args.watchers else 1


if __name__ == "__main__":
    sys.exit(main())
