"""Streaming benchmark: time to first visible token, and 1,000 watchers on one events process.

    python -m bench.streaming            # the full run (make bench runs it after bench.run)
    python -m bench.streaming --quick    # a short pass that checks the rig

The rig: fauxqs (moto's SQS server if `npm ci` was not run), the OpenAI-wire fake LLM streaming
word by word, the bench database, gunicorn (POSTs), the events process (uvicorn, config.asgi:
Server-Sent Events) and the worker (one process, measured once it consumes), each as
docker-compose.yml starts it, on production settings.

1. **Time to first visible token** at half the worker's capacity: per job, the first `delta`
   event at the client − the POST sent − when the fake LLM sends its first word (its `latency`,
   then its role chunk, then the first word one `stream_interval` later). The client does what
   the page does: POST, then open the event stream. p50 / p95 / p99; target p95 < 100 ms.
   Where it goes, per job: the POST, the queue (row created → claimed), the claim → the
   `running` entry, the call's own overhead (`running` → the first `delta` entry, less the
   fake's delay: the stream ids are Redis's clock), the `delta` entry → the client.
2. **Watchers**: N clients watch one job on the events process; then the job is sent to the
   worker, which streams the answer. Every watcher must receive every event (asserted: each
   gets every `delta` in the stream, in order, and the final `done` with the stored answer).
   Reported: the events process's memory per watcher, its CPU while streaming, and how long the
   last watcher got the final event after the first did.

Exits non-zero if a correctness check failed. Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# A database of its own: bench.run's rows (and its clean-ups) never meet these.
os.environ.setdefault("BENCH_DATABASE", "questions_bench_streaming")

from bench.rig import (  # noqa: E402
    ROOT,
    Rig,
    cpu_seconds,
    prepare_database,
    rss_kib,
    setup_django,
)
from tests.fakes.sqs import start_moto  # noqa: E402
from tests.support import free_port  # noqa: E402
from tests.support import wait_until as wait_for  # noqa: E402

RESULTS = ROOT / "bench" / "results"


# --- a minimal asyncio HTTP/1.1 client (the watchers: no client library holds a thousand) -----


async def _request(
    port: int, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status_line = await reader.readline()
    status = int(status_line.split()[1])
    response_headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        response_headers[name.strip().lower()] = value.strip()
    return reader, writer, status, response_headers


async def post_question(port: int, token: str, text: str) -> str:
    body = json.dumps({"question": text}).encode()
    reader, writer, status, _ = await _request(
        port, "POST", "/api/questions/",
        {"Authorization": f"Token {token}", "Content-Type": "application/json",
         "Connection": "close"},
        body,
    )  # fmt: skip
    data = await reader.read()
    writer.close()
    if status != 202:
        raise RuntimeError(f"POST answered {status}: {data[:200]!r}")
    return str(json.loads(data)["id"])


@dataclass
class Watcher:
    """One SSE client: every event it received, with the time it arrived."""

    job_id: str
    events: list[tuple[float, str, str, str | None]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)  # time.time() of each event
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    error: str | None = None

    async def run(self, port: int, token: str) -> None:
        try:
            reader, writer, status, headers = await _request(
                port, "GET", f"/api/questions/{self.job_id}/events",
                {"Authorization": f"Token {token}", "Accept": "text/event-stream"},
            )  # fmt: skip
            if status != 200:
                raise RuntimeError(f"events answered {status}")
            await self._read(reader, chunked=headers.get("transfer-encoding") == "chunked")
            writer.close()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.connected.set()

    async def _read(self, reader: asyncio.StreamReader, *, chunked: bool) -> None:
        buffer = b""
        event, data, event_id = "message", [], None
        while True:
            if chunked:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                chunk = await reader.readexactly(size + 2)
                buffer += chunk[:-2]
            else:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = raw.decode()
                if line == "":
                    if data:
                        self.events.append((time.monotonic(), event, "\n".join(data), event_id))
                        self.walls.append(time.time())
                        self.connected.set()
                        if event in ("done", "failed", "cancelled"):
                            return
                    event, data, event_id = "message", [], None
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].removeprefix(" "))
                elif line.startswith("id:"):
                    event_id = line[3:].strip()

    def first(self, name: str) -> float | None:
        return next((t for t, event, _, _ in self.events if event == name), None)

    def delivery_ms(self, name: str) -> float | None:
        """Time from the entry's XADD (its id is a Redis timestamp) to its arrival here."""
        for (_, event, _, event_id), wall in zip(self.events, self.walls, strict=True):
            if event == name and event_id and "-" in event_id:
                return wall * 1000 - int(event_id.split("-")[0])
        return None

    def text(self) -> str:
        return "".join(json.loads(d)["text"] for _, e, d, _ in self.events if e == "delta")

    def final(self) -> dict[str, Any] | None:
        for _, event, data, _ in self.events:
            if event == "done":
                return json.loads(data)
        return None


# --- the rig ----------------------------------------------------------------------------------


@dataclass
class Plan:
    latency: float = 0.5  # the fake LLM's first-chunk delay
    interval: float = 0.05  # between its words
    words: int = 20
    concurrency: int = 16
    jobs: int = 120
    watchers: int = 1000
    watch_words: int = 40
    watch_interval: float = 0.1

    @property
    def job_seconds(self) -> float:
        return self.latency + self.words * self.interval

    @property
    def capacity(self) -> float:
        return self.concurrency / self.job_seconds


QUICK = Plan(jobs=24, watchers=200, watch_words=20)


def _answer(words: int) -> str:
    return " ".join(f"w{n:03d}" for n in range(words))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def measure_ttft(plan: Plan, web: int, events: int, token: str) -> dict[str, Any]:
    rate = plan.capacity / 2
    results: list[dict[str, Any]] = []

    async def one(index: int) -> None:
        sent = time.monotonic()
        job_id = await post_question(web, token, f"Streaming bench question {index}?")
        posted = time.monotonic()
        watcher = Watcher(job_id)
        await asyncio.wait_for(watcher.run(events, token), timeout=60)
        first = watcher.first("delta")
        final = watcher.final()
        results.append(
            {
                "job_id": job_id,
                "delivery_ms": watcher.delivery_ms("delta"),
                "post_ms": (posted - sent) * 1000,
                # The fake sends its first word at latency + one interval (after the role chunk).
                "ttft": None if first is None else first - sent - plan.latency - plan.interval,
                "complete": final is not None and watcher.text() == final["answer"],
                "error": watcher.error,
            }
        )

    tasks = []
    start = time.monotonic()
    for index in range(plan.jobs):
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        tasks.append(asyncio.create_task(one(index)))
    await asyncio.gather(*tasks)
    ttfts = [r["ttft"] * 1000 for r in results if r["ttft"] is not None]
    deliveries = [r["delivery_ms"] for r in results if r["delivery_ms"] is not None]
    posts = [r["post_ms"] for r in results]
    slowest = sorted((r for r in results if r["ttft"] is not None), key=lambda r: -r["ttft"])
    return {
        "job_ids": [r["job_id"] for r in results],
        # The tail, job by job (the steps of each are added from its row and stream).
        "slowest": [
            {"job_id": r["job_id"], "ttft_ms": r["ttft"] * 1000, "post_ms": r["post_ms"]}
            for r in slowest[:3]
        ],
        "delivery_p50_ms": _percentile(deliveries, 50) if deliveries else None,
        "delivery_p95_ms": _percentile(deliveries, 95) if deliveries else None,
        "post_p50_ms": _percentile(posts, 50),
        "post_p95_ms": _percentile(posts, 95),
        "rate_per_s": rate,
        "capacity_per_s": plan.capacity,
        "jobs": plan.jobs,
        "with_delta": len(ttfts),
        "complete": sum(r["complete"] for r in results),
        "errors": [r["error"] for r in results if r["error"]][:5],
        "p50_ms": _percentile(ttfts, 50) if ttfts else None,
        "p95_ms": _percentile(ttfts, 95) if ttfts else None,
        "p99_ms": _percentile(ttfts, 99) if ttfts else None,
    }


async def _watch(
    plan: Plan, job_id: str, events_pid: int, events: int, token: str
) -> tuple[list[Watcher], dict[str, Any]]:
    from questions.services import question_enqueue

    rss_before = rss_kib(events_pid)[0]
    watchers = [Watcher(job_id) for _ in range(plan.watchers)]
    tasks = []
    connect_started = time.monotonic()
    for batch in range(0, len(watchers), 100):
        for watcher in watchers[batch : batch + 100]:
            tasks.append(asyncio.create_task(watcher.run(events, token)))
        await asyncio.gather(*(w.connected.wait() for w in watchers[batch : batch + 100]))
    connect_seconds = time.monotonic() - connect_started
    await asyncio.sleep(1.0)  # settle before the idle sample
    rss_connected = rss_kib(events_pid)[0]
    threads = _threads(events_pid)
    cpu_before = cpu_seconds(events_pid)
    streaming_started = time.monotonic()
    await asyncio.to_thread(question_enqueue, question_id=job_id)
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=120)
    streaming_seconds = time.monotonic() - streaming_started
    cpu_streaming = cpu_seconds(events_pid) - cpu_before
    return watchers, {
        "watchers": plan.watchers,
        "connect_seconds": connect_seconds,
        "rss_before_mib": rss_before / 1024,
        "rss_connected_mib": rss_connected / 1024,
        "threads_connected": threads,
        "kib_per_watcher": (rss_connected - rss_before) / plan.watchers,
        "streaming_seconds": streaming_seconds,
        "cpu_streaming_s": cpu_streaming,
        "cpu_percent_streaming": 100 * cpu_streaming / streaming_seconds,
    }


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def measure_watchers(
    plan: Plan, rig: Rig, events_pid: int, events: int, token: str, owner: Any
) -> dict[str, Any]:
    from django.db import connection
    from django.utils import timezone
    from django_redis import get_redis_connection

    from questions.live.streams import stream_key
    from questions.models import Question

    rig.llm("configure", {"latency": plan.latency, "stream_interval": plan.watch_interval,
                          "answer": _answer(plan.watch_words)})  # fmt: skip
    # A job nobody has sent yet: every watcher connects before the first word.
    # enqueued_at set: the worker's requeue sweep would otherwise send an "unsent" job early.
    job = Question.objects.create(
        owner=owner, text="One answer, many watchers?", enqueued_at=timezone.now()
    )
    connection.close()
    watchers, figures = asyncio.run(_watch(plan, str(job.pk), events_pid, events, token))
    stored = Question.objects.get(pk=job.pk)
    connection.close()
    deltas_written = [
        fields[b"delta"].decode()
        for _, fields in get_redis_connection("default").xrange(stream_key(job.pk))
        if b"delta" in fields
    ]
    every = [
        w.error is None
        and (final := w.final()) is not None
        and final["answer"] == stored.answer
        and [json.loads(d)["text"] for _, e, d, _ in w.events if e == "delta"] == deltas_written
        for w in watchers
    ]
    finals = [t for w in watchers if (t := w.first("done")) is not None]
    return {
        **figures,
        "received_everything": sum(every),
        "deltas_per_watcher": len(deltas_written),
        "errors": [w.error for w in watchers if w.error][:5],
        "final_spread_ms": (max(finals) - min(finals)) * 1000 if finals else None,
    }


def _worker_steps(
    job_ids: list[str], first_word_s: float, slowest: list[dict[str, Any]]
) -> dict[str, Any]:
    """From each job's stream (entry ids are Redis's clock, ms): the claim → its `running`
    entry, and `running` → the first `delta` entry less when the fake sends its first word (the
    call's own overhead: the rate limiter, the request, reading the first chunk)."""
    from django.db import connection
    from django_redis import get_redis_connection

    from questions.live.streams import stream_key
    from questions.models import Question

    rows = Question.objects.filter(pk__in=job_ids).values_list("pk", "created_at", "started_at")
    times = {str(pk): (created, started) for pk, created, started in rows}
    connection.close()
    redis = get_redis_connection("default")
    to_running, call = [], []
    steps: dict[str, dict[str, float]] = {}
    for pk, (created, at) in times.items():
        entries = redis.xrange(stream_key(pk))
        running = next((i for i, f in entries if b"status" in f), None)
        delta = next((i for i, f in entries if b"delta" in f), None)
        if at is None or running is None or delta is None:
            continue
        running_ms, delta_ms = (int(i.split(b"-")[0]) for i in (running, delta))
        to_running.append(running_ms - at.timestamp() * 1000)
        call.append(delta_ms - running_ms - first_word_s * 1000)
        steps[pk] = {
            "row_to_claim_ms": (at - created).total_seconds() * 1000,
            "claim_to_running_ms": to_running[-1],
            "call_overhead_ms": call[-1],
        }
    for job in slowest:
        job.update(steps.get(job["job_id"], {}))
    return {
        "claim_to_running_p50_ms": _percentile(to_running, 50) if to_running else None,
        "claim_to_running_p95_ms": _percentile(to_running, 95) if to_running else None,
        "call_overhead_p50_ms": _percentile(call, 50) if call else None,
        "call_overhead_p95_ms": _percentile(call, 95) if call else None,
    }


def _queue_waits(job_ids: list[str]) -> dict[str, Any]:
    """POST → a worker starting the job (from the rows), the part of TTFT before the LLM."""
    from django.db import connection

    from questions.models import Question

    waits = [
        (started - created).total_seconds() * 1000
        for created, started in Question.objects.filter(pk__in=job_ids).values_list(
            "created_at", "started_at"
        )
        if started is not None
    ]
    connection.close()
    return {
        "queue_wait_p50_ms": _percentile(waits, 50) if waits else None,
        "queue_wait_p95_ms": _percentile(waits, 95) if waits else None,
    }


def run(plan: Plan, mode: str) -> dict[str, Any]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    logdir = RESULTS / f"{stamp}-streaming"
    logdir.mkdir(parents=True, exist_ok=True)
    rig = Rig(logdir=logdir)
    # fauxqs when `make bench-deps` installed it (moto's server is slow to receive: its wait
    # would be most of the time to first token), else moto.
    fauxqs = (ROOT / "bench" / "node_modules" / "fauxqs").is_dir()
    moto = None if fauxqs else start_moto(rig.sqs_port)
    try:
        suffix = uuid.uuid4().hex[:8]
        env = rig.env(
            AWS_ENDPOINT_URL_SQS=rig.sqs_endpoint,
            SQS_QUEUE_NAME=f"stream-bench-{suffix}",
            SQS_DLQ_NAME=f"stream-bench-dlq-{suffix}",
            OTEL_SDK_DISABLED="true",
            DJANGO_SECURE_SSL_REDIRECT="false",
            # One user watches one job a thousand times from one address: no caps on streams
            # here (bench/reconnect_storm.py measures with them).
            QUESTIONS_SSE_MAX_PER_USER="0",
            QUESTIONS_SSE_MAX_PER_IP="0",
        )
        if fauxqs:
            rig.start(
                "fauxqs",
                [shutil.which("node") or "node", str(ROOT / "bench" / "fauxqs_server.mjs"),
                 "--port", str(rig.sqs_port)],
                ready="fauxqs listening",
            )  # fmt: skip
        # tests.fakes.llm_server, which streams word by word (stream_interval) with a set answer.
        rig.start(
            "fake-llm",
            [sys.executable, "-m", "tests.fakes.llm_server", "--port", str(rig.llm_port)],
            ready="fake LLM listening",
        )
        prepare_database(env)
        setup_django(env)
        from django.db import connection

        from questions.accounts import api_token_create
        from questions.sqs.queues import queues_create
        from tests.factories import UserFactory

        wait_for(_reachable(rig.sqs_port), timeout=30, what="the SQS server")
        queues_create(
            queue_name=env["SQS_QUEUE_NAME"], dlq_name=env["SQS_DLQ_NAME"],
            visibility_timeout=60, max_receive_count=10,
        )  # fmt: skip
        owner = UserFactory(username=f"stream-bench-{suffix}")
        token = api_token_create(user=owner, name="bench").key
        connection.close()
        web, events = free_port(), free_port()
        rig.start(
            "web",
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"],
            env={**env, "GUNICORN_BIND": f"127.0.0.1:{web}"},
            ready="Booting worker",
        )
        events_process = rig.start(
            "events",
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host=127.0.0.1",
             f"--port={events}", "--no-access-log", "--lifespan=off",
             "--timeout-graceful-shutdown=5"],
            env=env,
            ready="Uvicorn running",
        )  # fmt: skip
        worker_metrics = free_port()
        rig.start(
            "worker",
            [sys.executable, "manage.py", "run_sqs_worker", "--wait-time=1", "--processes=1",
             f"--concurrency={plan.concurrency}", f"--metrics-port={worker_metrics}"],
            env={**env, "METRICS_ADDR": "127.0.0.1"},
            # Consuming, not merely started: the supervisor serves /metrics seconds before its
            # child has loaded Django and polls SQS, and questions posted meanwhile waited for
            # that start-up (the 691 ms p95 "POST → the worker starts" of the first runs).
            ready="consuming",
        )  # fmt: skip
        wait_for(_reachable(worker_metrics, "/metrics"), timeout=60, what="the worker")
        wait_for(_reachable(web, "/healthz"), timeout=30, what="gunicorn")
        wait_for(_reachable(events, "/healthz"), timeout=30, what="the events process")

        rig.llm("configure", {"latency": plan.latency, "stream_interval": plan.interval,
                              "answer": _answer(plan.words)})  # fmt: skip
        ttft = asyncio.run(measure_ttft(plan, web, events, token))
        ttft.update(_worker_steps(ttft["job_ids"], plan.latency + plan.interval, ttft["slowest"]))
        ttft.update(_queue_waits(ttft.pop("job_ids")))
        watchers = measure_watchers(plan, rig, events_process.pid, events, token, owner)
    finally:
        rig.close()
        if moto is not None:
            moto.terminate()
            moto.wait(timeout=10)
    report = {
        "mode": mode,
        "sqs": "fauxqs" if fauxqs else "moto",
        "plan": plan.__dict__,
        "ttft": ttft,
        "watchers": watchers,
    }
    (logdir / "report.json").write_text(json.dumps(report, indent=2))
    return report


def _reachable(port: int, path: str = "/") -> Any:
    import urllib.request

    def probe() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2):  # noqa: S310
                return True
        except OSError as exc:
            return getattr(exc, "code", None) is not None  # an HTTP error: it answers

    return probe


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def print_report(report: dict[str, Any]) -> bool:
    ttft, watchers, plan = report["ttft"], report["watchers"], report["plan"]
    ttft_ok = ttft["complete"] == ttft["jobs"] and ttft["with_delta"] == ttft["jobs"]
    watchers_ok = watchers["received_everything"] == watchers["watchers"]
    target = ttft["p95_ms"] is not None and ttft["p95_ms"] < 100
    print(f"\n### Time to first visible token ({report['mode']}, SQS: {report['sqs']})\n")
    print("| jobs | rate (half capacity) | first-chunk delay | p50 ms | p95 ms | p99 ms | "
          "complete answers | p95 < 100 ms |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {ttft['jobs']} | {ttft['rate_per_s']:.1f}/s of {ttft['capacity_per_s']:.1f}/s "
        f"| {plan['latency'] * 1000:.0f} ms | {_ms(ttft['p50_ms'])} | {_ms(ttft['p95_ms'])} "
        f"| {_ms(ttft['p99_ms'])} | {ttft['complete']}/{ttft['jobs']} "
        f"(with deltas: {ttft['with_delta']}) | {'yes' if target else 'NO'} |"
    )
    print(
        f"\nWhere it goes (p50 / p95 ms): the POST {_ms(ttft.get('post_p50_ms'))} / "
        f"{_ms(ttft.get('post_p95_ms'))}; row created → the worker claims the job "
        f"{_ms(ttft['queue_wait_p50_ms'])} / {_ms(ttft['queue_wait_p95_ms'])} (the SQS send, "
        f"the receive); the claim → the `running` entry {_ms(ttft.get('claim_to_running_p50_ms'))}"
        f" / {_ms(ttft.get('claim_to_running_p95_ms'))}; the call's own overhead "
        f"{_ms(ttft.get('call_overhead_p50_ms'))} / {_ms(ttft.get('call_overhead_p95_ms'))}; the "
        f"first word's XADD → the client {_ms(ttft['delivery_p50_ms'])} / "
        f"{_ms(ttft['delivery_p95_ms'])} (Redis, the events process, the socket)."
    )
    for job in ttft.get("slowest", []):
        print(
            f"- slow: {_ms(job['ttft_ms'])} ms (job {job['job_id'][:8]}): the POST "
            f"{_ms(job['post_ms'])}, row → claim {_ms(job.get('row_to_claim_ms'))}, claim → "
            f"`running` {_ms(job.get('claim_to_running_ms'))}, the call's overhead "
            f"{_ms(job.get('call_overhead_ms'))}"
        )
    print("\n### Watchers on one events process (uvicorn)\n")
    print("| watchers | every event to every watcher | deltas each | RSS idle → connected | "
          "per watcher | threads | CPU while streaming | last final after first |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {watchers['watchers']} | {watchers['received_everything']}/{watchers['watchers']} "
        f"| {watchers['deltas_per_watcher']} "
        f"| {watchers['rss_before_mib']:.0f} → {watchers['rss_connected_mib']:.0f} MiB "
        f"| {watchers['kib_per_watcher']:.1f} KiB | {watchers['threads_connected']} "
        f"| {watchers['cpu_streaming_s']:.2f} s over {watchers['streaming_seconds']:.1f} s "
        f"({watchers['cpu_percent_streaming']:.0f}% of a core) "
        f"| {_ms(watchers['final_spread_ms'])} ms |"
    )
    for name, errors in (("ttft", ttft["errors"]), ("watchers", watchers["errors"])):
        if errors:
            print(f"\n{name} errors (first 5): {errors}")
    if not ttft_ok:
        print("\nFAILED: some jobs did not stream their whole answer to their watcher.")
    if not watchers_ok:
        print("\nFAILED: some watchers missed events.")
    return ttft_ok and watchers_ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short pass (200 watchers)")
    parser.add_argument("--watchers", type=int, help="watchers of one job (default 1000)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else Plan()
    if args.watchers:
        plan.watchers = args.watchers
    report = run(plan, "quick" if args.quick else "full")
    return 0 if print_report(report) else 1


if __name__ == "__main__":
    sys.exit(main())
