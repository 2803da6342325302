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
