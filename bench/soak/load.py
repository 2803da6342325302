"""The load: users with API tokens, questions POSTed through the real API (retried with an
Idempotency-Key, as a careful client does), random Stops, and SSE watchers on the events
process that follow jobs to their end and reconnect with Last-Event-ID."""

from __future__ import annotations

import asyncio
import heapq
import random
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal

import httpx2 as httpx
import requests

FINAL_EVENTS = frozenset({"done", "failed", "cancelled"})


@dataclass
class User:
    id: int
    username: str
    token: str
    budget: Decimal | None


def users_create(count: int, *, budget_users: int, budget: Decimal) -> list[User]:
    """Users and tokens through the project's own services (Django is set up on the soak's
    database); the first `budget_users` get a small daily budget of their own."""
    from django.contrib.auth import get_user_model
    from django.db import connection

    from questions.accounts import api_token_create
    from questions.models import UserQuota

    users = []
    for index in range(count):
        user = get_user_model().objects.create_user(username=f"soak-{index}", password=None)
        own_budget = budget if index < budget_users else None
        if own_budget is not None:
            UserQuota.objects.create(user=user, daily_budget_usd=own_budget)
        token = api_token_create(user=user, name="soak").key
        users.append(User(user.pk, user.username, token, own_budget))
    connection.close()
    return users


@dataclass
class Posted:
    n: int
    user: User
    job_id: str | None = None
    refusal: str | None = None  # an API error code (budget_exceeded, ...), final
    posted_at: float = 0.0


@dataclass
class LoadStats:
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: int = 0
    gave_up: int = 0
    cancels: Counter[int] = field(default_factory=Counter)


class Poster:
    """POSTs question n at t0 + n * spacing from a small thread pool; schedules some Stops."""

    def __init__(
        self, web_url: str, users: list[User], *, jobs: int, seconds: float, stop_rate: float
    ) -> None:
        self.web_url = web_url
        self.users = users
        self.jobs = jobs
        self.spacing = seconds / max(jobs, 1)
        self.stop_rate = stop_rate
        self.posted: list[Posted] = []
        self.stats = LoadStats()
        self.accepted: list[Posted] = []  # in order, for the watchers
        self._random = random.Random(7)
        self._lock = threading.Lock()
        self._cancels: list[tuple[float, str, str]] = []
        self._stop = threading.Event()
        self._local = threading.local()
        self.done = threading.Event()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def run(self) -> None:
        t0 = time.monotonic()
        canceller = threading.Thread(target=self._cancel_loop, name="soak-cancels", daemon=True)
        canceller.start()
        with ThreadPoolExecutor(max_workers=12, thread_name_prefix="soak-post") as pool:
            for n in range(self.jobs):
                if self._stop.is_set():
                    break
                delay = t0 + n * self.spacing - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                posted = Posted(n=n, user=self.users[n % len(self.users)])
                self.posted.append(posted)
                pool.submit(self._post, posted)
        self.done.set()

    def stop(self) -> None:
        self._stop.set()

    def _post(self, posted: Posted) -> None:
        headers = {
            "Authorization": f"Token {posted.user.token}",
            "Idempotency-Key": str(uuid.uuid4()),
        }
        body = {"question": f"[soak {posted.n}] How far is the moon, question {posted.n}?"}
        for _ in range(30):
            if self._stop.is_set():
                break
            try:
                response = self._session().post(
                    f"{self.web_url}/api/questions/", json=body, headers=headers, timeout=30
                )
            except requests.RequestException:
                with self._lock:
                    self.stats.transport_errors += 1
                time.sleep(1)
                continue
            with self._lock:
                self.stats.statuses[response.status_code] += 1
            if response.status_code == 202:
                posted.job_id = response.json()["id"]
                posted.posted_at = time.monotonic()
                with self._lock:
                    self.accepted.append(posted)
                    if self._random.random() < self.stop_rate:
                        when = time.monotonic() + self._random.uniform(0.2, 8.0)
                        heapq.heappush(self._cancels, (when, posted.job_id, posted.user.token))
                return
            if response.status_code < 500 and response.status_code != 429:
                posted.refusal = _error_code(response)
                return
            if response.status_code == 429 and _error_code(response) == "budget_exceeded":
                posted.refusal = "budget_exceeded"
                return
            time.sleep(1)  # 5xx / 503 / a rate limit: the same key again, later
        with self._lock:
            self.stats.gave_up += 1

    def _cancel_loop(self) -> None:
        session = requests.Session()
        while not (self._stop.is_set() or (self.done.is_set() and not self._cancels)):
            with self._lock:
                due = self._cancels[0][0] <= time.monotonic() if self._cancels else False
                item = heapq.heappop(self._cancels) if due else None
            if item is None:
                self._stop.wait(0.1)
                continue
            _, job_id, token = item
            for _ in range(10):
                try:
                    response = session.post(
                        f"{self.web_url}/api/questions/{job_id}/cancel",
                        headers={"Authorization": f"Token {token}"},
                        timeout=30,
                    )
                except requests.RequestException:
                    time.sleep(1)
                    continue
                with self._lock:
                    self.stats.cancels[response.status_code] += 1
                if response.status_code < 500:
                    break
                time.sleep(1)


def _error_code(response: requests.Response) -> str:
    try:
        return str(response.json().get("error") or response.status_code)
    except ValueError:
        return str(response.status_code)


# --------------------------------------------------------------------------- watchers


@dataclass
class WatchStats:
    statuses: Counter[int] = field(default_factory=Counter)
    watched_to_end: int = 0
    reconnects: int = 0
    errors: int = 0
    events: int = 0


class Watchers:
    """N concurrent SSE watchers (asyncio, one thread): each follows a recent job to its final
    event, reconnecting with Last-Event-ID when cut, then takes another."""

    def __init__(self, events_url: str, poster: Poster, count: int) -> None:
        self.events_url = events_url
        self.poster = poster
        self.count = count
        self.stats = WatchStats()
        self._stop = threading.Event()
        self._random = random.Random(11)
        self._thread = threading.Thread(target=self._run, name="soak-watchers", daemon=True)

    def start(self) -> Watchers:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        timeout = httpx.Timeout(10.0, read=45.0)
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            tasks = [asyncio.create_task(self._watcher(client)) for _ in range(self.count)]
            while not self._stop.is_set():
                await asyncio.sleep(0.2)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _watcher(self, client: httpx.AsyncClient) -> None:
        while not self._stop.is_set():
            recent = self.poster.accepted[-200:]
            if not recent:
                await asyncio.sleep(0.5)
                continue
            posted = self._random.choice(recent)
            if await self._follow(client, posted):
                self.stats.watched_to_end += 1

    async def _follow(self, client: httpx.AsyncClient, posted: Posted) -> bool:
        url = f"{self.events_url}/api/questions/{posted.job_id}/events"
        last_id: str | None = None
        for attempt in range(60):
            if self._stop.is_set():
                return False
            if attempt:
                self.stats.reconnects += 1
                await asyncio.sleep(1.0)
            headers = {"Authorization": f"Token {posted.user.token}", "Accept": "text/event-stream"}
            if last_id is not None:
                headers["Last-Event-ID"] = last_id
            try:
                async with client.stream("GET", url, headers=headers) as response:
                    self.stats.statuses[response.status_code] += 1
                    if response.status_code != 200:
                        continue
                    event = ""
                    async for line in response.aiter_lines():
                        if line.startswith("event:"):
                            event = line.partition(":")[2].strip()
                        elif line.startswith("id:"):
                            last_id = line.partition(":")[2].strip()
                        elif line == "" and event:
                            self.stats.events += 1
                            if event in FINAL_EVENTS:
                                return True
                            event = ""
            except httpx.HTTPError:
                self.stats.errors += 1
        return False
