"""The rig: fauxqs, the fake LLM, the bench database and the processes under test.

Everything runs on 127.0.0.1; each process logs to a file in the run's folder. The driver itself
loads Django (bench settings, the bench database) to insert job rows and read their timestamps.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import free_port
from tests.support import wait_until as wait_for

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PG_ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BENCH_DB = os.environ.get("BENCH_DATABASE", "questions_bench")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB; (0, 0) once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0, 0
    values = {
        line.split(":")[0]: int(line.split()[1])
        for line in text.splitlines()
        if line.startswith(("VmRSS:", "VmHWM:"))
    }
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Process:
    """A child process with its output in a log file, an RSS sampler and a clean stop."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        logdir: Path,
        *,
        ready: str,
        cwd: Path = ROOT,
    ) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("w")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self.rss_samples: list[tuple[float, int]] = []
        self._sampling = threading.Event()
        wait_for(
            lambda: ready in self.output() or self.popen.poll() is not None,
            timeout=60,
            what=f"{name} to be ready",
        )
        if self.popen.poll() is not None:
            raise RuntimeError(f"{name} exited at start:\n{self.output()[-3000:]}")
        self.ready_after = time.monotonic() - self.started

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def sample_rss(self, interval: float = 0.25) -> None:
        """Record VmRSS in the background until stop()."""

        def loop() -> None:
            while not self._sampling.wait(interval):
                rss, _ = rss_kib(self.pid)
                if rss:
                    self.rss_samples.append((time.monotonic(), rss))

        threading.Thread(target=loop, daemon=True).start()

    def peak_rss_mib(self) -> float:
        return rss_kib(self.pid)[1] / 1024

    def stop(self, timeout: float = 30) -> int | None:
        self._sampling.set()
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()
        return self.popen.returncode


@dataclass
class Rig:
    logdir: Path
    sqs_port: int = field(default_factory=free_port)
    llm_port: int = field(default_factory=free_port)
    processes: list[Process] = field(default_factory=list)

    @property
    def sqs_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sqs_port}"

    @property
    def llm_url(self) -> str:
        return f"http://127.0.0.1:{self.llm_port}"

    def env(
        self, settings_module: str = "config.settings.production", **extra: str
    ) -> dict[str, str]:
        """The environment a user would give the service, pointed at the rig."""
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DJANGO_", "OTEL_", "OPENAI_", "SQS_", "QUESTIONS_"))
        }
        env.update(
            {
                "DJANGO_SETTINGS_MODULE": settings_module,
                "DJANGO_SECRET_KEY": _SECRET,
                "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
                "DATABASE_URL": f"{PG_ADMIN_URL.rsplit('/', 1)[0]}/{BENCH_DB}",
                "REDIS_URL": REDIS_URL,
                "AWS_ENDPOINT_URL_SQS": self.sqs_endpoint,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_REGION": "us-east-1",
                "AWS_DEFAULT_REGION": "us-east-1",
                "OPENAI_BASE_URL": f"{self.llm_url}/v1",
                "OPENAI_API_KEY": "bench",
                "QUESTIONS_REQUEUE_AFTER": "86400",
                "QUESTIONS_THROTTLE_RATE": "100000000/second",
                "QUESTIONS_MAX_OPEN_PER_USER": "100000000",
                "QUESTIONS_DAILY_BUDGET_USD": "100000000",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(extra)
        return env

    def start(
        self,
        name: str,
        argv: list[str],
        *,
        ready: str,
        env: dict[str, str] | None = None,
        cwd: Path = ROOT,
    ) -> Process:
        """Start a process (from `cwd`: another tree's code, for a before/after cell)."""
        process = Process(name, argv, env or self.env(), self.logdir, ready=ready, cwd=cwd)
        self.processes.append(process)
        return process

    def stop(self, process: Process) -> int | None:
        if process in self.processes:
            self.processes.remove(process)
        return process.stop()

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop(timeout=10)
        self.processes.clear()

    # --- services ----------------------------------------------------------------------------

    def start_services(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise SystemExit("node is needed for fauxqs: apt-get install nodejs npm")
        if not (BENCH / "node_modules" / "fauxqs").is_dir():
            subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=BENCH, check=True)
        self.start(
            "fauxqs",
            [node, str(BENCH / "fauxqs_server.mjs"), "--port", str(self.sqs_port)],
            ready="fauxqs listening",
        )
        self.start(
            "fake-llm",
            [sys.executable, "-m", "bench.async_llm", "--port", str(self.llm_port)],
            ready="fake LLM listening",
        )

    def llm(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Talk to the fake LLM's /_control/ endpoints."""
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1 only)
            f"{self.llm_url}/_control/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else {}

    def llm_reset(self, latency: float) -> None:
        self.llm("reset", {})
        self.llm("configure", {"latency": latency})

    def llm_calls(self) -> int:
        return int(self.llm("stats")["calls"])


_SECRET = "bench-" + secrets.token_urlsafe(48)  # production wants 50+ characters


def prepare_database(env: dict[str, str]) -> None:
    """Create the bench database if missing and migrate it."""
    import psycopg

    with psycopg.connect(
        PG_ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (BENCH_DB,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{BENCH_DB}"')
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )


def setup_django(env: dict[str, str]) -> None:
    """Load Django in the driver with the rig's environment (bench settings)."""
    os.environ.update(env)
    import django

    django.setup()
