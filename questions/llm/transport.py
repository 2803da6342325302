"""The LLM client's HTTP connections: an aiohttp session, on aiohttp's public API.

Why aiohttp and not the SDK's own httpx2 client: a worker makes hundreds of streamed calls at
once, and the HTTP stack's CPU per call is most of a job's. aiohttp parses HTTP and splits the
stream into lines in C; httpx2 and httpcore2 do both in Python, and httpcore2's pool checks every
idle connection before every request. `bench/llm_client_cpu.py`, 2,000 streamed calls at
concurrency 512: 0.3–0.4 ms of CPU per call here, against 1.7 ms through the httpcore2 pool this
replaced and 2.4–3.2 ms through the SDK's default client (bench/RESULTS.md). The client still
raises the SDK's own error classes (`questions.llm.client`), so `classify_llm_error` reads them
as before.

`LLMConnections` belongs to one event loop: its session is made on the loop's first call and
closed by `aclose()` before the loop ends. It keeps every connection it opened alive until it has
been idle for `keepalive` seconds — a worker with hundreds of calls in flight would otherwise close
most of them after each wave and open them again, a TCP and TLS handshake per call against the
provider. All clients share one verifying TLS context; HTTPS_PROXY / HTTP_PROXY / NO_PROXY are
read once, when the client is built.
"""

from __future__ import annotations

import functools
import os
import ssl
import urllib.parse
import urllib.request
from contextlib import AbstractAsyncContextManager

import aiohttp
import httpx2

# An SSE line longer than this (aiohttp's buffer limit is twice the read size) is an error; a
# streamed chunk is a few hundred bytes, the largest (a usage or error chunk) a few kilobytes.
_READ_BUFFER = 1 << 20


class LLMConnections:
    """Kept-alive HTTP/1.1 connections to one provider, for the event loop that uses them.
    `requests` counts the requests sent through them (a test reads it)."""

    def __init__(self, url: str, *, limit: int, keepalive: float) -> None:
        self._limit = limit
        self._keepalive = keepalive
        self._proxy = env_proxy(url)
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0

    @property
    def session(self) -> aiohttp.ClientSession:
        session = self._session
        if session is None or session.closed:
            session = self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=self._limit,
                    limit_per_host=0,
                    keepalive_timeout=self._keepalive,
                    ssl=default_ssl_context(),
                ),
                # The client's own clocks bound a call (`OpenAIClient`): none here.
                timeout=aiohttp.ClientTimeout(total=None),
                read_bufsize=_READ_BUFFER,
            )
        return session

    def post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> AbstractAsyncContextManager[aiohttp.ClientResponse]:
        """`async with connections.post(...) as response:` — leaving the block before the end
        of the body (a Stop, a timeout) closes the connection rather than reusing it."""
        self.requests += 1
        return self.session.post(url, data=body, headers=headers, proxy=self._proxy)

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def env_proxy(url: str) -> str | None:
    """The proxy the environment names for `url` (HTTPS_PROXY / HTTP_PROXY / ALL_PROXY, unless
    NO_PROXY covers its host), as curl and httpx read them."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    proxies = urllib.request.getproxies()
    return proxies.get(parts.scheme) or proxies.get("all")


def default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context every LLM client shares: building one reads the CA bundle,
    milliseconds of CPU that a client built for a job's first call would cost that job. Built
    again if OpenSSL's SSL_CERT_FILE / SSL_CERT_DIR change."""
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


@functools.cache
def _ssl_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    # As the SDK's own client builds it: certifi's bundle, or the one OpenSSL is pointed at.
    return httpx2.create_ssl_context(verify=True)
