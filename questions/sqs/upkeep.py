"""The runner's upkeep of the messages it holds: the acknowledger, the heartbeat and the
wind-down.

The acknowledger deletes handled messages in batches of up to 10, lingering briefly to fill a
batch (their slots are free already); the heartbeat extends every running
message before its visibility lapses, under a lock that settling a message also takes, so a
message is never extended after it was settled (a retry's own visibility is not overwritten).
The wind-down lets running jobs finish within the grace period, counted from the stop, and gives
back the messages of those still running then.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from questions import metrics
from questions.sqs.consumer import Consumer
from questions.sqs.liveness import AliveFile

logger = logging.getLogger("questions.sqs.worker")

_ACK_LINGER = 0.05


class Upkeep:
    consumer: Consumer
    alive: AliveFile
    concurrency: int
    _in_flight: int
    _pending_deletes: int
    _tracked: dict[str, list[Any]]
    _slot_freed: asyncio.Event
    _acks: asyncio.Queue[str | None]
    _heartbeat_lock: asyncio.Lock
    _sqs: Callable[..., Any]
    _jobs: set[asyncio.Task[None]]
    _stopped_at: float | None
    _abandoned: bool
    shutdown_timeout: float
    unfinished: int

    def _release(self, count: int) -> None:
        self._in_flight -= count
        metrics.JOBS_IN_FLIGHT.set(self._in_flight)
        self._slot_freed.set()

    async def _acker(self) -> None:
        """Delete acknowledged messages in batches of up to 10, lingering briefly for a fuller
        batch while jobs that could fill it are running."""
        closing = False
        while not closing:
            first = await self._acks.get()
            if first is None:
                break
            batch = [first]
            deadline = time.monotonic() + _ACK_LINGER
            while len(batch) < 10:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._in_flight:
                    if self._acks.empty():
                        break
                    item = self._acks.get_nowait()
                else:
                    try:
                        item = await asyncio.wait_for(self._acks.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    closing = True
                    break
                batch.append(item)
            try:
                await self._sqs(self.consumer.delete, batch)
            except Exception:
                logger.exception("could not delete messages; they will be redelivered")
            finally:
                self._pending_deletes -= len(batch)
                self._slot_freed.set()

    async def _heartbeat(self) -> None:
        interval = max(self.consumer.visibility_timeout / 3, 0.5)
        tick = min(interval / 2, 1.0)
        while True:  # cancelled by the wind-down
            await asyncio.sleep(tick)
            self.alive.touch()  # the loop turns: the liveness probe's signal
            try:
                async with self._heartbeat_lock:
                    now = time.monotonic()
                    due = [e for e in self._tracked.values() if now - e[1] >= interval]
                    if due:
                        refused = await self._sqs(self.consumer.extend, [e[0] for e in due])
                        for entry in due:
                            if entry[0] not in refused:
                                entry[1] = now
            except Exception:
                logger.exception("heartbeat failed; will try again")

    async def _wind_down(self, heartbeat: asyncio.Task[None], acker: asyncio.Task[None]) -> None:
        # The grace period runs from the stop, not from the end of a long poll in flight then.
        deadline = (self._stopped_at or time.monotonic()) + self.shutdown_timeout
        if self._jobs:
            logger.info(f"Finishing {len(self._jobs)} jobs in flight...")
        while self._jobs and time.monotonic() < deadline:
            await asyncio.wait(self._jobs, timeout=max(deadline - time.monotonic(), 0.01))
        self.unfinished = len(self._jobs)
        if self.unfinished:
            logger.info(
                f"{self.unfinished} jobs did not finish in time; their messages return to SQS."
            )
            self._abandoned = True
            async with self._heartbeat_lock:
                handles = [entry[0] for entry in self._tracked.values()]
                self._tracked.clear()
            await self._sqs(self.consumer.give_back, handles)
        heartbeat.cancel()
        self._acks.put_nowait(None)
        await acker
