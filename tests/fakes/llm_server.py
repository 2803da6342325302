"""A fake OpenAI Chat Completions server for tests and benchmarks (stdlib only).

It speaks enough of the OpenAI wire format for the real ``openai`` client to talk to it::

    with FakeLLM() as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="test", max_retries=0)
        fake.enqueue({"status": 429, "retry_after": 2}, {"hang": True})
        fake.configure(latency=0.2, answer="42")
        ...
        assert fake.calls == 3

Endpoints
    ``POST /v1/chat/completions``  chat completion (``stream: true`` is supported too)
    ``POST /_control/configure``   JSON with any of latency, answer, prompt_tokens,
                                   completion_tokens, always, stream_interval (``null``
                                   restores the default)
    ``POST /_control/reset``       same as :meth:`FakeLLM.reset`
    ``GET  /_control/stats``       ``{"calls", "in_flight", "max_in_flight"}``

Response items (script entries from :meth:`FakeLLM.enqueue` and ``always``) are dicts with
these optional keys:
    ``status``        HTTP status; 2xx is a normal completion, anything else an OpenAI-style
                      error body ``{"error": {"message", "type", "param", "code"}}``
    ``message``       the error body's message
    ``code``          the error body's code (e.g. ``context_length_exceeded`` with status 400)
    ``retry_after``   value of a ``Retry-After`` header (number or string)
    ``hang``          ``True``: never answer; the connection is dropped on stop(), when the
                      client goes away, or after ``HANG_TIMEOUT`` (300 s)
    ``latency``       seconds to wait before answering (replaces the global latency)
    ``disconnect``    ``True``: close the connection without answering
    ``stream_interval`` seconds between the chunks of this streamed answer (replaces the
                      configured ``stream_interval``)
    ``keepalive``     seconds of SSE comment lines only (``: keepalive``, as some
                      OpenAI-compatible proxies send while a model is busy), one every
                      ``keepalive_interval`` (default 0.25) seconds, before the answer's text
                      or after its first ``keepalive_after`` pieces (default 0); the rest of the
                      answer follows (streamed answers only)
    ``error_after``   stream this many pieces of the answer, then an error event
                      (``data: {"error": {"type": "server_error", ...}}``, a 5xx mid-stream:
                      the status line already said 200) and end the stream
    ``cut_after``     streamed answers only: send this many pieces of the answer (word by word)
                      and its first chunks, then drop the connection mid-stream (no usage sent)

``stream_interval`` (configure) is the seconds between the chunks of a streamed answer
(``stream: true``): the answer goes out word by word over time, as a real model writes it;
0 (default) sends it in one chunk. A client that goes away mid-stream ends it (counted in
``cut_streams``).

``by_model`` (configure) maps a model name to an ``always`` item for that model alone (e.g.
the primary answers 500, a fallback answers): a call for such a model uses it instead of
``always``. ``calls_by_model`` counts the calls received per model.

Precedence per call: next script item, else ``responder(body)`` (a constructor argument: a
function that picks an item per call, e.g. at random; ``None`` passes), else
``by_model[model]``, else ``always``, else the default success.

``call_log`` keeps one entry per call: ``received_at``, ``client_port``, ``text`` (the last user
message),
``status`` (the HTTP status sent), ``content_at`` (when the first content went out),
``ended_at`` and ``outcome`` (``answered``, ``error``, or ``cut``: the client went away, or the
server dropped or stopped first); times are ``time.monotonic()``.

Run in the foreground with ``python -m tests.fakes.llm_server --port 8765 [--latency 0.5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import json
import select
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final

__all__ = ["HANG_TIMEOUT", "FakeLLM", "main"]

HANG_TIMEOUT: Final = 300.0
"""Seconds a ``{"hang": true}`` request is held before the connection is dropped."""

MAX_BODY_BYTES: Final = 64 * 1024 * 1024

# How often a waiting handler (latency / hang) checks whether its client went away.
_DISCONNECT_CHECK_INTERVAL: Final = 0.25
_KEEPALIVE_INTERVAL: Final = 0.25
_SERVE_POLL_INTERVAL: Final = 0.05

_ITEM_KEYS: Final = frozenset(
    {
        "status",
        "retry_after",
        "hang",
        "latency",
        "disconnect",
        "message",
        "stream_interval",
        "keepalive",
        "keepalive_interval",
        "keepalive_after",
        "error_after",
        "cut_after",
        "code",
    }
)
_CONFIG_KEYS: Final = frozenset(
    {
        "latency",
        "answer",
        "prompt_tokens",
        "completion_tokens",
        "always",
        "stream_interval",
        "by_model",
    }
)

# status -> (error type, error code) where OpenAI's differ from the defaults below
_ERRORS: Final[dict[int, tuple[str, str | None]]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    429: ("requests", "rate_limit_exceeded"),
}


class _Unset(enum.Enum):
    TOKEN = 0


_UNSET: Final = _Unset.TOKEN


class _BadRequest(Exception):
    """Raised while reading a request that must be answered with 400 and a closed connection."""


# --------------------------------------------------------------------------- validation


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _check_tokens(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def _validate_item(item: object) -> dict[str, Any]:
    """Check a response item and return a copy of it (raises ValueError)."""
    if not isinstance(item, Mapping):
        raise ValueError(f"response item must be a mapping, got {item!r}")
    unknown = set(item) - _ITEM_KEYS
    if unknown:
        raise ValueError(
            f"unknown response item key(s) {sorted(unknown)}; allowed: {sorted(_ITEM_KEYS)}"
        )
    out: dict[str, Any] = dict(item)
    if "status" in out:
        status = out["status"]
        if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
            raise ValueError(f"status must be an int in 200..599, got {status!r}")
    if "retry_after" in out and not (
        _is_number(out["retry_after"]) or isinstance(out["retry_after"], str)
    ):
        raise ValueError(f"retry_after must be a number or string, got {out['retry_after']!r}")
    for flag in ("hang", "disconnect"):
        if flag in out and not isinstance(out[flag], bool):
            raise ValueError(f"{flag} must be a bool, got {out[flag]!r}")
    for key in ("latency", "stream_interval", "keepalive", "keepalive_interval"):
        if key in out:
            out[key] = _check_seconds(key, out[key])
    for name in ("keepalive_after", "error_after"):
        if name in out:
            out[name] = _check_tokens(name, out[name])
    if "code" in out and not isinstance(out["code"], str):
        raise ValueError(f"code must be a string, got {out['code']!r}")
    if "message" in out and not isinstance(out["message"], str):
        raise ValueError(f"message must be a string, got {out['message']!r}")
    return out


# --------------------------------------------------------------------------- helpers


def _text_of(content: object) -> str:
    return content if isinstance(content, str) else ""


def _messages(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return []
    return [m for m in messages if isinstance(m, dict)]


def _count_words(text: str) -> int:
    return len(text.split())


def _format_retry_after(value: float | str) -> str:
    if isinstance(value, str):
        return value
    return f"{value:g}"


@dataclass(frozen=True, slots=True)
class _Plan:
    """What to do for one chat completion call (snapshot taken at arrival)."""

    item: dict[str, Any] | None
    latency: float
    answer: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    stream_interval: float = 0.0
    log: dict[str, Any] | None = None


# --------------------------------------------------------------------------- server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], fake: FakeLLM) -> None:
        self.fake = fake
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), which can stall on a reverse DNS
        # lookup; the name is never used here.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Dropped / reset connections are business as usual for this server (client timeouts,
        # stop() while requests are pending); report anything else.
        if isinstance(sys.exception(), OSError):
            return
        super().handle_error(request, client_address)


def _is_content(event: bytes) -> bool:
    """A streamed event that carries the answer (not a keepalive comment, not an error)."""
    return event.startswith(b"data:") and b'"error"' not in event


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeLLM/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    server: _Server

    # ------------------------------------------------------------------ plumbing

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet."""

    def setup(self) -> None:
        super().setup()
        self.server.fake._register_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._unregister_connection(self.connection)

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def _read_exactly(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) != n:
            raise ConnectionAbortedError("client closed the connection mid-body")
        return data

    def _read_body(self) -> bytes:
        raw_length = self.headers.get("Content-Length")
        if not raw_length:
            return b""
        try:
            length = int(raw_length)
        except ValueError as exc:
            raise _BadRequest("invalid Content-Length") from exc
        if length < 0 or length > MAX_BODY_BYTES:
            raise _BadRequest("invalid or too large Content-Length")
        return self._read_exactly(length)

    def _send(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Write the whole response (status line, headers, body) in one send."""
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        lines = [
            f"HTTP/1.1 {status} {reason}",
            f"Server: {self.server_version}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            f"x-request-id: req_{uuid.uuid4().hex}",
        ]
        if headers:
            lines.extend(f"{name}: {value}" for name, value in headers.items())
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + body)

    def _send_json(
        self, status: int, payload: object, *, headers: Mapping[str, str] | None = None
    ) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _send_error(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        error = {"message": message, "type": type_, "param": None, "code": code}
        self._send_json(status, {"error": error}, headers=headers)

    # ------------------------------------------------------------------ routing

    def _dispatch(self) -> None:
        try:
            raw = self._read_body()
        except _BadRequest as exc:
            self.close_connection = True
            self._send_error(400, str(exc))
            return
        method = self.command
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        fake = self.server.fake

        if path == "/v1/chat/completions":
            if method != "POST":
                self._send_error(405, f"Method {method} not allowed on {path}.")
                return
            self._chat_completion(raw)
            return
        if path.startswith("/_control/"):
            self._control(method, path.removeprefix("/_control/"), raw, fake)
            return
        self._send_error(404, f"Unknown request URL: {method} {path}.", code="unknown_url")

    def _control(self, method: str, action: str, raw: bytes, fake: FakeLLM) -> None:
        routes = {("GET", "stats"), ("POST", "configure"), ("POST", "reset")}
        if (method, action) not in routes:
            self._send_error(404, f"Unknown control endpoint: {method} /_control/{action}.")
            return
        if method == "GET":
            self._send_json(200, fake.stats())
            return
        try:
            data = json.loads(raw) if raw.strip() else {}
        except ValueError:
            self._send_error(400, "Control request body is not valid JSON.")
            return
        try:
            if not isinstance(data, dict):
                raise ValueError("control request body must be a JSON object")
            if action == "configure":
                fake.configure_from_mapping(data)
            else:
                fake.reset()
        except ValueError as exc:
            self._send_error(400, str(exc))
            return
        self._send_json(200, {"ok": True, **fake.stats()})

    # ------------------------------------------------------------------ chat completions

    def _chat_completion(self, raw: bytes) -> None:
        fake = self.server.fake
        received_at = time.monotonic()
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        problem = None
        if not isinstance(body, dict):
            problem = "We could not parse the JSON body of your request."
        elif not isinstance(body.get("model"), str):
            problem = "you must provide a model parameter"
        elif not isinstance(body.get("messages"), list) or not body["messages"]:
            problem = "'messages' must be a non-empty array"

        record = dict(body) if isinstance(body, dict) else {"_malformed": True}
        plan = fake._arrive(record, received_at, consume=problem is None)
        fake._note(plan.log, client_port=self.client_address[1])
        try:
            if problem is not None or not isinstance(body, dict):
                self._send_error(400, problem or "invalid body")
                return
            self._respond(body, plan)
        finally:
            fake._depart(plan.log)

    def _drop(self) -> None:
        """End the exchange without writing a response."""
        self.close_connection = True

    def _respond(self, body: dict[str, Any], plan: _Plan) -> None:
        item = plan.item or {}
        fake = self.server.fake
        if item.get("hang"):
            self._wait(HANG_TIMEOUT)
            self._drop()
            return
        delay = item.get("latency", plan.latency)
        if delay > 0 and not self._wait(delay):
            self._drop()
            return
        if item.get("disconnect"):
            self._drop()
            return

        headers: dict[str, str] = {}
        if "retry_after" in item:
            headers["Retry-After"] = _format_retry_after(item["retry_after"])
        status = int(item.get("status", 200))
        if not 200 <= status <= 299:
            default_type, default_code = _ERRORS.get(
                status, ("server_error" if status >= 500 else "invalid_request_error", None)
            )
            try:
                phrase = HTTPStatus(status).phrase
            except ValueError:
                phrase = f"Error {status}"
            default_message = f"{phrase} (scripted by FakeLLM)."
            fake._note(plan.log, status=status, outcome="error")
            self._send_error(
                status,
                item.get("message", default_message),
                type_=default_type,
                code=item.get("code", default_code),
                headers=headers,
            )
            return

        answer = self._answer(body, plan)
        prompt_tokens = plan.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = sum(_count_words(_text_of(m.get("content"))) for m in _messages(body))
        completion_tokens = plan.completion_tokens
        if completion_tokens is None:
            completion_tokens = _count_words(answer)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = body["model"]

        fake._note(plan.log, status=status)
        interval = item.get("stream_interval", plan.stream_interval)
        if body.get("stream") is True:
            stream_options = body.get("stream_options")
            include_usage = isinstance(stream_options, dict) and bool(
                stream_options.get("include_usage")
            )
            paced = interval > 0 or bool({"keepalive", "error_after", "cut_after"} & set(item))
            events = self._stream_events(
                completion_id,
                created,
                model,
                answer,
                usage if include_usage else None,
                chunked=paced,
            )
            if not paced:
                fake._note(plan.log, content_at=time.monotonic(), outcome="answered")
                self._send(
                    status,
                    b"".join(events),
                    content_type="text/event-stream; charset=utf-8",
                    headers=headers,
                )
                return
            self._send_stream(
                status,
                self._schedule(events, interval, item),
                plan.log,
                headers=headers,
                cut="cut_after" in item,
            )
            return

        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_fakellm",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": answer, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage,
        }
        fake._note(plan.log, content_at=time.monotonic(), outcome="answered")
        self._send_json(status, completion, headers=headers)

    @staticmethod
    def _answer(body: dict[str, Any], plan: _Plan) -> str:
        if plan.answer is not None:
            return plan.answer
        last_user = ""
        for message in reversed(_messages(body)):
            if message.get("role") == "user":
                last_user = _text_of(message.get("content"))
                break
        return f"Answer to: {last_user}"

    @staticmethod
    def _schedule(
        events: list[bytes], interval: float, item: Mapping[str, Any]
    ) -> list[tuple[float, bytes]]:
        """The stream as (seconds to wait before it, event): `interval` apart, with the item's
        keepalive comments or mid-stream error put in. events[0] is the role chunk, then one
        event per piece of the answer."""
        steps = [(0.0 if index == 0 else interval, event) for index, event in enumerate(events)]
        if "cut_after" in item:  # the role chunk and `cut_after` pieces, then the drop
            steps = steps[: 1 + item["cut_after"]]
        if "error_after" in item:
            error = {
                "message": item.get("message", "The server had an error (scripted by FakeLLM)."),
                "type": "server_error",
                "param": None,
                "code": None,
            }
            steps = steps[: 1 + item["error_after"]]
            steps.append((interval, f"data: {json.dumps({'error': error})}\n\n".encode()))
        if "keepalive" in item:
            every = item.get("keepalive_interval", _KEEPALIVE_INTERVAL) or _KEEPALIVE_INTERVAL
            comments = [(every, b": keepalive\n\n")] * int(item["keepalive"] / every)
            at = 1 + item.get("keepalive_after", 0)
            steps[at:at] = comments
        return steps

    def _send_stream(
        self,
        status: int,
        steps: list[tuple[float, bytes]],
        log: dict[str, Any] | None,
        *,
        headers: Mapping[str, str],
        cut: bool = False,
    ) -> None:
        """Send a streamed answer event by event, each after its wait (chunked encoding); stop
        as soon as the client goes away. `cut`: drop the connection after the last event
        instead of ending the stream."""
        fake = self.server.fake
        lines = [
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
            f"Server: {self.server_version}",
            "Content-Type: text/event-stream; charset=utf-8",
            "Transfer-Encoding: chunked",
            f"x-request-id: req_{uuid.uuid4().hex}",
            *(f"{name}: {value}" for name, value in headers.items()),
            # It closes the connection after the stream, and says so, as servers do: a client
            # would otherwise take the connection back to its pool and may send the next
            # request on it before it sees the close.
            "Connection: close",
        ]
        self.close_connection = True
        try:
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            for index, (wait, event) in enumerate(steps):
                if wait > 0 and not self._wait(wait):
                    fake._cut_stream(log)
                    return
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
                if index and _is_content(event) and log is not None and "content_at" not in log:
                    fake._note(log, content_at=time.monotonic())
            if cut:
                fake._cut_stream(log)
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(b"0\r\n\r\n")
            fake._note(log, outcome="answered")
        except OSError:
            fake._cut_stream(log)

    @staticmethod
    def _stream_events(
        completion_id: str,
        created: int,
        model: str,
        answer: str,
        usage: dict[str, int] | None,
        *,
        chunked: bool,
    ) -> list[bytes]:
        def chunk(delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
            return {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fakellm",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
                ],
            }

        pieces = [answer]
        if chunked:
            words = answer.split(" ")
            pieces = [word if i == 0 else f" {word}" for i, word in enumerate(words)]
        events: list[dict[str, Any]] = [
            chunk({"role": "assistant", "content": ""}, None),
            *(chunk({"content": piece}, None) for piece in pieces),
            chunk({}, "stop"),
        ]
        if usage is not None:
            final = chunk({}, None)
            final["choices"] = []
            final["usage"] = usage
            events.append(final)
        return [f"data: {json.dumps(event)}\n\n".encode() for event in events] + [
            b"data: [DONE]\n\n"
        ]

    # ------------------------------------------------------------------ waiting

    def _client_gone(self) -> bool:
        """True when the client closed its end (only checked while we are waiting)."""
        sock = self.connection
        try:
            poller = select.poll()
            poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
            if not poller.poll(0):
                return False
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _wait(self, seconds: float) -> bool:
        """Wait ``seconds``; False if stop() was called or the client disconnected first."""
        stopping = self.server.fake._stopping
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if stopping.wait(min(remaining, _DISCONNECT_CHECK_INTERVAL)):
                return False
            if deadline - time.monotonic() > 0 and self._client_gone():
                return False
        return not stopping.is_set()


# --------------------------------------------------------------------------- public API


class FakeLLM:
    """In-process fake of the OpenAI Chat Completions API (see the module docstring).

    The socket is bound in the constructor (``port=0`` picks a free port), so ``base_url`` is
    known before :meth:`start`. All methods are thread-safe.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        latency: float = 0.0,
        responder: Callable[[dict[str, Any]], Mapping[str, Any] | None] | None = None,
    ) -> None:
        self._default_latency = _check_seconds("latency", latency)
        self._responder = responder
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._connections_opened = 0
        # configuration
        self._latency = self._default_latency
        self._answer: str | None = None
        self._prompt_tokens: int | None = None
        self._completion_tokens: int | None = None
        self._always: dict[str, Any] | None = None
        self._by_model: dict[str, dict[str, Any]] = {}
        self._stream_interval = 0.0
        self._script: deque[dict[str, Any]] = deque()
        # counters
        self._calls = 0
        self._calls_by_model: dict[str, int] = {}
        self._cut_streams = 0
        self._requests: list[dict[str, Any]] = []
        self._call_log: list[dict[str, Any]] = []
        self._in_flight = 0
        self._max_in_flight = 0
        self._server = _Server((host, port), self)

    # ------------------------------------------------------------------ lifecycle

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Root URL (``http://127.0.0.1:PORT``), e.g. for the ``/_control/...`` endpoints."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``base_url`` to ``openai.OpenAI``."""
        return f"{self.url}/v1"

    def start(self) -> FakeLLM:
        """Serve in a daemon thread (idempotent). Returns self."""
        with self._cond:
            if self._stopped:
                raise RuntimeError("FakeLLM cannot be restarted after stop()")
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._server.serve_forever,
                    kwargs={"poll_interval": _SERVE_POLL_INTERVAL},
                    name=f"FakeLLM:{self.port}",
                    daemon=True,
                )
                self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent). Pending latency/hang waits wake up and drop their
        connections; idle keep-alive connections are shut down."""
        with self._cond:
            if self._stopped:
                return
            self._stopped = True
            thread = self._thread
        self._stopping.set()
        if thread is not None:
            self._server.shutdown()
            thread.join(timeout=5.0)
        self._server.server_close()
        with self._cond:
            for sock in self._connections:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._cond.wait_for(lambda: not self._connections, timeout=1.0)

    def __enter__(self) -> FakeLLM:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _register_connection(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections.add(sock)
            self._connections_opened += 1
            if self._stopping.is_set():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _unregister_connection(self, sock: socket.socket) -> None:
        with self._cond:
            self._connections.discard(sock)
            self._cond.notify_all()

    # ------------------------------------------------------------------ configuration

    def configure(
        self,
        *,
        latency: float | None | _Unset = _UNSET,
        answer: str | None | _Unset = _UNSET,
        prompt_tokens: int | None | _Unset = _UNSET,
        completion_tokens: int | None | _Unset = _UNSET,
        always: Mapping[str, Any] | None | _Unset = _UNSET,
        stream_interval: float | None | _Unset = _UNSET,
        by_model: Mapping[str, Mapping[str, Any]] | None | _Unset = _UNSET,
    ) -> None:
        """Change the default behaviour; only the given keys change, ``None`` restores the
        default (latency from the constructor, generated answer, word-count tokens, no
        ``always`` item)."""
        new_latency = (
            latency
            if isinstance(latency, _Unset)
            else self._default_latency
            if latency is None
            else _check_seconds("latency", latency)
        )
        if not isinstance(answer, _Unset | str) and answer is not None:
            raise ValueError(f"answer must be a string or None, got {answer!r}")
        for name, value in (
            ("prompt_tokens", prompt_tokens),
            ("completion_tokens", completion_tokens),
        ):
            if not isinstance(value, _Unset) and value is not None:
                _check_tokens(name, value)
        new_always = (
            always if isinstance(always, _Unset) or always is None else _validate_item(always)
        )
        new_by_model: dict[str, dict[str, Any]] | _Unset = _UNSET
        if by_model is None:
            new_by_model = {}
        elif not isinstance(by_model, _Unset):
            if not isinstance(by_model, Mapping):
                raise ValueError(f"by_model must be a mapping, got {by_model!r}")
            new_by_model = {str(name): _validate_item(item) for name, item in by_model.items()}
        with self._cond:
            if not isinstance(new_latency, _Unset):
                self._latency = new_latency
            if not isinstance(answer, _Unset):
                self._answer = answer
            if not isinstance(prompt_tokens, _Unset):
                self._prompt_tokens = prompt_tokens
            if not isinstance(completion_tokens, _Unset):
                self._completion_tokens = completion_tokens
            if not isinstance(new_always, _Unset):
                self._always = new_always
            if not isinstance(new_by_model, _Unset):
                self._by_model = new_by_model
            if not isinstance(stream_interval, _Unset):
                self._stream_interval = (
                    0.0
                    if stream_interval is None
                    else _check_seconds("stream_interval", stream_interval)
                )

    def configure_from_mapping(self, data: Mapping[str, Any]) -> None:
        """:meth:`configure` from a JSON-like mapping (what ``/_control/configure`` uses)."""
        unknown = set(data) - _CONFIG_KEYS
        if unknown:
            raise ValueError(
                f"unknown configure key(s) {sorted(unknown)}; allowed: {sorted(_CONFIG_KEYS)}"
            )
        self.configure(**data)

    def enqueue(self, *items: Mapping[str, Any]) -> None:
        """Append one-shot response items to the script (consumed one per call, FIFO)."""
        validated = [_validate_item(item) for item in items]
        with self._cond:
            self._script.extend(validated)

    def reset(self) -> None:
        """Back to the constructor's configuration; clears the script, ``always``, overrides,
        ``calls``, ``requests`` and ``max_in_flight`` (requests still in flight are kept)."""
        with self._cond:
            self._latency = self._default_latency
            self._answer = None
            self._prompt_tokens = None
            self._completion_tokens = None
            self._always = None
            self._by_model = {}
            self._stream_interval = 0.0
            self._script.clear()
            self._calls = 0
            self._calls_by_model = {}
            self._cut_streams = 0
            self._connections_opened = 0
            self._requests = []
            self._call_log = []
            self._max_in_flight = self._in_flight
            self._cond.notify_all()

    # ------------------------------------------------------------------ observation

    @property
    def calls(self) -> int:
        """Chat completion requests received (counted on arrival, before any latency)."""
        with self._cond:
            return self._calls

    @property
    def calls_by_model(self) -> dict[str, int]:
        """Chat completion requests received, per requested model."""
        with self._cond:
            return dict(self._calls_by_model)

    @property
    def cut_streams(self) -> int:
        """Streamed answers the client stopped reading before the end (it went away)."""
        with self._cond:
            return self._cut_streams

    @property
    def connections_opened(self) -> int:
        """TCP connections clients opened to it (kept-alive ones are counted once)."""
        with self._cond:
            return self._connections_opened

    @property
    def open_connections(self) -> int:
        """TCP connections open now (idle kept-alive ones included)."""
        with self._cond:
            return len(self._connections)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Copies of the received chat completion bodies, each with ``_received_at``
        (``time.monotonic()``); a malformed body is recorded as ``{"_malformed": True}``."""
        with self._cond:
            return [dict(body) for body in self._requests]

    @property
    def call_log(self) -> list[dict[str, Any]]:
        """Copies of the per-call log (see the module docstring)."""
        with self._cond:
            return [dict(entry) for entry in self._call_log]

    @property
    def in_flight(self) -> int:
        with self._cond:
            return self._in_flight

    @property
    def max_in_flight(self) -> int:
        with self._cond:
            return self._max_in_flight

    def stats(self) -> dict[str, int]:
        with self._cond:
            return {
                "calls": self._calls,
                "in_flight": self._in_flight,
                "max_in_flight": self._max_in_flight,
            }

    def wait_for_calls(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` calls arrived; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._calls >= n, timeout=timeout)

    def wait_for_in_flight(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` chat completions are being handled at once."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight >= n, timeout=timeout)

    def wait_for_idle(self, timeout: float = 5.0) -> bool:
        """Block until no chat completion is being handled; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout=timeout)

    # ------------------------------------------------------------------ handler hooks

    def _arrive(self, record: dict[str, Any], received_at: float, *, consume: bool) -> _Plan:
        record["_received_at"] = received_at
        model = record.get("model")
        with self._cond:
            self._calls += 1
            if isinstance(model, str):
                self._calls_by_model[model] = self._calls_by_model.get(model, 0) + 1
            self._requests.append(record)
            users = [m for m in _messages(record) if m.get("role") == "user"]
            text = _text_of(users[-1].get("content")) if users else ""
            log: dict[str, Any] = {"received_at": received_at, "text": text}
            self._call_log.append(log)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            item = None
            if consume:
                item = self._script.popleft() if self._script else None
                if item is None and self._responder is not None:
                    chosen = self._responder(dict(record))
                    item = None if chosen is None else _validate_item(chosen)
                if item is None and isinstance(model, str) and model in self._by_model:
                    item = self._by_model[model]
                if item is None:
                    item = self._always
            self._cond.notify_all()
            return _Plan(
                item=item,
                latency=self._latency,
                answer=self._answer,
                prompt_tokens=self._prompt_tokens,
                completion_tokens=self._completion_tokens,
                stream_interval=self._stream_interval,
                log=log,
            )

    def _note(self, log: dict[str, Any] | None, **fields: Any) -> None:
        """Annotate a call's `call_log` entry (under the lock: `call_log` copies them)."""
        if log is not None:
            with self._cond:
                log.update(fields)

    def _cut_stream(self, log: dict[str, Any] | None = None) -> None:
        with self._cond:
            self._cut_streams += 1
            if log is not None:
                log["outcome"] = "cut"
            self._cond.notify_all()

    def _depart(self, log: dict[str, Any] | None) -> None:
        with self._cond:
            self._in_flight -= 1
            if log is not None:
                log["ended_at"] = time.monotonic()
                log.setdefault("outcome", "cut")
            self._cond.notify_all()


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakes.llm_server",
        description="Fake OpenAI Chat Completions server (foreground; stop with Ctrl-C/SIGTERM).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    args = parser.parse_args(argv)

    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT)
    previous = {sig: signal.signal(sig, on_signal) for sig in signals}
    try:
        with FakeLLM(args.host, args.port, latency=args.latency) as fake:
            print(f"fake LLM listening on {fake.base_url}", flush=True)
            stop_requested.wait()  # signal handlers run in this (main) thread
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
