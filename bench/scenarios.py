"""What is measured: each function runs one scenario on the rig and returns a JSON-able dict.

Throughput cells pre-load the queue, start the consumer, and take the rate over the busy span
(first claim → last stored answer, from the rows' own timestamps), so process start-up (Django's
import, ~1-2 s) does not swamp the short cells; the rate from process start is kept too.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import re
import runpy
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import jobs
from bench.rig import ROOT, Process, Rig, cpu_seconds, wait_for


@dataclass
class Ctx:
    rig: Rig
    owner: Any
    token: str
    profile: bool = False


def _profile(
    ctx: Ctx, pid: int, name: str, *, idle: bool = True, subprocesses: bool = False
) -> subprocess.Popen[bytes] | None:
    """py-spy on a process (collapsed stacks) → <logdir>/<name>.pyspy.txt; stop with SIGINT."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return None
    out = ctx.rig.logdir / f"{name}.pyspy.txt"
    argv = [py_spy, "record", "-p", str(pid), "-o", str(out), "-r", "200", "--format", "raw"]
    argv += ["--idle"] if idle else []
    argv += ["--subprocesses"] if subprocesses else []
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop_profile(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        profiler.wait(timeout=60)


def _queue_name(kind: str, latency: float, concurrency: int) -> str:
    return f"bench-{kind}-{int(latency * 1000)}ms-c{concurrency}-{uuid.uuid4().hex[:6]}"


def _start_consumer(
    ctx: Ctx, kind: str, queue: str, queue_url: str, concurrency: int, code: Path = ROOT
) -> Process:
    rig = ctx.rig
    if kind == "worker":
        argv = [sys.executable, "manage.py", "run_sqs_worker", "--processes", "1", "--queue", queue]
        argv += ["--dlq", f"{queue}-dlq", "--concurrency", str(concurrency)]
        return rig.start(f"{queue}", argv, ready="consuming", cwd=code)
    if kind == "seed":
        argv = [sys.executable, "-m", "bench.seed_peer", "--queue", queue]
        return rig.start(f"{queue}", argv, ready="seed consumer ready")
    if kind == "celery":
        argv = [sys.executable, "-m", "celery", "-A", "bench.celery_peer.app", "worker"]
        argv += ["-P", "threads", "-c", str(concurrency), "-Q", queue, "-l", "WARNING"]
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        env = rig.env(BENCH_CELERY_QUEUE=queue, BENCH_CELERY_QUEUE_URL=queue_url)
        # Celery prints its banner, then "ready." at INFO; at WARNING only the banner's end.
        return rig.start(f"{queue}", argv, ready="[queues]", env=env)
    raise ValueError(kind)


def _publish_celery(ctx: Ctx, queue: str, queue_url: str, ids: list[uuid.UUID]) -> None:
    from bench.celery_peer.app import TASK_NAME, make_app

    app = make_app(queue=queue, queue_url=queue_url, endpoint=ctx.rig.sqs_endpoint)
    with app.producer_or_acquire() as producer:
        for job_id in ids:
            app.send_task(TASK_NAME, args=[str(job_id)], queue=queue, producer=producer)


def throughput_cell(
    ctx: Ctx,
    *,
    kind: str,
    latency: float,
    concurrency: int,
    count: int,
    processes: int = 1,
    timeout: float = 600,
    code: Path = ROOT,
) -> dict[str, Any]:
    """`count` jobs through `processes` consumers of `concurrency` each at LLM latency `latency`
    (the worker run from `code`: another tree, for a before/after cell)."""
    jobs.reset_state()
    ctx.rig.llm_reset(latency)
    queue = _queue_name(kind, latency, concurrency)
    queue_url = jobs.create_queue(queue)
    ids = jobs.create_rows(ctx.owner, count)
    if kind == "celery":
        _publish_celery(ctx, queue, queue_url, ids)
    else:
        jobs.send_messages(queue_url, ids)
    consumers = [
        _start_consumer(ctx, kind, queue, queue_url, concurrency, code) for _ in range(processes)
    ]
    consumer = consumers[0]
    # CPU spent starting up (Django, imports) is not the jobs' cost: counted from "ready" on.
    cpu_at_ready = sum(cpu_seconds(c.pid) for c in consumers)
    profiler = (
        _profile(ctx, consumer.pid, queue, idle=os.environ.get("BENCH_PROFILE_IDLE") != "0")
        if ctx.profile
        else None
    )
    try:
        done_at = jobs.wait_finished(
            count,
            timeout=timeout,
            alive=lambda: all(c.popen.poll() is None for c in consumers),
        )
        peak = max(c.peak_rss_mib() for c in consumers)
        cpu = sum(cpu_seconds(c.pid) for c in consumers)
    finally:
        _stop_profile(profiler)
        for c in consumers:
            ctx.rig.stop(c)
    result = jobs.outcome(count, ctx.rig.llm_calls())
    slot = jobs.slot_time(concurrency * processes, latency)
    rate = count / result.busy_seconds
    ideal = processes * concurrency / latency if latency else None
    if kind == "seed":
        ideal = 1 / latency if latency else None
    return {
        "kind": kind,
        "latency_s": latency,
        "concurrency": concurrency,
        "processes": processes,
        "jobs": count,
        "jobs_per_s": round(rate, 2),
        "jobs_per_s_from_process_start": round(count / (done_at - consumer.started), 2),
        "startup_s": round(consumer.ready_after, 2),
        "ideal_jobs_per_s": ideal,
        "ratio_to_ideal": round(rate / ideal, 3) if ideal else None,
        "peak_rss_mib": round(peak, 1),
        "cpu_ms_per_job": round(cpu * 1000 / count, 2),
        "cpu_ms_per_job_after_start": round((cpu - cpu_at_ready) * 1000 / count, 2),
        **slot,
        "succeeded": result.succeeded,
        "llm_calls": result.llm_calls,
        "correct": result.correct,
    }


def bare_drain(ctx: Ctx, *, count: int) -> dict[str, Any]:
    """The server's own limit: one boto3 loop receiving 10 and deleting them, nothing else."""
    from questions.sqs.client import get_sqs_client

    client = get_sqs_client()
    url = jobs.create_queue(_queue_name("bare", 0, 1))
    jobs.send_messages(url, [uuid.uuid4() for _ in range(count)])
    started = time.perf_counter()
    drained = 0
    while drained < count:
        messages = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        ).get("Messages", [])
        if messages:
            client.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                    for i, m in enumerate(messages)
                ],
            )
        drained += len(messages)
    elapsed = time.perf_counter() - started
    return {"messages": count, "msgs_per_s": round(count / elapsed, 1)}


# --- the web side ---------------------------------------------------------------------------


def gunicorn_argv(port: int) -> tuple[list[str], str]:
    """gunicorn as production runs it (the Dockerfile's CMD): -c config/gunicorn.conf.py."""
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi:application"]
    config = ROOT / "config" / "gunicorn.conf.py"
    if config.is_file():
        argv += ["-c", str(config)]
        conf = runpy.run_path(str(config))
        how = (
            f"config/gunicorn.conf.py: {conf.get('workers', 1)} process(es), "
            f"{conf.get('worker_class', 'sync')}, {conf.get('threads', 1)} threads"
        )
    else:
        workers = 2 * (os.cpu_count() or 1) + 1
        argv += ["--workers", str(workers), "--worker-class", "gthread", "--threads", "4"]
        how = f"no gunicorn.conf.py: --workers {workers} --worker-class gthread --threads 4"
    argv += ["--bind", f"127.0.0.1:{port}"]
    return argv, how


@dataclass
class Web:
    process: Process
    port: int
    how: str
    queue: str


def start_web(ctx: Ctx) -> Web:
    """gunicorn with the bench settings (the app + /bench/bare), enqueuing to a queue of its own."""
    queue = _queue_name("web", 0, 0)
    jobs.create_queue(queue)
    port = _free()
    # docker-compose.yml runs two replicas of one process each; on this host's cores that is one
    # replica with a process per core (GUNICORN_WORKERS; override it in the environment).
    os.environ.setdefault("GUNICORN_WORKERS", str(os.cpu_count() or 1))
    argv, how = gunicorn_argv(port)
    env = ctx.rig.env("bench.django_settings", SQS_QUEUE_NAME=queue, SQS_DLQ_NAME=f"{queue}-dlq")
    process = ctx.rig.start("gunicorn", argv, ready="Listening at", env=env)
    web = Web(process, port, how, queue)
    wait_for(lambda: _status(web, "GET", "/healthz") == 200, timeout=60, what="gunicorn /healthz")
    return web


def _free() -> int:
    from bench.rig import free_port

    return free_port()


def _headers(token: str | None) -> dict[str, str]:
    headers = {"X-Forwarded-Proto": "https", "Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    return headers


def _status(
    web: Web, method: str, path: str, body: str | None = None, token: str | None = None
) -> int:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=10)
        conn.request(method, path, body=body, headers=_headers(token))
        status = conn.getresponse().status
        conn.close()
        return status
    except OSError:
        return 0


def e2e_latency(
    ctx: Ctx, web: Web, *, latency: float, concurrency: int, rate: float, duration: float
) -> dict[str, Any]:
    """POST at a steady rate; per job: stored answer − POST sent − L."""
    jobs.reset_state()
    ctx.rig.llm_reset(latency)
    queue = web.queue
    worker = _start_consumer(ctx, "worker", queue, "", concurrency)
    count = max(int(rate * duration), 10)
    sent: dict[str, tuple[float, float]] = {}
    errors: list[str] = []
    local = threading.local()
    body = json.dumps({"question": jobs.QUESTION_TEXT})

    def post() -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
        at = time.time()
        try:
            conn.request("POST", "/api/questions/", body=body, headers=_headers(ctx.token))
            response = conn.getresponse()
            payload = response.read()
        except OSError as exc:
            local.conn = None
            errors.append(type(exc).__name__)
            return
        if response.status != 202:
            errors.append(str(response.status))
            return
        sent[json.loads(payload)["id"]] = (at, time.time())

    try:
        start = time.monotonic() + 0.2
        with ThreadPoolExecutor(max_workers=32) as pool:
            for i in range(count):
                delay = start + i / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(post)
        jobs.wait_finished(len(sent), timeout=120, alive=lambda: worker.popen.poll() is None)
    finally:
        ctx.rig.stop(worker)
    times = jobs.job_times()
    added = sorted((times[job][1] - at - latency) * 1000 for job, (at, _) in sent.items())
    # Where it goes: the POST itself, the wait on the queue, the run beyond L.
    post = sorted((answered - at) * 1000 for at, answered in sent.values())
    wait = sorted((times[job][0] - answered) * 1000 for job, (_, answered) in sent.items())
    run = sorted((times[job][1] - times[job][0] - latency) * 1000 for job in sent)
    result = jobs.outcome(len(sent), ctx.rig.llm_calls())

    def pct(p: float, values: list[float] | None = None) -> float:
        values = added if values is None else values
        return round(values[min(len(values) - 1, math.ceil(p / 100 * len(values)) - 1)], 1)

    return {
        "latency_s": latency,
        "concurrency": concurrency,
        "rate_per_s": round(rate, 2),
        "jobs": len(sent),
        "post_errors": len(errors),
        "added_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "mean": round(statistics.fmean(added), 1),
        },
        "breakdown_p50_p95_ms": {
            "post": [pct(50, post), pct(95, post)],
            "queue_wait": [pct(50, wait), pct(95, wait)],
            "run_beyond_L": [pct(50, run), pct(95, run)],
        },
        "succeeded": result.succeeded,
        "llm_calls": result.llm_calls,
        "correct": result.correct and not errors,
    }


_WRK_RATE = re.compile(r"Requests/sec:\s+([\d.]+)")
_WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_P50 = re.compile(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_WRK_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def ensure_wrk() -> str | None:
    """wrk from Debian's packages; installed when missing and we are root."""
    found = shutil.which("wrk")
    if found or os.geteuid() != 0:
        return found
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    if not shutil.which("wrk"):
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=False, capture_output=True)
    return shutil.which("wrk")


def wrk(
    web: Web,
    workdir: Path,
    *,
    name: str,
    method: str,
    path: str,
    token: str | None,
    body: str | None,
    duration: int,
    connections: int,
) -> dict[str, Any]:
    script = workdir / f"wrk-{name}.lua"
    lines = [f'wrk.method = "{method}"']
    for key, value in _headers(token).items():
        lines.append(f'wrk.headers["{key}"] = "{value}"')
    if body is not None:
        lines.append(f"wrk.body = {json.dumps(body)}")
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{web.port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (workdir / f"wrk-{name}.txt").write_text(out)

    def ms(pattern: re.Pattern[str]) -> float | None:
        match = pattern.search(out)
        return round(float(match.group(1)) * _UNIT_MS[match.group(2)], 2) if match else None

    rate = _WRK_RATE.search(out)
    non2xx = _WRK_NON2XX.search(out)
    socket_errors = _WRK_ERRORS.search(out)
    return {
        "name": name,
        "method": method,
        "path": path,
        "req_per_s": float(rate.group(1)) if rate else 0.0,
        "p50_ms": ms(_WRK_P50),
        "p99_ms": ms(_WRK_P99),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": sum(map(int, socket_errors.groups())) if socket_errors else 0,
    }


def api(ctx: Ctx, web: Web, *, duration: int, connections: int) -> dict[str, Any]:
    """The bare view against POST and GET (cache hit / miss) on the same gunicorn."""
    from questions.cache import job_cache_get, job_cache_set
    from questions.models import Question

    jobs.reset_state()
    hit, miss = jobs.create_rows(ctx.owner, 2)
    Question.objects.filter(pk=hit).update(status=Question.Status.SUCCEEDED, answer="42")
    job_cache_set(Question.objects.get(pk=hit))
    assert job_cache_get(hit) is not None
    body = json.dumps({"question": jobs.QUESTION_TEXT})
    cases = [
        ("bare", "GET", "/bench/bare", None, None, 200),
        ("get_cache_hit", "GET", f"/api/questions/{hit}/", ctx.token, None, 200),
        ("get_cache_miss", "GET", f"/api/questions/{miss}/", ctx.token, None, 200),
        ("post", "POST", "/api/questions/", ctx.token, body, 202),
    ]
    rows = []
    for name, method, path, token, payload, expected in cases:
        status = _status(web, method, path, payload, token)
        if status != expected:
            raise RuntimeError(f"{method} {path} answered {status}, expected {expected}")
        profiler = (
            _profile(ctx, web.process.pid, f"gunicorn-{name}", idle=False, subprocesses=True)
            if ctx.profile
            else None
        )
        rows.append(
            wrk(
                web,
                ctx.rig.logdir,
                name=name,
                method=method,
                path=path,
                token=token,
                body=payload,
                duration=duration,
                connections=connections,
            )
        )
        _stop_profile(profiler)
    posted = Question.objects.count() - 3  # the two rows above and the pre-flight POST
    bare = rows[0]["req_per_s"] or 1.0
    for row in rows:
        row["ratio_to_bare"] = round(row["req_per_s"] / bare, 3)
    return {
        "gunicorn": web.how,
        "connections": connections,
        "duration_s": duration,
        "rows": rows,
        "posts_stored": posted,
        "post_requests": round(rows[3]["req_per_s"] * duration),
    }


def memory(ctx: Ctx, *, count: int, concurrency: int) -> dict[str, Any]:
    """Worker RSS over `count` jobs at L = 0: peak, and growth after warm-up (a leak shows)."""
    jobs.reset_state()
    ctx.rig.llm_reset(0)
    queue = _queue_name("mem", 0, concurrency)
    url = jobs.create_queue(queue)
    ids = jobs.create_rows(ctx.owner, count)
    jobs.send_messages(url, ids)
    worker = _start_consumer(ctx, "worker", queue, url, concurrency)
    samples: list[tuple[int, float]] = []
    from bench.rig import rss_kib

    try:
        deadline = time.monotonic() + 900
        while True:
            done = jobs.finished_count()
            rss, _ = rss_kib(worker.pid)
            samples.append((done, rss / 1024))
            if done >= count:
                break
            if worker.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"memory run stopped at {done}/{count} jobs")
            time.sleep(0.25)
        peak = worker.peak_rss_mib()
    finally:
        ctx.rig.stop(worker)
    result = jobs.outcome(count, ctx.rig.llm_calls())

    def rss_at(fraction: float) -> float:
        return next(rss for done, rss in samples if done >= fraction * count)

    return {
        "jobs": count,
        "concurrency": concurrency,
        "latency_s": 0,
        "peak_rss_mib": round(peak, 1),
        "rss_at_10pct_mib": round(rss_at(0.1), 1),
        "rss_at_50pct_mib": round(rss_at(0.5), 1),
        "rss_at_end_mib": round(samples[-1][1], 1),
        "growth_10pct_to_end_mib": round(samples[-1][1] - rss_at(0.1), 1),
        "growth_50pct_to_end_mib": round(samples[-1][1] - rss_at(0.5), 1),
        "jobs_per_s": round(count / result.busy_seconds, 1),
        "succeeded": result.succeeded,
        "llm_calls": result.llm_calls,
        "correct": result.correct,
    }
