"""The compose topology, natively on loopback: Debian's nginx in front of two gunicorn replicas
(production settings), the worker, PostgreSQL, Redis, the SQS server, the OpenAI-wire server and
Debian's Prometheus scraping web and worker; spans go to an OTLP receiver in the test.

A question posted through nginx is answered; both replicas served; Prometheus holds the job
metrics; the POST, the worker's process span, the OpenAI call and its DB/Redis spans share one
trace id; every metric the Grafana dashboard reads is offered by a running process."""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from questions.accounts import api_token_create
from questions.models import Question
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.fakes.sse import Event, iter_events, open_stream, read_events
from tests.integration.stack_configs import (
    COMPOSE_FILE,
    DASHBOARD,
    dashboard_exprs,
    exposition_names,
    promql_metric_names,
    render_nginx_conf,
    render_prometheus_yml,
)
from tests.support import GUNICORN, ROOT, child_env, collectstatic, free_port, wait_until

pytestmark = [pytest.mark.stack, pytest.mark.django_db(transaction=True), pytest.mark.slow(30)]

QUESTION = "What does the native stack test prove?"


class Processes:
    """Started processes, each with its output in a file; all stopped at the end."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self._started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, command: list[str], env: dict[str, str] | None = None) -> Path:
        log_path = self.logs / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self._started.append((name, process))
        return log_path

    def check_alive(self) -> None:
        for name, process in self._started:
            assert process.poll() is None, (
                f"{name} exited: {(self.logs / f'{name}.log').read_text()}"
            )

    def stop(self, name: str, timeout: float = 15) -> int:
        for started_name, process in self._started:
            if started_name == name:
                process.terminate()
                return process.wait(timeout=timeout)
        raise KeyError(name)

    def stop_all(self) -> None:
        for _, process in reversed(self._started):
            if process.poll() is None:
                process.terminate()
        for _, process in self._started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


@pytest.fixture
def processes(artifacts: Path) -> Iterator[Processes]:
    started = Processes(artifacts)
    yield started
    started.stop_all()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    session = requests.Session()
    session.trust_env = False  # loopback only, never through a proxy
    yield session
    session.close()


def _reachable(http: requests.Session, url: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return http.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    return probe


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    found = []
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(1) or ""))
            found.append((labels, float(match.group(2))))
    return found


def _api_requests(metrics_text: str) -> float:
    """Requests this replica served for the questions API (probes and scrapes do not count)."""
    return sum(
        value
        for labels, value in _samples(
            metrics_text, "django_http_requests_total_by_view_transport_method_total"
        )
        if labels.get("view", "").startswith("api:")
    )


def test_a_question_through_nginx_two_replicas_worker_and_prometheus(
    user: Any, queues: Any, fake_llm: Any, processes: Processes, http: requests.Session,
    tmp_path: Path,
) -> None:  # fmt: skip
    started = time.monotonic()
    fake_llm.configure(answer="That it all fits together.", prompt_tokens=11, completion_tokens=5)
    token = api_token_create(user=user, name="tests").key
    web_ports = [free_port(), free_port()]
    worker_port, nginx_port, prometheus_port = free_port(), free_port(), free_port()
    events_port = free_port()

    with OTLPReceiver() as otlp:
        production = child_env(
            DJANGO_SETTINGS_MODULE="config.settings.production",
            DJANGO_SECRET_KEY=secrets.token_urlsafe(40),
            DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost",
            DJANGO_SECURE_SSL_REDIRECT="false",
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp.endpoint,
            OTEL_BSP_SCHEDULE_DELAY="100",
            OTEL_PYTHON_DJANGO_EXCLUDED_URLS="healthz,readyz,metrics",
            LOG_LEVEL="INFO",
        )
        # Collected while the processes start (nginx serves the files only later).
        collecting = ThreadPoolExecutor(max_workers=1)
        collected = collecting.submit(collectstatic, {**production, "OTEL_SDK_DISABLED": "true"})
        collecting.shutdown(wait=False)
        for index, port in enumerate(web_ports, start=1):
            processes.start(
                f"web{index}",
                GUNICORN,
                env={
                    **production,
                    "GUNICORN_BIND": f"127.0.0.1:{port}",
                    "GUNICORN_THREADS": "4",
                    "OTEL_SERVICE_NAME": "questions-web",
                    "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id=web{index}",
                },
            )
        # The events process, started as docker-compose.yml starts it (its command, our port).
        compose_events = yaml.safe_load(COMPOSE_FILE.read_text())["services"]["events"]["command"]
        events_command = [
            arg if not arg.startswith(("--host=", "--port=")) else
            ("--host=127.0.0.1" if arg.startswith("--host=") else f"--port={events_port}")
            for arg in compose_events
        ]  # fmt: skip
        assert events_command[0] == "uvicorn"
        processes.start(
            "events",
            [sys.executable, "-m", *events_command],
            env={**production, "OTEL_SERVICE_NAME": "questions-events"},
        )
        worker_log = processes.start(
            "worker",
            [
                sys.executable,
                "manage.py",
                "run_sqs_worker",
                f"--metrics-port={worker_port}",
                "--wait-time=1",
                "--concurrency=2",
                "--requeue-interval=0",
            ],  # fmt: skip
            env={
                **production,
                "OTEL_SERVICE_NAME": "questions-worker",
                "METRICS_ADDR": "127.0.0.1",
            },
        )
        nginx_conf = render_nginx_conf(
            workdir=tmp_path,
            listen=f"127.0.0.1:{nginx_port}",
            upstreams=[f"127.0.0.1:{port}" for port in web_ports],
            static_root=ROOT / "staticfiles",
            events_upstreams=[f"127.0.0.1:{events_port}"],
        )
        processes.start(
            "nginx",
            [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp_path), "-c", str(nginx_conf),
             "-g", "daemon off;"],
        )  # fmt: skip
        prometheus_yml = render_prometheus_yml(
            workdir=tmp_path,
            targets={
                "prometheus": [f"127.0.0.1:{prometheus_port}"],
                "web": [f"127.0.0.1:{port}" for port in web_ports],
                "worker": [f"127.0.0.1:{worker_port}"],
                "events": [f"127.0.0.1:{events_port}"],
            },
        )
        processes.start(
            "prometheus",
            [
                "prometheus", f"--config.file={prometheus_yml}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
        )  # fmt: skip

        nginx = f"http://127.0.0.1:{nginx_port}"
        prometheus = f"http://127.0.0.1:{prometheus_port}"
        web_metrics = [f"http://127.0.0.1:{port}/metrics" for port in web_ports]
        worker_metrics = f"http://127.0.0.1:{worker_port}/metrics"
        events_metrics = f"http://127.0.0.1:{events_port}/metrics"
        for url in [
            *(u.replace("/metrics", "/healthz") for u in web_metrics),
            worker_metrics,
            events_metrics,
        ]:
            wait_until(_reachable(http, url), timeout=40, interval=0.2, what=url)
        wait_until(_reachable(http, f"{nginx}/healthz"), timeout=10, interval=0.1, what="nginx")
        wait_until(_reachable(http, f"{prometheus}/-/ready"), timeout=20, what="prometheus")
        processes.check_alive()
        boot_seconds = time.monotonic() - started

        # --- a question through nginx, answered by the worker
        headers = {"Authorization": f"Token {token}", "X-Request-ID": "stack-test-request"}
        response = http.post(
            f"{nginx}/api/questions/", json={"question": QUESTION}, headers=headers, timeout=10
        )
        assert response.status_code == 202, response.text
        assert response.headers["X-Request-ID"] == "stack-test-request"
        job_id = response.json()["id"]

        def answered() -> dict[str, Any] | None:
            body = http.get(f"{nginx}/api/questions/{job_id}/", headers=headers, timeout=5).json()
            return body if body["status"] in {"succeeded", "failed"} else None

        body = wait_until(answered, timeout=30, interval=0.2, what="the answer")
        assert body["status"] == "succeeded", body
        assert body["answer"] == "That it all fits together."
        assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
        # nginx makes a request id when the client sends none, and returns it.
        made = http.get(
            f"{nginx}/api/questions/{job_id}/",
            headers={"Authorization": f"Token {token}"},
            timeout=5,
        )  # noqa: E501
        assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-ID"])
        for _ in range(4):
            assert (
                http.get(f"{nginx}/api/questions/", headers=headers, timeout=5).status_code == 200
            )

        # --- both replicas served (their own counters), nginx spread the requests
        served = [_api_requests(http.get(url, timeout=5).text) for url in web_metrics]
        assert all(count >= 2 for count in served), served
        access = [json.loads(line) for line in (tmp_path / "access.log").read_text().splitlines()]
        api_upstreams = {e["upstream_addr"] for e in access if e["uri"].startswith("/api/")}
        assert api_upstreams == {f"127.0.0.1:{port}" for port in web_ports}
        assert any(e["request_id"] == "stack-test-request" for e in access)

        # --- nginx keeps /metrics private, limits the body, serves static files itself
        collected.result(timeout=120)  # raises what collectstatic raised
        assert http.get(f"{nginx}/metrics", timeout=5).status_code == 403
        assert http.get(f"{nginx}/metrics/", timeout=5).status_code == 403
        too_big = http.post(
            f"{nginx}/api/questions/", data=b"x" * 200_000, headers=headers, timeout=10
        )
        assert too_big.status_code == 413
        manifest = json.loads((ROOT / "staticfiles" / "staticfiles.json").read_text())
        static = http.get(f"{nginx}/static/{manifest['paths']['admin/css/base.css']}", timeout=5)
        assert static.status_code == 200
        assert "immutable" in static.headers["Cache-Control"]
        assert "X-Request-ID" not in static.headers  # not proxied: nginx answered itself

        # --- Server-Sent Events through nginx, served by the events process (uvicorn)
        stream = open_stream(f"{nginx}/api/questions/{job_id}/events", headers, timeout=10)
        assert stream.status == 200
        assert stream.getheader("Content-Type").startswith("text/event-stream")
        # To the end of the body: the stream closes after its final event.
        events = [e for e in read_events(stream, until_final=False) if isinstance(e, Event)]
        assert [e.event for e in events] == ["status", "done"]
        assert events[-1].json()["answer"] == "That it all fits together."

        def sse_upstreams() -> set[str]:
            lines = (tmp_path / "access.log").read_text().splitlines()
            entries = [json.loads(line) for line in lines]
            return {e["upstream_addr"] for e in entries if e["uri"].endswith("/events")}

        # nginx logs a request once it has ended, a moment after the client read the last byte.
        assert wait_until(sse_upstreams, timeout=5, what="the access log line of the stream") == {
            f"127.0.0.1:{events_port}"
        }

        # --- Prometheus scraped the job metrics from the worker and both replicas
        def query(promql: str) -> list[dict[str, Any]]:
            answer = http.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
            return answer.json()["data"]["result"]

        succeeded = wait_until(
            lambda: query('questions_jobs_finished_total{outcome="succeeded"} >= 1'),
            timeout=15, interval=0.25, what="Prometheus to scrape the worker's job metrics",
        )  # fmt: skip
        assert succeeded[0]["metric"]["job"] == "worker"
        assert query("questions_llm_tokens_total") != []
        up = wait_until(lambda: len(query('up{job="web"} == 1')) == 2 or None, timeout=10)
        assert up

        # --- one trace from the POST through the OpenAI call
        job = Question.objects.get(pk=job_id)
        assert re.fullmatch(r"[0-9a-f]{32}", job.trace_id)
        names_needed = {f"{queues.name} process", "chat gpt-4o-mini"}

        def trace_complete() -> list[Any] | None:
            spans = otlp.trace(job.trace_id)
            return spans if names_needed <= {s.name for s in spans} else None

        spans = wait_until(trace_complete, timeout=15, interval=0.2, what="the trace's spans")
        web_spans = [s for s in spans if s.service == "questions-web"]
        worker_spans = [s for s in spans if s.service == "questions-worker"]
        server = [s for s in web_spans if s.kind == "SPAN_KIND_SERVER"]
        assert len(server) == 1, web_spans
        method = server[0].attributes.get(
            "http.request.method", server[0].attributes.get("http.method")
        )
        assert method == "POST", server[0]
        assert server[0].parent_span_id == ""  # the trace starts at the POST
        assert any(s.attributes.get("rpc.method") == "SendMessage" for s in web_spans)
        (process,) = [s for s in worker_spans if s.name == f"{queues.name} process"]
        assert process.parent_span_id in {s.span_id for s in web_spans}
        (chat,) = [s for s in worker_spans if s.name == "chat gpt-4o-mini"]
        assert chat.attributes["gen_ai.system"] == "openai"
        assert chat.attributes["gen_ai.usage.input_tokens"] == 11
        assert chat.attributes["gen_ai.usage.output_tokens"] == 5
        worker_systems = {s.attributes.get("db.system") for s in worker_spans}
        assert {"postgresql", "redis"} <= worker_systems

        # --- the worker's log line for the job carries the trace id
        job_lines = [
            json.loads(line)
            for line in worker_log.read_text().splitlines()
            if line.startswith("{") and job_id in line
        ]
        assert job_lines and {line["trace_id"] for line in job_lines} == {job.trace_id}
        # ... and so does the web replica's line about creating it; no question text, no secret.
        logs = {
            name: (processes.logs / f"{name}.log").read_text()
            for name in ("web1", "web2", "worker")
        }
        created = [
            json.loads(line)
            for text in (logs["web1"], logs["web2"])
            for line in text.splitlines()
            if line.startswith("{") and '"question created"' in line
        ]
        assert [(line["job_id"], line["trace_id"]) for line in created] == [(job_id, job.trace_id)]
        for name, text in logs.items():
            assert QUESTION not in text, name
            assert production["DJANGO_SECRET_KEY"] not in text, name
            assert token not in text, name

        # --- every metric the dashboard reads exists in a running process's /metrics
        offered = exposition_names(http.get(worker_metrics, timeout=5).text)
        for url in [*web_metrics, events_metrics]:
            offered |= exposition_names(http.get(url, timeout=5).text)
        exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
        used = set().union(*(promql_metric_names(expr) for expr in exprs))
        assert used and used <= offered, sorted(used - offered)

        # Unbuffered: a watcher of a job the model takes 2 s over gets its first event at once.
        fake_llm.enqueue({"latency": 2.0})
        slow_id = http.post(
            f"{nginx}/api/questions/", json={"question": "Slowly?"}, headers=headers, timeout=10
        ).json()["id"]
        connected = time.monotonic()
        stream = open_stream(f"{nginx}/api/questions/{slow_id}/events", headers, timeout=20)
        arrivals: list[tuple[float, str]] = []
        for item in iter_events(stream):
            if isinstance(item, Event):
                arrivals.append((time.monotonic() - connected, item.event))
                if item.event == "done":
                    break
        assert arrivals[0][1] == "status" and arrivals[0][0] < 1.0, arrivals
        assert arrivals[-1][1] == "done" and arrivals[-1][0] > 1.5, arrivals
        stream.close()
        processes.check_alive()
        assert processes.stop("worker") == 0
        total_seconds = time.monotonic() - started
        print(f"stack booted in {boot_seconds:.1f}s, whole test {total_seconds:.1f}s")
