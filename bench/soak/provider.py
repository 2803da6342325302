"""The provider the soak pays: tests.fakes.llm_server with a responder that answers each call
at random (mixed latency, word-by-word streams, 5 % 5xx, streams that stall on keepalive
comments) and, during a pause window, 429 with Retry-After to everyone; it counts every call."""

from __future__ import annotations

import math
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tests.fakes.llm_server import FakeLLM

_SENTENCE = (
    "The soak's answer is long enough to stream for a while and to cost a little money so "
    "that budgets bind: each word is one token in the fake's own count."
)
ANSWER = " ".join([_SENTENCE] * 3)
TAG = re.compile(r"\[soak (\d+)\]")


@dataclass(frozen=True)
class Mix:
    error_rate: float = 0.05
    stall_rate: float = 0.02
    stall_seconds: float = 40.0


class Provider:
    def __init__(self, mix: Mix, *, seed: int) -> None:
        self.mix = mix
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._pause_until = 0.0
        self.kinds: Counter[str] = Counter()
        self.prompt_words: dict[str, int] = {}
        self.fake = FakeLLM(responder=self._respond)
        self.fake.configure(answer=ANSWER)

    @property
    def base_url(self) -> str:
        return self.fake.base_url

    def start(self) -> Provider:
        self.fake.start()
        return self

    def stop(self) -> None:
        self.fake.stop()

    def pause(self, seconds: float) -> None:
        """Answer every call 429 with Retry-After (the time left) for `seconds`."""
        with self._lock:
            self._pause_until = time.monotonic() + seconds

    def _respond(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = [m for m in body.get("messages", []) if isinstance(m, dict)]
        words = sum(len(str(m.get("content", "")).split()) for m in messages)
        text = next(
            (str(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        with self._lock:
            self.prompt_words[text] = words
            left = self._pause_until - time.monotonic()
            if left > 0:
                self.kinds["429 pause"] += 1
                return {"status": 429, "retry_after": math.ceil(left), "latency": 0.05}
            roll = self._random.random()
            if roll < self.mix.error_rate:
                self.kinds["5xx"] += 1
                status = self._random.choice((500, 502, 503))
                return {"status": status, "latency": self._random.uniform(0.05, 1.0)}
            if roll < self.mix.error_rate + self.mix.stall_rate:
                self.kinds["keepalive stall"] += 1
                return {"keepalive": self.mix.stall_seconds, "keepalive_interval": 1.0}
            band = self._random.random()
            if band < 0.80:
                self.kinds["0.2-1.5 s"] += 1
                latency = self._random.uniform(0.2, 1.5)
            elif band < 0.97:
                self.kinds["1.5-6 s"] += 1
                latency = self._random.uniform(1.5, 6.0)
            else:
                self.kinds["6-20 s"] += 1
                latency = self._random.uniform(6.0, 20.0)
            return {"latency": latency, "stream_interval": self._random.uniform(0.005, 0.02)}

    def calls(self) -> list[dict[str, Any]]:
        """The fake's call log, each entry with the soak's job number (`n`) when tagged."""
        out = []
        for entry in self.fake.call_log:
            match = TAG.search(entry.get("text", ""))
            entry["n"] = int(match.group(1)) if match else None
            entry["prompt_words"] = self.prompt_words.get(entry.get("text", ""), 0)
            out.append(entry)
        return out


def is_paid(call: dict[str, Any]) -> bool:
    """A call the provider bills: it answered 2xx and content went out."""
    return call.get("status") == 200 and call.get("content_at") is not None


def answer_words() -> int:
    return len(ANSWER.split())
