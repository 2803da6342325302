"""An asynchronous OpenAI-wire fake for the bench: one event loop, no thread per request, so
hundreds of slow calls in flight cost it almost nothing (tests/fakes/llm_server.py has a thread per
connection, fine for tests, not for C = 512).

    python -m bench.async_llm --port 8765

Speaks just what the bench needs: POST /v1/chat/completions (JSON, or SSE with `stream: true`,
usage in the last chunk when asked), keep-alive; POST /_control/reset, POST /_control/configure
{"latency": s}, GET /_control/stats {"calls", "in_flight", "max_in_flight"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

ANSWER = "Paris is the capital of France."


class State:
    def __init__(self) -> None:
        self.latency = 0.0
        self.calls = 0
        self.in_flight = 0
        self.max_in_flight = 0

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


STATE = State()


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    )
    return head.encode() + body


def _completion(body: dict[str, Any]) -> bytes:
    model = body.get("model", "fake")
    words = len(ANSWER.split())
    usage = {"prompt_tokens": 12, "completion_tokens": words, "total_tokens": 12 + words}
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    if body.get("stream") is True:
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {**chunk, "choices": [{"index": 0, "delta": {"content": ANSWER}}]},
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            events.append({**chunk, "choices": [], "usage": usage})
        data = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events)
        return _response(200, data + b"data: [DONE]\n\n", "text/event-stream")
    message = {"role": "assistant", "content": ANSWER}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    payload = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
    return _response(200, json.dumps(payload).encode())


async def _handle(method: str, path: str, raw: bytes) -> bytes:
    if path.endswith("/chat/completions") and method == "POST":
        STATE.calls += 1
        STATE.in_flight += 1
        STATE.max_in_flight = max(STATE.max_in_flight, STATE.in_flight)
        try:
            if STATE.latency > 0:
                await asyncio.sleep(STATE.latency)
            return _completion(json.loads(raw))
        finally:
            STATE.in_flight -= 1
    if path == "/_control/reset":
        STATE.reset()
        return _response(200, b"{}")
    if path == "/_control/configure":
        STATE.latency = float(json.loads(raw or b"{}").get("latency", 0.0))
        return _response(200, b"{}")
    if path == "/_control/stats":
        stats = {k: getattr(STATE, k) for k in ("calls", "in_flight", "max_in_flight")}
        return _response(200, json.dumps(stats).encode())
    return _response(404, b'{"error": {"message": "not found"}}')


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
            length = int(headers.get("content-length") or 0)
            raw = await reader.readexactly(length) if length else b""
            writer.write(await _handle(method, path, raw))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port, backlog=2048)
    print(f"fake LLM listening on 127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(main(parser.parse_args().port))
