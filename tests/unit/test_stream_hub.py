"""questions.live.hub: many watchers, one Redis reader. Real Redis; the writer is
stream_append (the worker's side of the contract)."""

from __future__ import annotations

import asyncio
import uuid

from questions.live.hub import stream_hub
from questions.live.streams import async_redis, close_async_redis, stream_append


def test_many_watchers_of_several_jobs_get_every_entry_over_a_few_connections():
    jobs = [uuid.uuid4() for _ in range(3)]
    watchers_per_job = 100

    async def watcher(job_id: uuid.UUID, seen: list[str]) -> None:
        after = "0"
        async with stream_hub().watch(job_id) as watch:
            while True:
                for entry in await watch.read(after=after, timeout=5):
                    seen.append(f"{entry.kind}:{entry.value}")
                    after = entry.id
                    if entry.kind == "end":
                        return

    async def main() -> tuple[dict[uuid.UUID, list[list[str]]], int]:
        # Something is written before anyone watches: late watchers catch up on it.
        for job_id in jobs:
            await stream_append(job_id, [("status", "running")])
        seen = {job_id: [[] for _ in range(watchers_per_job)] for job_id in jobs}
        tasks = [
            asyncio.create_task(watcher(job_id, seen[job_id][n]))
            for job_id in jobs
            for n in range(watchers_per_job)
        ]
        await asyncio.sleep(0.3)  # let them all subscribe (not synchronisation: see below)
        for word in range(5):
            for job_id in jobs:
                await stream_append(job_id, [("delta", f"w{word}")])
            await asyncio.sleep(0.05)
        for job_id in jobs:
            await stream_append(job_id, [("end", "succeeded")])
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        pool = async_redis().connection_pool
        connections = len(pool._available_connections) + len(pool._in_use_connections)
        await close_async_redis()
        return seen, connections

    seen, connections = asyncio.run(main())

    expected = ["status:running", *(f"delta:w{n}" for n in range(5)), "end:succeeded"]
    for job_id in jobs:
        assert all(watched == expected for watched in seen[job_id])
    # 300 watchers: the shared reader plus a catch-up read per job, not one per watcher.
    assert connections <= len(jobs) + 1, connections


def test_catch_up_reads_of_a_reconnect_storm_stay_inside_the_redis_pool(settings):
    # An events process restarted: 400 watchers of 400 jobs come back at the same moment, each
    # job needing its catch-up read. The client's pool holds 50 connections; past that a read
    # fails (MaxConnectionsError) and every watcher would fall back to polling PostgreSQL.
    settings.QUESTIONS_EVENTS_CATCHUP_CONCURRENCY = 4
    jobs = [uuid.uuid4() for _ in range(400)]

    async def watcher(job_id: uuid.UUID) -> str:
        async with stream_hub().watch(job_id) as watch:
            entries = await watch.read(after="0", timeout=10)
            return entries[0].value

    async def main() -> tuple[list[str | BaseException], int]:
        for job_id in jobs:
            await stream_append(job_id, [("delta", f"text of {job_id}")])
        await close_async_redis()  # the restarted process: a fresh client with no connections
        results = await asyncio.gather(
            *(watcher(job_id) for job_id in jobs), return_exceptions=True
        )
        connections = sum(
            count for count, _ in async_redis().connection_pool.get_connection_count()
        )
        await close_async_redis()
        return results, connections

    results, connections = asyncio.run(main())

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures[:3]
    assert results == [f"text of {job_id}" for job_id in jobs]
    # The gate's reads plus the shared reader.
    assert connections <= 4 + 1, connections
