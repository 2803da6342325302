"""`GET /api/questions/{id}/events`: a job as Server-Sent Events.

Events, in order: `status` (the row's status when the watcher connects, without an id so that it
never moves the resume point), then the job's answer stream (questions.live.streams) as `reset`
(a new attempt: drop the text so far), `status` and `delta` events whose id is the stream entry
id, then one final event named after the final status (`succeeded` is sent as `done`, `failed`,
`cancelled`) whose data is the stored job as the API shows it, after which the stream closes. A
watcher that reconnects with `Last-Event-ID` (or `?last_event_id=`) gets what came after that
entry; a finished job gets its final event at once. `: keepalive` comments keep idle proxies
from closing the connection. The event loop's one shared check of the rows
(questions.api.events_poll: one query a second for every watched job) tells a stream when its job
is finished, so a job whose `end` never reached the stream, or whose stream Redis cannot serve,
still ends its watchers' streams; Redis is tried again now and then.

Streams are bounded per user and per client IP (questions.live.slots): the view takes a slot
before the stream starts (429 past the caps) and the stream holds it until it ends.

One async generator serves both servers: under ASGI (uvicorn, the `events` process) Django
iterates it on the event loop, so a watcher costs a coroutine, not a thread; under WSGI
(gunicorn alone) it is driven by a private event loop in the request's thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import StreamingHttpResponse
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from redis.exceptions import RedisError
from rest_framework.exceptions import NotFound, Throttled, ValidationError
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from questions.api.events_poll import job_poll
from questions.api.schema import RETRY_AFTER, SERVER_SENT_EVENT, WWW_AUTHENTICATE, errors
from questions.api.serializers import QuestionOutputSerializer
from questions.live.hub import stream_hub
from questions.live.slots import Refused, Scope, Slot, slot_acquire
from questions.live.streams import FINAL_STATUSES, Entry, close_async_redis
from questions.metrics import EVENTS_WATCHERS
from questions.models import Question
from questions.selectors import question_get
from questions.web.client_ip import client_ip
from questions.worker.dbpool import run_db

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

logger = logging.getLogger(__name__)

FINAL_EVENT_NAMES: dict[str, str] = {
    Question.Status.SUCCEEDED: "done",
    Question.Status.FAILED: "failed",
    Question.Status.CANCELLED: "cancelled",
}
# The id of a final event that no `end` entry carried (the job ended before the watcher came).
FINAL_EVENT_ID = "final"
_ENTRY_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# How long Redis is left alone after a failure before the stream is tried again.
_REDIS_RETRY_SECONDS = 5.0


def parse_last_event_id(value: str | None) -> str:
    """The stream id to read after: "0" (from the start) unless the client resumes."""
    if value is None or value in ("", "0", FINAL_EVENT_ID):
        return "0"
    value = value.strip()
    if not _ENTRY_ID.match(value):
        raise ValidationError(
            {"Last-Event-ID": ["Must be an event id this endpoint sent (like 1712345678901-0)."]}
        )
    return value


def sse(event: str | None, data: str, *, event_id: str | None = None) -> bytes:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.extend(f"data: {line}" for line in data.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


KEEPALIVE = b": keepalive\n\n"


class JobEvents:
    """The events of one job for one watcher (already authenticated and allowed to see it)."""

    def __init__(
        self,
        *,
        question: Question,
        user: User | AnonymousUser,
        request: Request,
        after: str,
        slot: Slot,
    ) -> None:
        self.question = question
        self.slot = slot
        self.user = user
        self.request = request
        self.after = after

    async def _load(self) -> Question | None:
        # On the process's few database threads, each keeping its connection (no connection
        # opened and closed per load, none held by a watcher between loads).
        return await run_db(question_get, question_id=self.question.pk, user=self.user)

    def _worker_still_stopping(self, question: Question) -> bool:
        if question.status != Question.Status.CANCELLED or question.started_at is None:
            return False
        if question.finished_at is None:
            return False
        waited = (timezone.now() - question.finished_at).total_seconds()
        return waited < settings.QUESTIONS_EVENTS_CANCEL_GRACE

    async def _final_event(self, event_id: str) -> bytes | None:
        question = await self._load()
        if question is None or not question.is_finished:
            return None
        return self._final(question, event_id)

    def _final(self, question: Question, event_id: str) -> bytes:
        data = QuestionOutputSerializer(question, context={"request": self.request}).data
        return sse(
            FINAL_EVENT_NAMES.get(question.status, question.status),
            json.dumps(data, separators=(",", ":")),
            event_id=event_id,
        )

    def _entry(self, entry: Entry) -> bytes:
        if entry.kind == "delta":
            data = json.dumps({"text": entry.value}, separators=(",", ":"))
        elif entry.kind == "reset":
            # A new attempt: the watcher drops the text so far (an earlier attempt's).
            attempt = int(entry.value) if entry.value.isdigit() else None
            data = json.dumps({"attempt": attempt}, separators=(",", ":"))
        else:
            data = json.dumps({"status": entry.value}, separators=(",", ":"))
        return sse(entry.kind, data, event_id=entry.id)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        EVENTS_WATCHERS.inc()
        try:
            async with self.slot.hold():
                async for chunk in self._events():
                    yield chunk
        finally:
            EVENTS_WATCHERS.dec()

    async def _events(self) -> AsyncIterator[bytes]:
        keepalive = settings.QUESTIONS_EVENTS_KEEPALIVE
        poll = settings.QUESTIONS_EVENTS_POLL_INTERVAL
        check_seconds = min(keepalive, settings.QUESTIONS_EVENTS_CHECK_INTERVAL)
        yield f"retry: {settings.QUESTIONS_EVENTS_RETRY_MS}\n\n".encode()
        question = self.question
        yield sse("status", json.dumps({"status": question.status}))
        if question.is_finished:
            yield self._final(question, FINAL_EVENT_ID)
            return
        async with stream_hub().watch(question.pk) as watch, job_poll().follow(question.pk) as row:
            after = self.after
            redis_down_until = 0.0
            last_sent = time.monotonic()
            while True:
                entries: list[Entry] | None = None
                if time.monotonic() >= redis_down_until:
                    try:
                        entries = await watch.read(after=after, timeout=check_seconds)
                    except (RedisError, OSError) as exc:
                        redis_down_until = time.monotonic() + _REDIS_RETRY_SECONDS
                        logger.warning(
                            "answer stream unavailable; polling the job",
                            extra={"job_id": str(question.pk), "error": type(exc).__name__},
                        )
                if entries:
                    for entry in entries:
                        if entry.kind == "end" and entry.value not in FINAL_STATUSES:
                            # Not a final outcome (an older worker's "lost"): the job goes on.
                            after = entry.id
                            continue
                        if entry.kind == "end":
                            # The row is stored before `end` is written: it is final now.
                            # Loaded and rendered once for every watcher of the job (per user:
                            # visibility, and the URL in it, are theirs).
                            final = await watch.shared(
                                f"final:{self.user.pk}:{self.request.get_host()}:{entry.id}",
                                partial(self._final_event, entry.id),
                            )
                            if final is not None:
                                yield final
                                return
                            after = entry.id
                            continue
                        yield self._entry(entry)
                        after = entry.id
                    last_sent = time.monotonic()
                    continue
                # Nothing new. Is the job finished all the same (its `end` lost, a worker that
                # does not stream, Redis down)? The process's one shared check of the rows says.
                if entries is None:
                    await row.wait(poll)
                if row.gone:
                    return  # deleted
                if row.finished:
                    # One load for all of this user's watchers of the job.
                    current = await watch.shared(f"row:{self.user.pk}", self._load)
                    if current is None:
                        return  # no longer visible to this user
                    if current.is_finished:
                        if self._worker_still_stopping(current) and entries is not None:
                            # Stopped while running: its worker is storing the partial answer
                            # and will write `end`; keep reading the stream a little longer.
                            continue
                        yield self._final(current, FINAL_EVENT_ID)
                        return
                if time.monotonic() - last_sent >= keepalive:
                    yield KEEPALIVE
                    last_sent = time.monotonic()

    def __iter__(self) -> Iterator[bytes]:
        """For WSGI: drive the async generator on a private event loop in this thread."""
        runner = asyncio.Runner()
        events = aiter(self)
        try:
            while True:
                try:
                    chunk = runner.run(_next(events))
                except StopAsyncIteration:
                    return
                yield chunk
        finally:
            runner.run(_close(events))
            runner.close()


async def _next(events: AsyncIterator[bytes]) -> bytes:
    return await anext(events)


async def _close(events: Any) -> None:
    await events.aclose()
    await close_async_redis()


_LAST_EVENT_ID = OpenApiParameter(
    name="Last-Event-ID",
    location=OpenApiParameter.HEADER,
    type={"type": "string", "pattern": r"^(\d{1,20}-\d{1,20}|0|final)$"},
    required=False,
    description="Resume after this event (EventSource sends it when it reconnects).",
)
_LAST_EVENT_ID_QUERY = OpenApiParameter(
    name="last_event_id",
    location=OpenApiParameter.QUERY,
    type={"type": "string", "pattern": r"^(\d{1,20}-\d{1,20}|0|final)$"},
    required=False,
    description="The same as the Last-Event-ID header, for clients that cannot set headers.",
)


class TooManyStreams(Throttled):
    default_code = "too_many_streams"


def _stream_slot(request: Request) -> Slot:
    """A slot in the caps of this user and of this client IP (README: Limits on event
    streams), or 429."""
    scopes = [Scope(f"user:{request.user.pk}", settings.QUESTIONS_SSE_MAX_PER_USER)]
    address = client_ip(request._request)
    if address:
        scopes.append(Scope(f"ip:{address}", settings.QUESTIONS_SSE_MAX_PER_IP))
    taken = slot_acquire(scopes)
    if isinstance(taken, Refused):
        whose = "for this user" if taken.scope is scopes[0] else "from this address"
        raise TooManyStreams(
            wait=taken.retry_after,
            detail=f"Too many open event streams {whose} (at most {taken.scope.limit}): "
            "close one, or try again later.",
        )
    return taken


class QuestionEventsApi(APIView):
    """The job as Server-Sent Events: `status`, `delta`, then `done` / `failed` / `cancelled`."""

    def perform_content_negotiation(
        self, request: Request, force: bool = False
    ) -> tuple[BaseRenderer, str]:
        # EventSource asks for text/event-stream; the stream is built by hand, and any error
        # before it starts is JSON, whatever the client accepts.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        operation_id="questions_events",
        request=None,
        parameters=[_LAST_EVENT_ID, _LAST_EVENT_ID_QUERY, WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            # Open API 3.0 has no word for a stream's items: the schema is that of each event
            # (as Open API 3.2's itemSchema of text/event-stream has it).
            (200, "text/event-stream"): OpenApiResponse(
                response=SERVER_SENT_EVENT,
                description=(
                    "Server-Sent Events until the job is finished; each event as described, "
                    "with `: keepalive` comments between them."
                ),
            ),
            # Errors come before the stream starts, as JSON, whatever the client accepts; a 429
            # is a cap on open streams (per user or per client IP), with `retry_after`.
            **{
                (status, "application/json"): response
                for status, response in errors(400, 401, 404, 429).items()
            },
        },
    )
    def get(self, request: Request, pk: uuid.UUID) -> StreamingHttpResponse:
        after = parse_last_event_id(
            request.headers.get("Last-Event-ID") or request.query_params.get("last_event_id")
        )
        question = question_get(question_id=pk, user=request.user)
        if question is None:
            raise NotFound("No question with this id.")
        # Taken last: nothing below raises, and the stream gives the slot back when it ends.
        slot = _stream_slot(request)
        events = JobEvents(
            question=question, user=request.user, request=request, after=after, slot=slot
        )
        if isinstance(request._request, ASGIRequest):
            if SyncToAsync.thread_sensitive_context.get(None) is not None:
                # Django's own ASGI handler: this request's thread ends with the stream, not
                # with this view; let its database connection go now rather than hold one per
                # watcher (config.asgi shares one thread, and its connection, instead).
                connection.close()
            response = StreamingHttpResponse(aiter(events), content_type="text/event-stream")
        else:
            response = StreamingHttpResponse(iter(events), content_type="text/event-stream")
        response["Cache-Control"] = "no-store"
        # nginx: pass each event on at once, whatever the location's buffering.
        response["X-Accel-Buffering"] = "no"
        return response
