"""A graceful stop hands back what has not started paying and is not failed by an SQS outage.

`run_sqs_worker` runs as a real subprocess. A stop (SIGTERM, as Kubernetes sends it) while
claimed jobs wait out a provider pause longer than --shutdown-timeout: those jobs are handed
back at once (claim released without using an attempt, message visible again), the worker exits
0 well within the timeout, and another worker answers them later, each paid once. A stop while
SQS is cut off (a TCP proxy between the worker and moto): jobs mid-call finish, the messages it
cannot settle reappear after their visibility timeout, and the exit is still 0.
"""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from questions.services import question_create
from questions.sqs.client import reset_sqs_client
from questions.sqs.queues import queues_create
from tests.factories import reloaded
from tests.fakes.sqs import start_moto
from tests.support import TCPProxy, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

PAUSE = 20  # the provider's Retry-After, longer than the grace period
GRACE = "--shutdown-timeout=12"


def asked(fake_llm: Any) -> Counter[str]:
    return Counter(request["messages"][-1]["content"] for request in fake_llm.requests)


def test_jobs_waiting_out_a_provider_pause_are_handed_back_at_a_stop(
    user, queues, fake_llm, worker_process
):
    worker = worker_process(
        "--concurrency=5", "--visibility-timeout=120", "--requeue-interval=0", GRACE
    )
    fake_llm.enqueue({"status": 429, "retry_after": PAUSE})
    first, _ = question_create(owner=user, text="Question 0?")
    wait_until(lambda: fake_llm.calls == 1, timeout=30, what="the 429")
    waiting = [question_create(owner=user, text=f"Question {i}?")[0] for i in range(1, 4)]
    wait_until(
        lambda: all(reloaded(job).status == "running" for job in waiting),
        timeout=15,
        what="the jobs claimed, waiting for the provider",
    )

    stopped_at = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0, worker.output
    assert time.monotonic() - stopped_at < 6, worker.output  # not the pause, not the grace
    # Handed back: queued again, the attempt given back, the message visible at once.
    assert [(reloaded(j).status, reloaded(j).attempts) for j in waiting] == [("queued", 0)] * 3
    assert queues.depth()["visible"] == 3
    assert fake_llm.calls == 1

    worker_process("--concurrency=5", "--requeue-interval=0")
    jobs = [first, *waiting]
    wait_until(
        lambda: all(reloaded(job).status == "succeeded" for job in jobs),
        timeout=PAUSE + 30,
        what="every job answered by the next worker",
    )
    assert asked(fake_llm) == {job.text: 2 if job == first else 1 for job in jobs}
    assert [reloaded(job).attempts for job in waiting] == [1] * 3


@pytest.fixture
def sqs_behind_a_proxy(settings: Any, monkeypatch: Any) -> Any:
    """A private moto with this test's queues, and a TCP proxy in front of it for the worker."""
    port = free_port()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", f"http://127.0.0.1:{port}")
    reset_sqs_client()
    suffix = uuid.uuid4().hex[:8]
    settings.SQS_QUEUE_NAME, settings.SQS_DLQ_NAME = f"cut-{suffix}", f"cut-dlq-{suffix}"
    sqs = start_moto(port)
    proxy = TCPProxy(port).start()
    try:
        wait_until(
            lambda: _try(
                lambda: queues_create(
                    queue_name=settings.SQS_QUEUE_NAME,
                    dlq_name=settings.SQS_DLQ_NAME,
                    visibility_timeout=30,
                    max_receive_count=10,
                )
            ),
            timeout=30,
            what="moto",
        )
        yield proxy
    finally:
        proxy.cut()
        sqs.terminate()
        sqs.wait(timeout=10)
        reset_sqs_client()


def test_a_stop_while_sqs_is_cut_off_is_still_graceful(
    user, fake_llm, worker_process, sqs_behind_a_proxy
):
    proxy = sqs_behind_a_proxy
    via_proxy = {"AWS_ENDPOINT_URL_SQS": f"http://127.0.0.1:{proxy.port}"}
    fake_llm.configure(latency=3.0)
    worker = worker_process(
        "--concurrency=4", "--visibility-timeout=5", "--requeue-interval=0", GRACE, env=via_proxy
    )
    jobs = [question_create(owner=user, text=f"Cut {i}?")[0] for i in range(3)]
    assert fake_llm.wait_for_in_flight(3, timeout=30), worker.output

    proxy.cut()
    worker.signal(signal.SIGTERM)
    assert worker.wait(timeout=40) == 0, worker.output
    assert "return after their visibility timeout" in worker.output
    assert [reloaded(job).status for job in jobs] == ["succeeded"] * 3

    # Back on line, the messages it could not delete reappear and are taken for duplicates.
    proxy.restore()
    later = worker_process("--requeue-interval=0", env=via_proxy)
    wait_until(
        lambda: later.output.count("duplicate delivery of a finished job") >= 3,
        timeout=40,
        what="the undeleted messages seen again and dropped",
    )
    assert fake_llm.calls == 3  # each paid once
    assert [(reloaded(job).status, reloaded(job).attempts) for job in jobs] == [
        ("succeeded", 1)
    ] * 3


def _try(action: Any) -> bool:
    try:
        action()
    except Exception:
        return False
    return True
