"""Helpers shared by the tests: polling with a deadline, free ports, server and worker
subprocesses, the JSON error shape."""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings

if TYPE_CHECKING:
    from questions.runtime import JobRuntime

ROOT = Path(__file__).resolve().parent.parent


def wait_until[T](
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Poll `predicate` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def answer_job(*, job_id: str, max_attempts: int, runtime: JobRuntime | None = None) -> str:
    """`question_answer` as the worker runs it (its runtime unless `runtime` is given), on an
    event loop of its own, closing the LLM clients the job opened before that loop ends, as the
    worker does."""
    from asgiref.sync import async_to_sync

    from questions.answering import question_answer
    from questions.llm.client import aclose_llm_clients
    from questions.worker.runtime import WORKER_RUNTIME

    async def run() -> str:
        try:
            return await question_answer(
                job_id=job_id, max_attempts=max_attempts, runtime=runtime or WORKER_RUNTIME
            )
        finally:
            await aclose_llm_clients()

    return async_to_sync(run)()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**overrides: str) -> dict[str, str]:
    """The environment for a subprocess that must see what this test process sees."""
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": (
                f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
                if db["ENGINE"].endswith("postgresql")
                else os.environ.get("DATABASE_URL", "")
            ),
            "REDIS_URL": settings.CACHES["default"]["LOCATION"],
            "CACHE_KEY_PREFIX": settings.CACHES["default"]["KEY_PREFIX"],
            "SQS_QUEUE_NAME": settings.SQS_QUEUE_NAME,
            "SQS_DLQ_NAME": settings.SQS_DLQ_NAME,
            "OPENAI_BASE_URL": settings.OPENAI_BASE_URL or "",
            "OPENAI_API_KEY": settings.OPENAI_API_KEY or "",
            "OPENAI_TIMEOUT": str(settings.OPENAI_TIMEOUT),
            "QUESTIONS_CLAIM_MARGIN": str(settings.QUESTIONS_CLAIM_MARGIN),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(overrides)
    return env


def production_env(**overrides: str) -> dict[str, str]:
    """`child_env` on production settings (DEBUG off) over plain http, without telemetry."""
    return child_env(
        **{
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
            "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_SECURE_SSL_REDIRECT": "false",
            "OTEL_SDK_DISABLED": "true",
            **overrides,
        }
    )


GUNICORN = [sys.executable, "-m", "gunicorn", "config.wsgi", "-c", "config/gunicorn.conf.py"]


# Which test run last collected the static files into STATIC_ROOT (under an exclusive lock).
COLLECTSTATIC_STAMP = ROOT / "test-artifacts" / ".collectstatic"


def collectstatic(env: dict[str, str]) -> None:
    """`manage.py collectstatic` (production settings: hashed names, the manifest) into the one
    STATIC_ROOT of this checkout, once per test run. The processes of a parallel run (xdist)
    share STATIC_ROOT: a second collectstatic rewrites the manifest and the stylesheets while
    another test's gunicorn or nginx serves them, so the first caller collects, under a lock,
    and the others wait for it and then use what it wrote."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"pid-{os.getpid()}"
    COLLECTSTATIC_STAMP.parent.mkdir(parents=True, exist_ok=True)
    with COLLECTSTATIC_STAMP.open("a+") as stamp:
        fcntl.flock(stamp, fcntl.LOCK_EX)  # released when the file is closed
        stamp.seek(0)
        if stamp.read() == run and (ROOT / "staticfiles" / "staticfiles.json").exists():
            return
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
            cwd=ROOT,
            env=env,
            check=True,
            timeout=120,
        )
        stamp.seek(0)
        stamp.truncate()
        stamp.write(run)


def answers_health(base_url: str, *, timeout: float = 5.0) -> Callable[[], bool]:
    """A predicate for `wait_until`: the server at `base_url` answers /healthz with 200."""

    def up() -> bool:
        try:
            return requests.get(f"{base_url}/healthz", timeout=timeout).status_code == 200
        except requests.RequestException:  # refused, or still loading the app
            return False

    return up


@contextlib.contextmanager
def serving(
    argv: list[str], *, env: dict[str, str], log_path: Path, base_url: str, timeout: float = 30.0
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a web server process until it answers /healthz at `base_url`; stop it on the way
    out. Its output goes to `log_path`."""
    with log_path.open("w") as log:
        process = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(
                answers_health(base_url), timeout=timeout, interval=0.2, what=f"{argv} to answer"
            )
            yield process
        finally:
            process.terminate()
            process.wait(timeout=30)


def api_ask(api: Any, text: str = "How far is the moon?", **headers: str) -> Any:
    """POST a question to the API as the API client's user."""
    return api.post("/api/questions/", {"question": text}, format="json", **headers)


def page_ask(client: Any, text: str) -> Any:
    """Submit the question form of the home page as the client's user."""
    return client.post("/", {"question": text})


def assert_json_error(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    """A clear 4xx: the JSON error shape, a human `detail`, the machine `error` code if given,
    never a traceback."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body["detail"], str) and body["detail"]
    if code is not None:
        assert body["error"] == code
    assert "Traceback" not in response.content.decode()
    return body


class WorkerProcess:
    """`manage.py run_sqs_worker` as a real subprocess, its output kept in a file."""

    def __init__(
        self, args: list[str], env: dict[str, str], log_path: Path, *, new_session: bool = False
    ) -> None:
        self.log_path = log_path
        self._log = log_path.open("w")
        # In a session (and process group) of its own, a signal to the group reaches the
        # supervisor and its children, as systemd's control-group kill or Ctrl-C do.
        self.new_session = new_session
        self.process = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "run_sqs_worker", *args],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )

    @property
    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def consuming(self, timeout: float = 60.0) -> WorkerProcess:
        """Wait until the worker polls its queue (Django loaded), so that a test's deadlines
        count the job's work, not the start-up (seconds on a loaded machine)."""
        wait_until(
            lambda: "consuming" in self.output or self.process.poll() is not None,
            timeout=timeout,
            what="the worker to consume its queue",
        )
        assert self.process.poll() is None, self.output
        return self

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def signal_group(self, signum: int) -> None:
        """The signal to every process of its group (`kill -- -PGID`); needs `new_session`."""
        assert self.new_session, "start it with new_session=True to signal its group"
        os.killpg(self.process.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout=timeout)

    def kill(self) -> None:
        if self.new_session:
            with contextlib.suppress(ProcessLookupError):  # its children too, if any are left
                os.killpg(self.process.pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        self._log.close()


class TCPProxy:
    """A loopback TCP proxy that a test can cut (every connection dropped, new ones refused)
    and restore: a real network outage between a process and a server, without stopping it."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> TCPProxy:
        self._server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()
        return self

    def cut(self) -> None:
        with self._lock:
            server, self._server = self._server, None
            sockets, self._sockets = self._sockets, []
        if server is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would leave the
            # socket listening until that accept() returned.
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_RDWR)
            server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def restore(self) -> None:
        self.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)


def database_proxy() -> tuple[TCPProxy, str]:
    """A started TCPProxy in front of this test's PostgreSQL, and the DATABASE_URL through it:
    cut it for a database outage seen by a subprocess only."""
    db = settings.DATABASES["default"]
    proxy = TCPProxy(int(db["PORT"] or 5432)).start()
    return proxy, f"postgres://{db['USER']}@127.0.0.1:{proxy.port}/{db['NAME']}"


def child_pids(output: str) -> list[int]:
    """The worker processes a `run_sqs_worker --processes N` supervisor says it started."""
    return [int(pid) for pid in re.findall(r"Started worker process (\d+)", output)]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def open_events(
    port: int, job: Any, token: str, *, source: str = "127.0.0.1"
) -> http.client.HTTPResponse:
    """GET a job's event stream on 127.0.0.1:`port` from the loopback address `source`; the
    response, unread (its connection kept on it, to close)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30, source_address=(source, 0))
    conn.request(
        "GET",
        f"/api/questions/{job.pk}/events",
        headers={"Accept": "text/event-stream", "Authorization": f"Token {token}"},
    )
    response = conn.getresponse()
    response.connection = conn  # type: ignore[attr-defined]
    return response
