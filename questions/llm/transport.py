"""A cheaper "is this idle connection still open?" for the LLM client's connection pool.

Before each request httpcore checks every idle pooled connection with
`get_extra_info("is_readable")`, which on the AnyIO backend rebuilds the stream's whole attribute
table (and calls getpeername) each time: with hundreds of calls in flight that scan cost more
CPU than the rest of a job. This backend wraps the default one and answers that one question
from the socket it kept, with the same poll httpcore itself uses, at most every 50 ms per
connection.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore2
from httpcore2._backends.auto import AutoBackend
from httpcore2._utils import is_socket_readable

_CHECK_EVERY = 0.05


class _Stream(httpcore2.AsyncNetworkStream):
    def __init__(self, inner: httpcore2.AsyncNetworkStream) -> None:
        self._inner = inner
        self._socket = inner.get_extra_info("socket")
        self._checked_at = 0.0
        self._readable = False

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        return _Stream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # The pool asks for every idle connection before every request: a fresh answer
            # every 50 ms is enough to notice a server that closed it.
            now = time.monotonic()
            if now - self._checked_at >= _CHECK_EVERY:
                self._checked_at = now
                self._readable = is_socket_readable(self._socket)
            return self._readable
        if info == "socket":
            return self._socket
        return self._inner.get_extra_info(info)


class CheapIdleCheckBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, inner: httpcore2.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or AutoBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        return _Stream(await self._inner.connect_unix_socket(path, timeout, socket_options))

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def install(http_client: Any) -> None:
    """Put the backend under an httpx client's connection pool (when it has a plain one)."""
    pool = getattr(getattr(http_client, "_transport", None), "_pool", None)
    if isinstance(pool, httpcore2.AsyncConnectionPool):
        pool._network_backend = CheapIdleCheckBackend(pool._network_backend)
