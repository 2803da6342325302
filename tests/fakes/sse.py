"""A small Server-Sent Events reader for the tests (and bench/): events off a streaming body."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    event: str
    data: str
    id: str | None = None

    def json(self) -> Any:
        return json.loads(self.data)


def parse_events(lines: Iterable[str]) -> Iterator[Event | str]:
    """Events, and comments (as strings starting with ':'), from the lines of an SSE body."""
    event, data, event_id = "message", [], None
    for raw in lines:
        line = raw.rstrip("\r")
        if line == "":
            if data:
                yield Event(event=event, data="\n".join(data), id=event_id)
            event, data, event_id = "message", [], None
        elif line.startswith(":"):
            yield line
        else:
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
            elif name == "retry":
                yield f"retry:{value}"


def open_stream(url: str, headers: dict[str, str] | None = None, timeout: float = 30.0) -> Any:
    """GET `url` and return the http.client response (its lines arrive as the server sends
    them: http.client reads a chunked body line by line, unlike a fixed-size buffered read)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.request("GET", path, headers={"Accept": "text/event-stream", **(headers or {})})
    response = conn.getresponse()
    response.connection = conn
    return response


def body_lines(response: Any) -> Iterator[str]:
    while line := response.readline():
        yield line.decode().rstrip("\n")


def iter_events(response: Any) -> Iterator[Event | str]:
    """Events and comments as they arrive."""
    return parse_events(body_lines(response))


def read_events(response: Any, *, until_final: bool = True) -> list[Event | str]:
    """Every event and comment until the stream closes (or, with until_final, until a final
    event: done / failed / cancelled)."""
    items: list[Event | str] = []
    for item in iter_events(response):
        items.append(item)
        if until_final and isinstance(item, Event) and item.event in FINAL_EVENTS:
            break
    return items


FINAL_EVENTS = ("done", "failed", "cancelled")
