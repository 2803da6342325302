"""The provider's rate limit, shared by every worker process through Redis.

A worker calls `await acquire(model, tokens)` before each LLM call: it returns when the call fits
in the model's limits — requests per minute (RPM) and tokens per minute (TPM) — and otherwise
sleeps exactly as long as Redis says, then asks again. A provider 429 calls
`await penalize(model, retry_after)`: every process pauses until that deadline, and the shared
rate is halved, then recovers by a tenth of the configured rate every RECOVERY_SECONDS.

The algorithm is GCRA with no burst, one Lua script per call, on Redis's clock (TIME), never a
process's: requests are spaced at least 60/RPM seconds apart, so no window of W seconds holds
more than ceil(W × RPM / 60) calls; a call of n tokens keeps the next one waiting n × 60/TPM
seconds, so a minute holds at most TPM tokens plus those of its last call.

A model with no configured limit only honours the pauses: its process asks Redis whether one is
on at most every PAUSE_CHECK_SECONDS (one question for all the calls starting meanwhile), so a
pause set by another process is seen within that time, and one set by this process at once.

Settings: OPENAI_RPM, OPENAI_TPM (0: no limit), OPENAI_RATE_LIMITS (per model, JSON). When Redis
is unreachable, each process limits itself to its share, the rate / OPENAI_RATE_LIMIT_PROCESSES
(logged once per outage), and tries Redis again every few seconds: never unlimited.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from redis.asyncio import Redis

from questions.breaker import Breaker
from questions.metrics import LLM_RATE_LIMIT_PENALTIES, LLM_RATE_LIMIT_WAIT

logger = logging.getLogger(__name__)

# After a 429 the shared rate recovers by RECOVERY_STEP of its configured value this often.
RECOVERY_SECONDS = 30.0
RECOVERY_STEP = 0.1
# The shared rate never falls below this share of its configured value.
MIN_FACTOR = 0.1
# With Redis down, try it again after this long (each try may cost a connect timeout).
_REDIS_RETRY_SECONDS = 5.0
# A connect that takes this long means Redis is down. A reply may take longer on a busy host
# (REDIS_SOCKET_TIMEOUT): taking a slow reply for an outage would drop to the per-process limit,
# which knows nothing of the shared pause and spacing, and let a burst through.
_REDIS_CONNECT_TIMEOUT_SECONDS = 0.5
# A model with no limit asks Redis for a pause at most this often (see the module docstring).
PAUSE_CHECK_SECONDS = 0.1
# Waiters told the same wait would all ask again at the same instant (one of them wins): spread
# them over a few milliseconds so that a slot does not cost a burst of Redis calls.
_WAKE_SPREAD_SECONDS = 0.05

# Both scripts start here: `now` on Redis's clock (ms), and the current share of the configured
# rate (1 = all of it), lowered by a 429 and recovering since.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function factor(key, now, recovery)
  local state = redis.call('HMGET', key, 'f', 't')
  if not state[1] then return 1 end
  return math.min(1, tonumber(state[1]) + (now - tonumber(state[2])) * recovery)
end
"""

# KEYS: requests TAT, tokens TAT, pause deadline, factor. ARGV: rpm, tpm, tokens, recovery per
# ms. Returns 0 (go: the call is counted) or the milliseconds to wait before asking again.
_ACQUIRE = (
    _PRELUDE
    + """
local paused = tonumber(redis.call('GET', KEYS[3]) or '0')
if paused > now then return paused - now end
local share = factor(KEYS[4], now, tonumber(ARGV[4]))
local rpm, tpm = tonumber(ARGV[1]) * share, tonumber(ARGV[2]) * share
local wait = 0
if rpm > 0 then
  wait = math.max(wait, tonumber(redis.call('GET', KEYS[1]) or '0') - now)
end
if tpm > 0 then
  wait = math.max(wait, tonumber(redis.call('GET', KEYS[2]) or '0') - now)
end
if wait > 0 then return math.ceil(wait) end
if rpm > 0 then
  local gap = math.ceil(60000 / rpm)
  redis.call('SET', KEYS[1], now + gap, 'PX', gap + 1000)
end
if tpm > 0 then
  local gap = math.ceil(60000 * tonumber(ARGV[3]) / tpm)
  redis.call('SET', KEYS[2], now + gap, 'PX', gap + 1000)
end
return 0
"""
)

# KEYS: pause deadline, factor. ARGV: retry-after ms, recovery per ms, minimum factor.
# Many processes see the same 429 burst: only the first, outside a pause, lowers the rate.
_PENALIZE = (
    _PRELUDE
    + """
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
local deadline = now + tonumber(ARGV[1])
if deadline > paused then redis.call('SET', KEYS[1], deadline, 'PX', tonumber(ARGV[1])) end
if paused <= now then
  local share = math.max(tonumber(ARGV[3]), factor(KEYS[2], now, tonumber(ARGV[2])) / 2)
  redis.call('HSET', KEYS[2], 'f', share, 't', now)
  redis.call('PEXPIRE', KEYS[2], math.ceil((1 - share) / tonumber(ARGV[2])) + 1000)
end
return 1
"""
)

_RECOVERY_PER_MS = RECOVERY_STEP / (RECOVERY_SECONDS * 1000)


@dataclass(frozen=True)
class Limits:
    rpm: int
    tpm: int

    @property
    def unlimited(self) -> bool:
        return not self.rpm and not self.tpm


def limits_for(model: str) -> Limits:
    own = settings.OPENAI_RATE_LIMITS.get(model, {})
    return Limits(rpm=own.get("rpm", settings.OPENAI_RPM), tpm=own.get("tpm", settings.OPENAI_TPM))


@dataclass
class _LocalModel:
    """One process's share of a model's limit (monotonic clock, seconds)."""

    requests_tat: float = 0.0
    tokens_tat: float = 0.0
    paused_until: float = 0.0
    factor: float = 1.0
    factor_at: float = 0.0
    # A model with no limit: when Redis last said there was no pause, and the question under way.
    unpaused_at: float = -math.inf
    pause_check: asyncio.Future[float] | None = None


@dataclass
class RateLimiter:
    """The shared limiter; one per process (`acquire` / `penalize` below use it)."""

    _clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Redis] = field(
        default_factory=weakref.WeakKeyDictionary
    )
    _local: dict[str, _LocalModel] = field(default_factory=dict)
    _breaker: Breaker = field(
        default_factory=lambda: Breaker(
            logger=logger,
            retry_after=_REDIS_RETRY_SECONDS,
            down="Redis unavailable: the LLM rate limit is per process "
            "(the configured rate / OPENAI_RATE_LIMIT_PROCESSES)",
            up="Redis available again: the LLM rate limit is shared",
        )
    )

    async def acquire(self, model: str, tokens: int) -> None:
        """Wait until a call of `tokens` (prompt bound + max completion) to `model` fits."""
        limits = limits_for(model)
        waited = 0.0
        while True:
            if limits.unlimited:
                wait = await self._pause_left(model, limits)
            else:
                wait = await self._try(model, max(int(tokens), 0), limits)
            if wait <= 0:
                LLM_RATE_LIMIT_WAIT.observe(waited)
                return
            await asyncio.sleep(wait + random.uniform(0, _WAKE_SPREAD_SECONDS))  # noqa: S311
            waited += wait

    async def penalize(self, model: str, retry_after: float) -> None:
        """The provider said 429: pause every process for `retry_after` seconds and lower the
        shared rate."""
        LLM_RATE_LIMIT_PENALTIES.inc()
        retry_ms = max(math.ceil(retry_after * 1000), 1)
        keys = [self._key(model, "pause"), self._key(model, "factor")]
        done = await self._redis(
            lambda client: client.eval(_PENALIZE, 2, *keys, retry_ms, _RECOVERY_PER_MS, MIN_FACTOR)
        )
        local = self._local_state(model)
        now = time.monotonic()
        if done is None and local.paused_until <= now:
            local.factor = max(MIN_FACTOR, self._local_factor(local, now) / 2)
            local.factor_at = now
        # This process's own calls pause at once, whatever it knew of Redis.
        local.paused_until = max(local.paused_until, now + retry_ms / 1000)

    # --- Redis ------------------------------------------------------------------------------

    async def _try(self, model: str, tokens: int, limits: Limits) -> float:
        """0 if the call may go now, else seconds to wait."""
        keys = [self._key(model, name) for name in ("requests", "tokens", "pause", "factor")]
        wait_ms = await self._redis(
            lambda client: client.eval(
                _ACQUIRE, 4, *keys, limits.rpm, limits.tpm, tokens, _RECOVERY_PER_MS
            )
        )
        if wait_ms is None:
            return self._try_locally(model, tokens, limits)
        # Keep the last word from Redis: should it go away now, the per-process limit starts
        # from it instead of from a clean slate (a burst right after a 429's pause, say).
        wait = int(wait_ms) / 1000
        local = self._local_state(model)
        local.paused_until = max(local.paused_until, time.monotonic() + wait)
        return wait

    async def _pause_left(self, model: str, limits: Limits) -> float:
        """A model with no limit: the pause left, from what Redis said less than
        PAUSE_CHECK_SECONDS ago, else from one question shared by the calls asking meanwhile."""
        local = self._local_state(model)
        now = time.monotonic()
        if local.paused_until > now:
            return local.paused_until - now
        if now - local.unpaused_at < PAUSE_CHECK_SECONDS:
            return 0.0
        check = local.pause_check
        if check is None or check.get_loop() is not asyncio.get_running_loop():
            check = local.pause_check = asyncio.ensure_future(self._try(model, 0, limits))
            check.add_done_callback(lambda done: self._pause_checked(local, done, now))
        return await asyncio.shield(check)

    @staticmethod
    def _pause_checked(local: _LocalModel, check: asyncio.Future[float], asked_at: float) -> None:
        if local.pause_check is check:
            local.pause_check = None
        if not check.cancelled() and check.exception() is None and check.result() <= 0:
            local.unpaused_at = asked_at

    async def _redis(self, call: Callable[[Redis], Awaitable[Any]]) -> Any:
        """`call(client)`, or None when Redis is down (then the caller limits locally)."""
        if not self._breaker.available():
            return None
        try:
            result = await call(self._client())
        except Exception as exc:  # noqa: BLE001 (any Redis failure means: limit locally)
            self._breaker.failed(exc)
            return None
        self._breaker.succeeded()
        return result

    def _client(self) -> Redis:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = Redis.from_url(
                # django-stubs allows a list of servers; this project configures one URL.
                cast(str, settings.CACHES["default"]["LOCATION"]),
                socket_connect_timeout=_REDIS_CONNECT_TIMEOUT_SECONDS,
                socket_timeout=settings.REDIS_SOCKET_TIMEOUT,
            )
            self._clients[loop] = client
        return client

    @staticmethod
    def _key(model: str, name: str) -> str:
        return cache.make_key(f"llm-rate:{model}:{name}")

    # --- per process, while Redis is down ---------------------------------------------------

    def _local_state(self, model: str) -> _LocalModel:
        return self._local.setdefault(model, _LocalModel())

    @staticmethod
    def _local_factor(local: _LocalModel, now: float) -> float:
        recovered = (now - local.factor_at) / RECOVERY_SECONDS * RECOVERY_STEP
        return min(1.0, local.factor + recovered)

    def _try_locally(self, model: str, tokens: int, limits: Limits) -> float:
        local = self._local_state(model)
        now = time.monotonic()
        if local.paused_until > now:
            return local.paused_until - now
        share = self._local_factor(local, now) / settings.OPENAI_RATE_LIMIT_PROCESSES
        rpm, tpm = limits.rpm * share, limits.tpm * share
        wait = max(local.requests_tat - now if rpm else 0.0, local.tokens_tat - now if tpm else 0.0)
        if wait > 0:
            return wait
        if rpm:
            local.requests_tat = now + 60 / rpm
        if tpm:
            local.tokens_tat = now + 60 * tokens / tpm
        return 0.0


_limiter = RateLimiter()


async def acquire(model: str, tokens: int) -> None:
    """Wait until a call of `tokens` tokens to `model` fits in the provider's limits (and past
    any pause a 429 set, even for a model with no configured limit)."""
    await _limiter.acquire(model, tokens)


async def penalize(model: str, retry_after: float) -> None:
    """A provider 429 for `model`: every worker pauses `retry_after` seconds; the rate drops."""
    await _limiter.penalize(model, retry_after)


def reset_rate_limiter() -> None:
    """Forget clients and per-process state (tests; settings changed)."""
    global _limiter
    _limiter = RateLimiter()
