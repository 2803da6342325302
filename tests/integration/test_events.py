"""`GET /api/questions/{id}/events`: Server-Sent Events over a real HTTP server, both ways it is
served: WSGI (pytest-django's live server, as gunicorn alone serves it) and ASGI (uvicorn, the
`events` process). The worker's side of the contract is written with stream_append_sync, as the
worker writes it: entries while it runs, the row, then `end`."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from questions.accounts import api_token_create
from questions.live.streams import stream_append_sync, stream_key
from questions.models import Question
from questions.services import question_create
from tests.factories import QuestionFactory
from tests.fakes.sse import Event, iter_events, open_stream, read_events
from tests.support import api_ask, child_env, free_port, serving

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def asgi_server(artifacts: Path) -> Iterator[str]:
    """uvicorn serving config.asgi, as the compose `events` process does."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving(
        [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--lifespan", "off",
         "--timeout-graceful-shutdown", "2"],
        env=child_env(QUESTIONS_EVENTS_KEEPALIVE="1"),
        log_path=artifacts / "uvicorn.log",
        base_url=url,
    ):  # fmt: skip
        yield url


@pytest.fixture(params=["wsgi", "asgi"])
def server(request: pytest.FixtureRequest) -> str:
    if request.param == "wsgi":
        return request.getfixturevalue("live_server").url
    return request.getfixturevalue("asgi_server")


def _auth(user: Any) -> dict[str, str]:
    token = api_token_create(user=user, name="tests").key
    return {"Authorization": f"Token {token}"}


def _stream_ids(job_id: object) -> list[str]:
    from django_redis import get_redis_connection

    return [i.decode() for i, _ in get_redis_connection("default").xrange(stream_key(job_id))]


def _finish(job: Question, answer: str, status: str = "succeeded") -> None:
    """What the worker does at the end: the row first, then `end`."""
    Question.objects.filter(pk=job.pk).update(
        status=status, answer=answer, finished_at=timezone.now(), prompt_tokens=3,
        completion_tokens=4,
    )  # fmt: skip
    stream_append_sync(job.pk, [("end", status)])


def _in_background(work: Callable[[], None]) -> threading.Thread:
    def run() -> None:
        try:
            work()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _events(items: list[Event | str]) -> list[Event]:
    return [item for item in items if isinstance(item, Event)]


def test_events_arrive_in_order_with_stream_ids_and_end_with_the_stored_job(server, user):
    job = QuestionFactory(owner=user, status="running", attempts=1, started_at=timezone.now())
    response = open_stream(f"{server}/api/questions/{job.pk}/events", _auth(user))
    assert response.status == 200
    assert response.getheader("Content-Type").startswith("text/event-stream")
    assert response.getheader("Cache-Control") == "no-store"
    assert response.getheader("X-Accel-Buffering") == "no"

    def worker() -> None:
        stream_append_sync(job.pk, [("status", "running")])
        for word in ("Hello", " **wor", "ld**\n\nbye"):
            time.sleep(0.1)  # the model writing, not synchronisation
            stream_append_sync(job.pk, [("delta", word)])
        _finish(job, "Hello **world**\n\nbye")

    thread = _in_background(worker)
    items = read_events(response)
    thread.join(timeout=10)

    assert items[0].startswith("retry:")
    events = _events(items)
    assert [e.event for e in events] == ["status", "status", "delta", "delta", "delta", "done"]
    assert events[0].id is None and events[0].json() == {"status": "running"}
    assert events[1].json() == {"status": "running"}
    assert "".join(e.json()["text"] for e in events[2:5]) == "Hello **world**\n\nbye"
    ids = _stream_ids(job.pk)
    assert [e.id for e in events[1:]] == ids  # each event id is its stream entry id
    done = events[-1].json()
    assert done["status"] == "succeeded"
    assert done["answer"] == "Hello **world**\n\nbye"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert done["id"] == str(job.pk) and done["url"].endswith(f"/api/questions/{job.pk}/")
    assert response.read() == b""  # the stream closed after the final event


def test_a_reconnect_with_last_event_id_resumes_after_that_event(server, user):
    job = QuestionFactory(owner=user, status="running", attempts=1)
    stream_append_sync(job.pk, [("status", "running"), ("delta", "one "), ("delta", "two ")])
    first = open_stream(f"{server}/api/questions/{job.pk}/events", _auth(user))
    seen: list[Event] = []
    for item in iter_events(first):
        if isinstance(item, Event):
            seen.append(item)
        if len(seen) == 4:
            break
    first.close()
    assert [e.event for e in seen] == ["status", "status", "delta", "delta"]
    resume_from = seen[2].id  # as if the connection dropped after "one "

    stream_append_sync(job.pk, [("delta", "three")])
    resumed = open_stream(
        f"{server}/api/questions/{job.pk}/events", {**_auth(user), "Last-Event-ID": resume_from}
    )
    _in_background(lambda: _finish(job, "one two three"))
    events = _events(read_events(resumed))
    assert [(e.event, e.data) for e in events[1:-1]] == [
        ("delta", '{"text":"two "}'),
        ("delta", '{"text":"three"}'),
    ]
    assert events[-1].event == "done" and events[-1].json()["answer"] == "one two three"

    # The query parameter does the same for clients that cannot set the header.
    by_query = open_stream(
        f"{server}/api/questions/{job.pk}/events?last_event_id={resume_from}", _auth(user)
    )
    events = _events(read_events(by_query))
    # The job is finished now: one final event at once, whatever was asked.
    assert [e.event for e in events] == ["status", "done"]


def test_a_finished_job_gets_one_final_event_at_once(server, user):
    job = QuestionFactory(
        owner=user, status="failed", error="The model refused.", finished_at=timezone.now()
    )
    started = time.monotonic()
    response = open_stream(f"{server}/api/questions/{job.pk}/events", _auth(user))
    items = read_events(response, until_final=False)  # to the end of the body
    assert time.monotonic() - started < 5
    events = _events(items)
    assert [e.event for e in events] == ["status", "failed"]
    assert events[1].id == "final"
    assert events[1].json()["error"] == "The model refused."


def test_a_cancelled_queued_job_ends_its_watchers_stream(live_server, user, api, queues):
    job_id = api_ask(api, "Never mind?").json()["id"]
    response = open_stream(f"{live_server.url}/api/questions/{job_id}/events", _auth(user))
    _in_background(lambda: api.post(f"/api/questions/{job_id}/cancel"))
    events = _events(read_events(response))
    assert [e.event for e in events] == ["status", "cancelled"]
    assert events[0].json() == {"status": "queued"}
    assert events[1].json()["status"] == "cancelled"
    assert events[1].id == _stream_ids(job_id)[-1]


def test_idle_streams_get_keepalives_and_a_finish_without_end_still_closes(asgi_server, user):
    # The server under test sends a keepalive every second (QUESTIONS_EVENTS_KEEPALIVE=1).
    job = QuestionFactory(owner=user, status="running", attempts=1)
    response = open_stream(f"{asgi_server}/api/questions/{job.pk}/events", _auth(user))
    items = []
    for item in iter_events(response):
        items.append(item)
        if item == ": keepalive":
            break
    # The worker stored the row but its `end` never reached Redis: the row decides.
    Question.objects.filter(pk=job.pk).update(
        status="succeeded", answer="late", finished_at=timezone.now()
    )
    events = _events(read_events(response))
    assert events[-1].event == "done" and events[-1].json()["answer"] == "late"


def test_with_redis_down_the_job_row_is_polled(live_server, user, settings):
    job = QuestionFactory(owner=user, status="running", attempts=1)
    headers = _auth(user)
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings.CACHES = {**settings.CACHES, "default": {**settings.CACHES["default"]}}
    settings.CACHES["default"]["LOCATION"] = dead
    settings.QUESTIONS_EVENTS_POLL_INTERVAL = 0.2

    response = open_stream(f"{live_server.url}/api/questions/{job.pk}/events", headers)
    assert response.status == 200
    first = next(iter_events(response))
    assert first.startswith("retry:")
    Question.objects.filter(pk=job.pk).update(
        status="succeeded", answer="from the row", finished_at=timezone.now()
    )
    started = time.monotonic()
    events = _events(read_events(response))
    assert time.monotonic() - started < 5
    assert events[-1].event == "done" and events[-1].json()["answer"] == "from the row"


def test_someone_elses_job_is_404_no_auth_is_401_bad_resume_id_is_400(
    live_server, user, other_user
):
    theirs = QuestionFactory(owner=other_user)
    url = f"{live_server.url}/api/questions/{theirs.pk}/events"
    for headers, status, code in [
        (_auth(user), 404, "not_found"),
        ({}, 401, "not_authenticated"),
        ({"Authorization": "Token nope"}, 401, "authentication_failed"),
        ({**_auth(other_user), "Last-Event-ID": "bogus"}, 400, "invalid"),
    ]:
        response = open_stream(url, headers)
        assert response.status == status
        assert response.getheader("Content-Type").startswith("application/json")
        assert json.loads(response.read())["error"] == code


def test_session_auth_works_for_the_page(client, user):
    job = QuestionFactory(owner=user, status="succeeded", answer="Yes.", finished_at=timezone.now())
    client.force_login(user)
    response = client.get(f"/api/questions/{job.pk}/events", HTTP_ACCEPT="text/event-stream")
    assert response.status_code == 200
    body = b"".join(response.streaming_content).decode()
    assert "event: done" in body and '"answer":"Yes."' in body


def test_the_events_process_takes_the_pages_session_cookie(asgi_server, client, user):
    job = QuestionFactory(owner=user, status="succeeded", answer="Yes.", finished_at=timezone.now())
    client.force_login(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}"
    response = open_stream(f"{asgi_server}/api/questions/{job.pk}/events", {"Cookie": cookie})
    assert response.status == 200
    events = _events(read_events(response))
    assert [e.event for e in events] == ["status", "done"]
    assert events[-1].json()["answer"] == "Yes."
    # Without the cookie: 401, as JSON.
    assert open_stream(f"{asgi_server}/api/questions/{job.pk}/events").status == 401


def _watched_text(events: list[Event]) -> str:
    """The answer as a watcher that follows the protocol draws it: `reset` drops the text."""
    text = ""
    for event in events:
        if event.event == "reset":
            text = ""
        elif event.event == "delta":
            text += event.json()["text"]
    return text


def test_a_retry_resets_what_watchers_saw_of_the_failed_attempt(
    live_server, user, queues, fake_llm, worker_process
):
    answer = "one two three four five six"
    fake_llm.configure(answer=answer, stream_interval=0.1)
    fake_llm.enqueue({"error_after": 3})  # attempt 1: three words, then a 5xx mid-stream
    job, _ = question_create(owner=user, text="Twice?")
    response = open_stream(f"{live_server.url}/api/questions/{job.pk}/events", _auth(user))
    worker_process("--visibility-timeout=5", "--requeue-interval=0")

    events = _events(read_events(response))
    assert events[-1].event == "done", [(e.event, e.data) for e in events]
    assert events[-1].json()["answer"] == answer
    assert fake_llm.calls == 2
    # The watcher saw attempt 1's three words, then a reset, then attempt 2's answer only.
    deltas = "".join(e.json()["text"] for e in events if e.event == "delta")
    assert deltas == "one two three" + answer
    assert [e.json() for e in events if e.event == "reset"] == [{"attempt": 1}, {"attempt": 2}]
    assert _watched_text(events) == answer


def test_a_watcher_keeps_receiving_after_an_end_that_is_not_final(live_server, user):
    job = QuestionFactory(owner=user, status="running", attempts=1, started_at=timezone.now())
    # An attempt that lost its claim, as workers before this fix wrote it: `end` with "lost".
    stream_append_sync(job.pk, [("status", "running"), ("delta", "old "), ("end", "lost")])
    response = open_stream(f"{live_server.url}/api/questions/{job.pk}/events", _auth(user))
    seen: list[Event] = []
    for item in iter_events(response):
        if isinstance(item, Event):
            seen.append(item)
        if len(seen) == 3:  # the row's status, the stream's status and "old "
            break

    def next_attempt() -> None:
        stream_append_sync(job.pk, [("reset", "2"), ("status", "running"), ("delta", "new")])
        time.sleep(0.5)  # the model writing, not synchronisation
        _finish(job, "new")

    _in_background(next_attempt)
    started = time.monotonic()
    events = [*seen, *_events(read_events(response))]
    assert time.monotonic() - started < 5  # not left to the keepalive's look at the row
    assert [e.event for e in events] == [
        "status",
        "status",
        "delta",
        "reset",
        "status",
        "delta",
        "done",
    ]
    assert _watched_text(events) == "new" == events[-1].json()["answer"]
