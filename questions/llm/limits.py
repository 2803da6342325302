"""Hook points for spending: the provider rate limiter and the price of a completion.

`get_rate_limiter()` returns what every LLM call waits on before it is made (`acquire`) and tells
about a provider 429 (`penalize`). The default pauses this process only; a limiter shared by all
workers through Redis (`questions.llm.ratelimit`) replaces it by changing `get_rate_limiter`.
`completion_cost()` prices a completion; until a price table is wired in it returns None
("not priced"), and the job's `cost` stays empty.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from typing import Protocol


class RateLimiter(Protocol):
    async def acquire(self, model: str, tokens: int) -> None: ...

    def penalize(self, model: str, retry_after: float | None) -> object: ...


class LocalPause:
    """The default limiter: no rate, but a 429's Retry-After pauses this process's calls."""

    def __init__(self) -> None:
        self._paused_until: dict[str, float] = {}

    async def acquire(self, model: str, tokens: int) -> None:
        wait = self._paused_until.get(model, 0.0) - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    def penalize(self, model: str, retry_after: float | None) -> None:
        until = time.monotonic() + (retry_after or 1.0)
        self._paused_until[model] = max(self._paused_until.get(model, 0.0), until)


_limiter = LocalPause()


def get_rate_limiter() -> RateLimiter:
    return _limiter


def completion_cost(*, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
    return None
