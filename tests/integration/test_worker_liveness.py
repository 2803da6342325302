"""The worker's liveness file (`run_sqs_worker --alive-file`, the Kubernetes liveness probe's
signal): fresh while the event loop turns, stale while the loop is blocked, and after it stops.
Against the real SQS server; the handler is a stand-in that blocks the loop on purpose."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from questions.sqs.client import get_sqs_client
from questions.sqs.consumer import Consumer
from questions.sqs.executor import ACK, Outcome
from questions.sqs.runner import Runner
from tests.support import wait_until

pytestmark = pytest.mark.django_db(transaction=True)

BLOCK_SECONDS = 4.0


def age(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def test_alive_file_is_fresh_while_the_loop_turns_and_stale_when_blocked_or_stopped(
    queues, tmp_path
):
    alive = tmp_path / "worker-alive"
    blocking = threading.Event()

    async def handler(message) -> Outcome:
        if message["Body"] == "block":
            blocking.set()
            time.sleep(BLOCK_SECONDS)  # a blocking call on the event loop: the loop stalls
        return ACK

    runner = Runner(
        consumer=Consumer(queue_name=queues.name, dlq_name=queues.dlq_name, visibility_timeout=10),
        handler=handler,
        concurrency=2,
        wait_time=1,
        alive_file=str(alive),
    )
    thread = threading.Thread(target=runner.run)
    thread.start()
    try:
        wait_until(alive.exists, timeout=10, what="the alive file")
        first = alive.stat().st_mtime
        # Renewed while idle (long polls run on the SQS threads, the loop keeps turning).
        wait_until(lambda: alive.stat().st_mtime > first + 1, timeout=10, what="a renewal")
        assert age(alive) < 2

        get_sqs_client().send_message(QueueUrl=queues.url, MessageBody="block")
        wait_until(blocking.is_set, timeout=10, what="the blocking job")
        oldest = 0.0
        deadline = time.monotonic() + BLOCK_SECONDS - 0.5
        while time.monotonic() < deadline:
            oldest = max(oldest, age(alive))
            time.sleep(0.1)
        assert oldest > BLOCK_SECONDS - 2, f"renewed while the loop was blocked ({oldest:.1f} s)"

        # Fresh again once the loop turns.
        wait_until(lambda: age(alive) < 1.5, timeout=10, what="renewal after the block")
    finally:
        runner.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
    stopped_at = alive.stat().st_mtime
    time.sleep(2.5)  # the assertion is that nothing happens in this time
    assert alive.stat().st_mtime == stopped_at, "touched after the worker stopped"
    assert age(alive) > 2
