"""questions.llm.ratelimit against the real Redis: two OS processes share one limit, never
exceeding it in any window; a 429's penalize() in one process pauses the other and halves the
rate; with Redis unreachable each process keeps to its share (never unlimited)."""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from questions.llm import ratelimit
from tests.support import ROOT, child_env, free_port, wait_until

# A Redis database of its own: a test run elsewhere on this machine that still FLUSHDBs the
# shared test database (cache.clear()) would wipe the limiter's keys in the middle of a test.
OWN_REDIS_DB = "redis://127.0.0.1:6379/13"


@pytest.fixture(autouse=True)
def _fresh_limiter(settings):
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": OWN_REDIS_DB}}
    ratelimit.reset_rate_limiter()
    yield
    ratelimit.reset_rate_limiter()


def _model() -> str:
    return f"model-{uuid.uuid4().hex[:8]}"  # fresh keys in Redis for each test


def _start(model: str, count: int, tokens: int, out: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration.ratelimit_child",
            model,
            str(count),
            str(tokens),
            str(out),
        ],
        cwd=ROOT,
        env=child_env(**{"REDIS_URL": OWN_REDIS_DB, **env}),
    )


def _times(*paths: Path) -> list[float]:
    return sorted(float(line) for path in paths for line in path.read_text().split())


def _most_in_any_window(times: list[float], seconds: float) -> int:
    """The most events in any half-open window [t, t + seconds) starting at an event."""
    return max(
        sum(1 for other in times[index:] if other < start + seconds)
        for index, start in enumerate(times)
    )


# A process records a call's time a little after the limiter let it go (more on a busy
# machine), which can bring two recorded times closer than the limiter spaced them. Windows
# are shortened by this much, so that only a limiter fault, not a late clock read, fails them.
JITTER = 0.25


def test_two_processes_share_one_requests_per_minute_limit(tmp_path):
    model, rpm, each = _model(), 60, 5  # one call per second between the two of them
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    children = [_start(model, each, 1, out, OPENAI_RPM=str(rpm)) for out in outs]
    for child in children:
        assert child.wait(timeout=90) == 0
    times = _times(*outs)
    assert len(times) == 2 * each
    assert all(path.read_text().split() for path in outs)  # both processes got calls
    # rpm / 60 = 1 per second: no 1 s window holds 2 calls, no 5 s window 6.
    assert _most_in_any_window(times, 1 - JITTER) <= 1
    assert _most_in_any_window(times, 5 - JITTER) <= 5
    # Spaced, not bunched: 10 calls 1 s apart take at least 9 s.
    assert times[-1] - times[0] >= (2 * each - 1) * 60 / rpm - JITTER


def test_tokens_per_minute_space_the_calls_by_their_size(tmp_path):
    model, tpm, tokens, each = _model(), 120_000, 1000, 5  # 1000 tokens: 0.5 s each
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    children = [_start(model, each, tokens, out, OPENAI_TPM=str(tpm)) for out in outs]
    for child in children:
        assert child.wait(timeout=90) == 0
    times = _times(*outs)
    assert len(times) == 2 * each
    # tpm / 60 = 2000 tokens per second: at most 2 calls of 1000 in any 1 s window.
    assert _most_in_any_window(times, 1 - JITTER) * tokens <= tpm / 60
    assert times[-1] - times[0] >= (2 * each - 1) * 60 * tokens / tpm - JITTER


def test_penalize_in_one_process_pauses_the_other_and_halves_the_rate(tmp_path, settings):
    model, rpm = _model(), 600  # one call per 0.1 s
    out = tmp_path / "b.txt"
    child = _start(model, 40, 1, out, OPENAI_RPM=str(rpm))
    try:
        wait_until(lambda: out.exists() and len(out.read_text().split()) >= 5, timeout=30)
        settings.OPENAI_RPM = rpm
        penalized_at = time.time()
        asyncio.run(ratelimit.penalize(model, 2.0))
        assert child.wait(timeout=60) == 0
    finally:
        child.kill()
    times = _times(out)
    # A call already past the limiter when penalize() ran may be recorded just after it.
    after = [t for t in times if t > penalized_at + JITTER]
    # Nothing else went during the 2 s pause.
    assert after[0] >= penalized_at + 2.0 - 0.05
    # Then at half the rate: 0.2 s apart, not 0.1 s.
    assert len(after) >= 5
    assert (after[-1] - after[0]) / (len(after) - 1) >= 0.19


def test_with_redis_unreachable_each_process_takes_its_share(settings, caplog):
    settings.CACHES = {
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}"}
    }
    settings.OPENAI_RPM = 1200  # 0.05 s apart when shared...
    settings.OPENAI_RATE_LIMIT_PROCESSES = 4  # ...0.2 s apart for this process alone
    model = _model()

    async def run() -> list[float]:
        stamps = []
        for _ in range(6):
            await ratelimit.acquire(model, 1)
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(run())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.2 - 0.01
    outage_logs = [r for r in caplog.records if "rate limit is per process" in r.getMessage()]
    assert len(outage_logs) == 1  # once per outage, not per call


def test_a_model_with_no_limit_goes_at_once_but_honours_a_429_pause(settings):
    settings.OPENAI_RPM = settings.OPENAI_TPM = 0
    model = _model()

    async def run() -> tuple[float, float]:
        start = time.monotonic()
        for _ in range(50):
            await ratelimit.acquire(model, 10_000)
        free = time.monotonic() - start
        await ratelimit.penalize(model, 1.0)
        start = time.monotonic()
        await ratelimit.acquire(model, 1)
        return free, time.monotonic() - start

    penalties = REGISTRY.get_sample_value("questions_llm_rate_limit_penalties_total") or 0.0
    free, paused = asyncio.run(run())
    assert free < 5.0  # 50 calls, no waiting (only Redis round trips)
    assert paused >= 0.95
    assert REGISTRY.get_sample_value("questions_llm_rate_limit_penalties_total") == penalties + 1


class _Monitor:
    """Redis MONITOR on a socket of its own: the commands Redis runs that name `needle`."""

    def __init__(self, needle: str) -> None:
        self.needle = needle.encode()
        self.lines: list[bytes] = []
        self._sock = socket.create_connection(("127.0.0.1", 6379), timeout=0.2)
        self._sock.sendall(b"MONITOR\r\n")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buffer += chunk
            *complete, buffer = buffer.split(b"\r\n")
            self.lines += [line for line in complete if self.needle in line]

    def evals(self) -> int:
        return sum(1 for line in self.lines if b'"EVAL"' in line.upper())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def test_a_model_with_no_limit_asks_redis_for_a_pause_once_per_check(settings):
    """No limit configured: the calls starting together share one question to Redis, and the
    next comes PAUSE_CHECK_SECONDS later at the earliest (not a round trip per call)."""
    settings.OPENAI_RPM = settings.OPENAI_TPM = 0
    model = _model()
    monitor = _Monitor(model)

    async def run() -> float:
        start = time.monotonic()
        await asyncio.gather(*(ratelimit.acquire(model, 100) for _ in range(100)))
        for _ in range(100):
            await ratelimit.acquire(model, 100)
        return time.monotonic() - start

    try:
        elapsed = asyncio.run(run())
        # Redis echoes commands to MONITOR after running them: the last one may lag a little.
        wait_until(lambda: monitor.evals() >= 1, timeout=5)
    finally:
        monitor.close()
    assert 1 <= monitor.evals() <= 1 + math.ceil(elapsed / ratelimit.PAUSE_CHECK_SECONDS)


def test_a_pause_set_by_another_process_reaches_a_model_with_no_limit(settings):
    settings.OPENAI_RPM = settings.OPENAI_TPM = 0
    model = _model()
    other_process = ratelimit.RateLimiter()  # its own state and client, as in another process

    async def run() -> float:
        await ratelimit.acquire(model, 1)  # Redis said: no pause
        await other_process.penalize(model, 1.0)
        penalized_at = time.monotonic()
        await asyncio.sleep(ratelimit.PAUSE_CHECK_SECONDS)  # what this process knew is stale
        await ratelimit.acquire(model, 1)
        return time.monotonic() - penalized_at

    assert asyncio.run(run()) >= 0.95
