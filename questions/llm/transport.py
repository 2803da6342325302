"""The LLM client's HTTP transport: an httpcore2 pool with a cheaper "is this idle connection
still open?" — built on public APIs only.

Before each request httpcore checks every idle pooled connection with
`get_extra_info("is_readable")`, which on the AnyIO backend rebuilds the stream's whole attribute
table (and calls getpeername) each time: with hundreds of calls in flight that scan cost more
CPU than the rest of a job. `CheapIdleCheckBackend` wraps the public `httpcore2.AnyIOBackend` and
answers that one question from the socket it kept, with a zero-timeout poll, at most every 50 ms
per connection. `CheapIdleCheckTransport` is an `httpx2.AsyncBaseTransport` over an
`httpcore2.AsyncConnectionPool` built through its public constructor with that backend
(`network_backend=`), so an httpx2 client (and the OpenAI SDK, through `http_client=`) uses it.

The pool keeps every connection it opened alive (until `keepalive_expiry` idle), not the SDK's
100: a worker with hundreds of calls in flight would otherwise close most of them after each
wave and open them again — a TCP and TLS handshake per call against the provider.
"""

from __future__ import annotations

import functools
import os
import select
import ssl
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpcore2
import httpx2
import openai

_CHECK_EVERY = 0.05

# httpcore2's errors as the httpx2 ones the client and `classify_llm_error` expect; the most
# specific first, as a subclass must win over its base.
_ERRORS: tuple[tuple[type[Exception], type[httpx2.HTTPError]], ...] = (
    (httpcore2.ConnectTimeout, httpx2.ConnectTimeout),
    (httpcore2.ReadTimeout, httpx2.ReadTimeout),
    (httpcore2.WriteTimeout, httpx2.WriteTimeout),
    (httpcore2.PoolTimeout, httpx2.PoolTimeout),
    (httpcore2.TimeoutException, httpx2.TimeoutException),
    (httpcore2.ConnectError, httpx2.ConnectError),
    (httpcore2.ReadError, httpx2.ReadError),
    (httpcore2.WriteError, httpx2.WriteError),
    (httpcore2.NetworkError, httpx2.NetworkError),
    (httpcore2.ProxyError, httpx2.ProxyError),
    (httpcore2.UnsupportedProtocol, httpx2.UnsupportedProtocol),
    (httpcore2.LocalProtocolError, httpx2.LocalProtocolError),
    (httpcore2.RemoteProtocolError, httpx2.RemoteProtocolError),
    (httpcore2.ProtocolError, httpx2.ProtocolError),
)


@contextmanager
def _mapped_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


def _socket_readable(sock: Any) -> bool:
    """True if a read would not block (data, or the server's close); a socket gone counts as
    readable, so the pool drops the connection."""
    fd = None if sock is None else sock.fileno()
    if fd is None or fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


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
                self._readable = _socket_readable(self._socket)
            return self._readable
        if info == "socket":
            return self._socket
        return self._inner.get_extra_info(info)


class CheapIdleCheckBackend(httpcore2.AsyncNetworkBackend):
    def __init__(self, inner: httpcore2.AsyncNetworkBackend | None = None) -> None:
        self._inner = inner or httpcore2.AnyIOBackend()
        self.connections = 0  # opened through this backend (a test reads it)

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)
        self.connections += 1
        return _Stream(stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        stream = await self._inner.connect_unix_socket(path, timeout, socket_options)
        self.connections += 1
        return _Stream(stream)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class _ResponseStream(httpx2.AsyncByteStream):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped_errors():
            async for part in self._inner:
                yield part

    async def aclose(self) -> None:
        with _mapped_errors():
            await self._inner.aclose()


class CheapIdleCheckTransport(httpx2.AsyncBaseTransport):
    """What `httpx2.AsyncHTTPTransport` does without a proxy, over a pool on
    `CheapIdleCheckBackend`. `requests` counts the requests it carried (a test reads it)."""

    def __init__(self, *, limits: httpx2.Limits, verify: ssl.SSLContext | bool = True) -> None:
        self.backend = CheapIdleCheckBackend()
        self.requests = 0
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=default_ssl_context()
            if verify is True
            else httpx2.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self.backend,
        )

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        self.requests += 1
        core_request = httpcore2.Request(
            method=request.method,
            url=httpcore2.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _mapped_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx2.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._pool.aclose()


def default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every LLM client shares: building one reads the CA bundle,
    milliseconds of CPU that a client built for a job's first call would cost that job. Built
    again if OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR change."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    return httpx2.create_ssl_context(verify=True)


def http_client(*, timeout: float, transport: httpx2.AsyncBaseTransport) -> httpx2.AsyncClient:
    """An httpx2 client for the OpenAI SDK (`http_client=`), as the SDK builds its own (its
    default connection limits, redirects followed) but on `transport`."""
    return openai.DefaultAsyncHttpxClient(timeout=timeout, transport=transport)


def cheap_transport() -> CheapIdleCheckTransport:
    limits = openai.DEFAULT_CONNECTION_LIMITS
    return CheapIdleCheckTransport(
        limits=httpx2.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_connections,
            keepalive_expiry=limits.keepalive_expiry,
        )
    )
