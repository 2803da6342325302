"""CPU per streamed LLM call of `OpenAIClient`, by transport, side by side in one run.

    python -m bench.llm_client_cpu [--calls 2000] [--concurrency 512] [--rounds 3]

Starts the asynchronous fake LLM (`bench/async_llm.py`) in a process of its own, then makes
`--calls` streamed calls at `--concurrency` through `OpenAIClient` with each transport, in turn,
`--rounds` times (interleaved, so a change of load on a shared machine hits all alike), and
prints this process's CPU time (time.process_time: user + system, the fake's excluded) per call:

- `httpx2`: the call read through the SDK's default httpx2 client (`DefaultAsyncHttpxClient`),
  as the SDK and this client did before (the SDK keeps 100 connections alive, no more);
- `httpx2+aiohttp`: the same through the SDK's aiohttp transport (`DefaultAioHttpClient`);
- `aiohttp`: today's `OpenAIClient`, on aiohttp directly (questions/llm/transport.py).

The transport of the commits before (`CheapIdleCheckTransport`, httpcore2 with a cheaper idle
check) is measured against today's by `bench/levers.py` on their commits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from typing import Any

import django
from django.conf import settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _client(kind: str, base_url: str) -> Any:
    import json

    import openai

    from questions.llm.client import OpenAIClient, _take

    if kind == "aiohttp":
        return OpenAIClient(api_key="k", base_url=base_url, model="m", timeout=30.0)

    class OverHttpx2(OpenAIClient):
        """The client's call as it was before aiohttp: an httpx2 client's streamed response,
        read line by line (bench only)."""

        def __init__(self, http: Any) -> None:
            super().__init__(api_key="k", base_url=base_url, model="m", timeout=30.0)
            self.http = http

        async def _stream(self, body: bytes, progress: Any, on_text: Any) -> None:
            request = self.http.build_request(
                "POST", self._url, content=body, headers=self._headers
            )
            response = await self.http.send(request, stream=True)
            try:
                async for line in response.aiter_lines():
                    if line.startswith("data:") and (data := line[5:].strip()) != "[DONE]":
                        _take(json.loads(data), progress, on_text)
            finally:
                await response.aclose()

        async def aclose(self) -> None:
            await self.http.aclose()

    if kind == "httpx2":
        return OverHttpx2(openai.DefaultAsyncHttpxClient(timeout=30.0))
    import httpx2

    return OverHttpx2(  # the SDK's aiohttp transport under its httpx2 client
        openai.DefaultAioHttpClient(
            timeout=30.0, limits=httpx2.Limits(max_connections=1000, keepalive_expiry=5.0)
        )
    )


async def _run(kind: str, base_url: str, calls: int, concurrency: int) -> tuple[float, float]:
    from questions.llm.client import Progress

    client = _client(kind, base_url)
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with slots:
            await client.complete(
                f"Q{index}?", user="u", progress=Progress(), on_text=lambda _: None
            )

    # Warm-up: open the pool's connections (not counted).
    await asyncio.gather(*(one(i) for i in range(concurrency)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(calls)))
    spent = time.process_time() - cpu, time.perf_counter() - wall
    await client.aclose()
    return spent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.05, help="the fake's seconds per call")
    args = parser.parse_args()
    settings.configure(
        OPENAI_SYSTEM_PROMPT="Be brief.", OPENAI_MAX_COMPLETION_TOKENS=64, QUESTIONS_PRICES={}
    )
    django.setup()
    port = _free_port()
    fake = subprocess.Popen([sys.executable, "-m", "bench.async_llm", "--port", str(port)])
    try:
        import urllib.request

        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(  # noqa: S310 - local
                    urllib.request.Request(
                        f"http://127.0.0.1:{port}/_control/configure",
                        data=f'{{"latency": {args.latency}}}'.encode(),
                        method="POST",
                    ),
                    timeout=2,
                ).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        base_url = f"http://127.0.0.1:{port}/v1"
        results: dict[str, list[float]] = {"httpx2": [], "httpx2+aiohttp": [], "aiohttp": []}
        print(f"load average before: {os.getloadavg()}")
        for round_ in range(args.rounds):
            for kind in results:
                cpu, wall = asyncio.run(_run(kind, base_url, args.calls, args.concurrency))
                per_call = cpu / args.calls * 1000
                results[kind].append(per_call)
                print(
                    f"round {round_ + 1} {kind:8} CPU {per_call:.3f} ms/call, "
                    f"wall {wall:.2f} s, load {os.getloadavg()[0]:.2f}"
                )
        print(f"load average after: {os.getloadavg()}")
        for kind, values in results.items():
            print(f"{kind:8} median CPU {sorted(values)[len(values) // 2]:.3f} ms/call  {values}")
    finally:
        fake.terminate()
        fake.wait(10)


if __name__ == "__main__":
    main()
