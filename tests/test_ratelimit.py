"""questions.llm.ratelimit against the real Redis: two OS processes share one limit, never
exceeding it in any window; a 429's penalize() in one process pauses the other and halves the
rate; with Redis unreachable each process keeps to its share (never unlimited)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

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
        [sys.executable, "-m", "tests.ratelimit_child", model, str(count), str(tokens), str(out)],
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


def test_two_processes_share_one_requests_per_minute_limit(tmp_path):
    model, rpm, each = _model(), 120, 8  # one call per 0.5 s between them
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    children = [_start(model, each, 1, out, OPENAI_RPM=str(rpm)) for out in outs]
    for child in children:
        assert child.wait(timeout=60) == 0
    times = _times(*outs)
    assert len(times) == 2 * each
    assert all(path.read_text().split() for path in outs)  # both processes got calls
    # rpm / 60 = 2 per second: no 1 s window holds more; no 3 s window more than 6.
    assert _most_in_any_window(times, 1.0) <= 2
    assert _most_in_any_window(times, 3.0) <= 6
    # Spaced, not bunched: 16 calls at 0.5 s apart take at least 7.5 s.
    assert times[-1] - times[0] >= (2 * each - 1) * 60 / rpm - 0.1


def test_tokens_per_minute_space_the_calls_by_their_size(tmp_path):
    model, tpm, tokens, each = _model(), 240_000, 1000, 5  # 1000 tokens: 0.25 s each
    outs = [tmp_path / "a.txt", tmp_path / "b.txt"]
    children = [_start(model, each, tokens, out, OPENAI_TPM=str(tpm)) for out in outs]
    for child in children:
        assert child.wait(timeout=60) == 0
    times = _times(*outs)
    assert len(times) == 2 * each
    assert _most_in_any_window(times, 1.0) * tokens <= tpm / 60
    assert times[-1] - times[0] >= (2 * each - 1) * 60 * tokens / tpm - 0.1


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
    after = [t for t in times if t > penalized_at + 0.05]
    # Nothing went during the 2 s pause (a call already past the limiter may land just after).
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

    free, paused = asyncio.run(run())
    assert free < 5.0  # 50 calls, no waiting (only Redis round trips)
    assert paused >= 0.95
