"""One soak run: bring the private stack up, load it, deal the faults, drain, check, clean up."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.soak import invariants
from bench.soak.chaos import Chaos, Sampler, Stack
from bench.soak.load import Poster, Watchers, users_create
from bench.soak.plan import Plan
from bench.soak.provider import Mix, Provider
from bench.soak.services import (
    ROOT,
    Managed,
    PrivatePostgres,
    accepts,
    fauxqs,
    redis_server,
    wait_for,
)
from tests.support import TCPProxy, free_port

DATABASE = "soak"
DRIVER_APP = "soak-driver"
MODEL = "soak-model"
PRICE_PER_MILLION = 100  # USD per 1M tokens, input and output: a call costs about a cent


def service_env(
    plan: Plan, *, database_url: str, redis_port: int, sqs_port: int, llm_url: str
) -> dict[str, str]:
    """The environment a user would give the service (production settings), on the soak's
    private services."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "OTEL_", "OPENAI_", "SQS_", "QUESTIONS_", "GUNICORN_"))
        and key not in {"DATABASE_URL", "REDIS_URL", "CACHE_KEY_PREFIX"}
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": "soak-" + secrets.token_urlsafe(48),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "OTEL_SDK_DISABLED": "true",
            "DATABASE_URL": database_url,
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            "AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{sqs_port}",
            "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": "soak",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SQS_QUEUE_NAME": "soak",
            "SQS_DLQ_NAME": "soak-dlq",
            "OPENAI_BASE_URL": llm_url,
            "OPENAI_API_KEY": "soak",
            "OPENAI_MODEL": MODEL,
            "OPENAI_TIMEOUT": f"{plan.openai_timeout:g}",
            "OPENAI_MAX_COMPLETION_TOKENS": str(plan.max_completion_tokens),
            "QUESTIONS_PRICES": json.dumps(
                {MODEL: {"input": PRICE_PER_MILLION, "output": PRICE_PER_MILLION}}
            ),
            "QUESTIONS_CLAIM_MARGIN": str(plan.claim_margin),
            "QUESTIONS_REQUEUE_AFTER": str(plan.requeue_after),
            "QUESTIONS_WORKER_DB_THREADS": str(plan.db_threads),
            "QUESTIONS_THROTTLE_RATE": "100000000/second",
            "QUESTIONS_MAX_OPEN_PER_USER": "100000000",
            "QUESTIONS_DAILY_BUDGET_USD": "100000000",
            # Every watcher comes from 127.0.0.1 (as from behind one proxy): no cap per IP; per
            # user, room for each user's share of watchers twice over (after an events restart
            # the dead process's slots linger until their lease lapses).
            "QUESTIONS_SSE_MAX_PER_IP": "0",
            "QUESTIONS_SSE_MAX_PER_USER": str(2 * -(-plan.watchers // plan.users) + 5),
            "GUNICORN_WORKERS": "1",
            "GUNICORN_THREADS": str(plan.web_threads),
            "METRICS_ADDR": "127.0.0.1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


def pool_size(plan: Plan) -> int:
    """The PostgreSQL sessions the service may hold at most: each worker process's DB threads,
    gunicorn's threads, the events process's executor (asyncio's default: min(32, cores + 4))
    plus its one thread-sensitive thread."""
    workers = plan.supervisors * plan.processes * plan.db_threads
    events = min(32, (os.cpu_count() or 1) + 4) + 1
    return workers + plan.web_threads + events


def _http_ok(port: int, path: str = "/healthz") -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False


def run(plan: Plan, *, keep: bool = False, progress: Any = print) -> dict[str, Any]:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    tmp.chmod(0o755)  # the private cluster runs as the `postgres` user when we are root
    logdir = tmp / "logs"
    logdir.mkdir()
    (tmp / "pg").mkdir()
    with contextlib.ExitStack() as cleanup:
        if not keep:
            cleanup.callback(shutil.rmtree, tmp, ignore_errors=True)
        progress(f"soak: {plan.label}; logs in {logdir}")

        postgres = PrivatePostgres(tmp / "pg")
        cleanup.callback(postgres.stop)
        postgres.start()
        postgres.create_database(DATABASE)

        provider = Provider(Mix(stall_seconds=plan.stall_seconds), seed=plan.seed).start()
        cleanup.callback(provider.stop)

        redis_port, sqs_port = free_port(), free_port()
        bare_env = {k: v for k, v in os.environ.items() if k != "NODE_OPTIONS"}
        redis = redis_server(logdir, redis_port, bare_env).start()
        cleanup.callback(redis.stop, timeout=10)
        sqs = fauxqs(logdir, sqs_port, bare_env).start()
        cleanup.callback(sqs.stop, timeout=10)
        wait_for(
            lambda: accepts(redis_port) and accepts(sqs_port), timeout=60, what="redis, fauxqs"
        )
        proxy = TCPProxy(sqs_port).start()
        cleanup.callback(proxy.cut)

        env = service_env(
            plan,
            database_url=postgres.url(DATABASE),
            redis_port=redis_port,
            sqs_port=proxy.port,
            llm_url=provider.base_url,
        )
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT, env=env, check=True, timeout=600,
        )  # fmt: skip
        os.environ.update(env)
        import django

        django.setup()
        from django.db import connection

        # The driver's own session is not the service's: the sampler leaves it out by name.
        connection.settings_dict.setdefault("OPTIONS", {})["application_name"] = DRIVER_APP
        from questions.sqs.queues import queues_create

        queues_create(
            queue_name=env["SQS_QUEUE_NAME"], dlq_name=env["SQS_DLQ_NAME"],
            visibility_timeout=plan.visibility_timeout, max_receive_count=50,
        )  # fmt: skip
        users = users_create(
            plan.users, budget_users=plan.budget_users, budget=Decimal(plan.budget_usd)
        )

        web_port, events_port = free_port(), free_port()
        web = Managed(
            "web",
            [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"],
            {**env, "GUNICORN_BIND": f"127.0.0.1:{web_port}"},
            logdir,
        )
        events = Managed(
            "events",
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host=127.0.0.1",
             f"--port={events_port}", "--no-access-log", "--lifespan=off",
             "--timeout-graceful-shutdown=5"],
            env, logdir,
        )  # fmt: skip
        worker_argv = [
            sys.executable, "manage.py", "run_sqs_worker", f"--processes={plan.processes}",
            f"--concurrency={plan.concurrency}", "--wait-time=2",
            f"--visibility-timeout={plan.visibility_timeout}", "--max-attempts=5",
            f"--shutdown-timeout={plan.shutdown_timeout:g}", "--requeue-interval=10",
        ]  # fmt: skip
        supervisors = [
            Managed(f"worker-{i}", worker_argv, env, logdir) for i in range(plan.supervisors)
        ]
        managed = [web, events, *supervisors]
        for process in managed:
            process.start()
            cleanup.callback(process.stop, timeout=plan.shutdown_timeout + 15)
        wait_for(lambda: _http_ok(web_port), timeout=120, what="gunicorn")
        wait_for(lambda: _http_ok(events_port), timeout=120, what="the events process")

        stack = Stack(
            postgres=postgres, redis=redis, redis_port=redis_port, sqs_proxy=proxy,
            provider=provider, web=web, events=events, events_port=events_port,
            supervisors=supervisors,
        )  # fmt: skip
        sampler = Sampler(stack, database=DATABASE, leave_out=DRIVER_APP).start()
        cleanup.callback(sampler.stop)
        poster = Poster(
            f"http://127.0.0.1:{web_port}", users,
            jobs=plan.jobs, seconds=plan.load_seconds, stop_rate=plan.stop_rate,
        )  # fmt: skip
        cleanup.callback(poster.stop)
        watchers = Watchers(f"http://127.0.0.1:{events_port}", poster, plan.watchers).start()
        cleanup.callback(watchers.stop)
        chaos = Chaos(plan, stack)
        cleanup.callback(chaos.stop)

        t0 = time.monotonic()
        progress(f"soak: stack up in {t0 - started:.0f}s; {plan.jobs:,} questions over "
                 f"{plan.load_seconds:g}s, {len(plan.schedule())} faults")  # fmt: skip
        threads = [
            threading.Thread(target=poster.run, name="soak-poster", daemon=True),
            threading.Thread(target=chaos.run, args=(t0,), name="soak-chaos", daemon=True),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=plan.load_seconds + 600)
        poster.stop()  # bounded: whatever is still retrying gives up
        chaos.join(timeout=plan.shutdown_timeout + 60)
        load_end = time.monotonic()
        progress(f"soak: load and faults done at {load_end - t0:.0f}s; draining")

        drained_at = _drain(plan, poster, deadline=load_end + plan.drain_seconds, progress=progress)
        watchers.stop()
        sampler.stop()
        final_exits = {p.name: p.stop(timeout=plan.shutdown_timeout + 15) for p in supervisors}
        web.stop(timeout=15)
        events.stop(timeout=15)
        provider.fake.wait_for_idle(timeout=10)

        connection.close()
        rows = invariants.job_rows()
        ledger = invariants.ledger_summary()
        checks, figures = invariants.evaluate(
            plan=plan,
            posted=poster.posted,
            rows=rows,
            calls=provider.calls(),
            faults=sorted(chaos.log, key=lambda f: f.at),
            samples=sampler.samples,
            ledger=ledger,
            pool=pool_size(plan),
            price_per_token=Decimal(PRICE_PER_MILLION) / 1_000_000,
            final_exits=final_exits,
        )
        api_5xx = sum(v for k, v in poster.stats.statuses.items() if k >= 500) + sum(
            v for k, v in poster.stats.cancels.items() if k >= 500
        )
        checks.append(
            invariants.Check("API answers 5xx during the faults (POST, Stop; retried)",
                             f"{api_5xx}", "", None)
        )  # fmt: skip
        figures["faults"] = [
            {"t": round(f.at - t0, 1), "at": round(f.at, 2), "kind": f.kind, **f.detail}
            for f in sorted(chaos.log, key=lambda f: f.at)
        ]
        figures.update(
            {
                "posts": {str(k): v for k, v in poster.stats.statuses.items()},
                "post_transport_errors": poster.stats.transport_errors,
                "post_gave_up": poster.stats.gave_up,
                "cancels": {str(k): v for k, v in poster.stats.cancels.items()},
                "watchers": {
                    "count": plan.watchers,
                    "statuses": {str(k): v for k, v in watchers.stats.statuses.items()},
                    "watched_to_end": watchers.stats.watched_to_end,
                    "reconnects": watchers.stats.reconnects,
                    "errors": watchers.stats.errors,
                    "events": watchers.stats.events,
                },
                "provider_kinds": dict(provider.kinds),
                "load_seconds": round(load_end - t0, 1),
                "drained_after_s": None if drained_at is None else round(drained_at - load_end, 1),
                "total_seconds": round(time.monotonic() - started, 1),
                "pool": pool_size(plan),
                "logs": str(logdir) if keep else None,
            }
        )
        report = {
            "plan": asdict(plan),
            "checks": invariants.as_dicts(checks),
            "figures": figures,
            "ok": all(c.ok is not False for c in checks),
        }
        (logdir / "report.json").write_text(json.dumps(report, indent=2, default=str))
        return report
    raise AssertionError("unreachable")


def _drain(plan: Plan, poster: Poster, *, deadline: float, progress: Any) -> float | None:
    """Wait until every accepted job is final (or the deadline); the time it happened."""
    from django.db import DatabaseError, close_old_connections, connection

    from questions.models import Question

    ids = [p.job_id for p in poster.posted if p.job_id]
    last_report = 0.0
    while True:
        try:
            open_jobs = Question.objects.filter(
                pk__in=ids, status__in=["queued", "running"]
            ).count()
        except DatabaseError:
            connection.close()
            open_jobs = -1
        finally:
            close_old_connections()
        now = time.monotonic()
        if open_jobs == 0:
            return now
        if now > deadline:
            progress(f"soak: {open_jobs} jobs still open at the drain deadline")
            return None
        if now - last_report > 15:
            progress(f"soak: {open_jobs} jobs open")
            last_report = now
        time.sleep(2)
