"""How big the soak is and when each fault strikes (seconds after the load starts)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Plan:
    jobs: int
    watchers: int
    load_seconds: float
    drain_seconds: float
    users: int = 20
    budget_users: int = 3
    budget_usd: str = "0.40"
    max_completion_tokens: int = 200  # the budget reserves this per open job
    stop_rate: float = 0.03
    supervisors: int = 2
    processes: int = 2  # per supervisor
    concurrency: int = 24
    db_threads: int = 4
    web_threads: int = 8
    # The provider and the worker's clocks: a lease is OPENAI_TIMEOUT + QUESTIONS_CLAIM_MARGIN.
    openai_timeout: float = 25.0
    claim_margin: int = 5
    requeue_after: int = 30
    visibility_timeout: int = 20
    shutdown_timeout: float = 30.0
    stall_seconds: float = 40.0
    # faults: (first, every) in seconds; every 0 = once
    kill9: tuple[float, float] = (20.0, 20.0)
    sigterm_group: tuple[float, float] = (30.0, 60.0)
    redis_restart: tuple[float, float] = (45.0, 240.0)
    postgres_restart: tuple[float, float] = (75.0, 300.0)
    sqs_cut: tuple[float, float] = (105.0, 300.0)
    sqs_cut_seconds: float = 30.0
    events_restart: tuple[float, float] = (135.0, 200.0)
    provider_pause: tuple[float, float] = (15.0, 300.0)
    pause_seconds: float = 45.0
    seed: int = 1
    label: str = field(default="")

    @property
    def lease(self) -> float:
        return self.openai_timeout + self.claim_margin

    def schedule(self) -> list[tuple[float, str]]:
        """Every fault of the run, in time order."""
        faults = {
            "kill -9 a worker child": self.kill9,
            "SIGTERM a worker's group, then start it": self.sigterm_group,
            "restart Redis": self.redis_restart,
            "restart PostgreSQL": self.postgres_restart,
            "cut SQS off": self.sqs_cut,
            "restart the events process": self.events_restart,
            "provider pause (429)": self.provider_pause,
        }
        out = []
        for name, (first, every) in faults.items():
            at = first
            while at < self.load_seconds:
                out.append((at, name))
                if every <= 0:
                    break
                at += every
        return sorted(out)


def full(jobs: int = 10_000) -> Plan:
    """make soak: eight questions a second, every kind of fault within the first 200 s and
    again and again after."""
    return Plan(
        jobs=jobs,
        watchers=500,
        load_seconds=jobs / 8,
        drain_seconds=900,
        label=f"{jobs:,} jobs",
    )


def short() -> Plan:
    """make test: 1,000 jobs in 90 s, each fault at least once, about 3-4 minutes in all."""
    return Plan(
        jobs=1000,
        watchers=100,
        load_seconds=90,
        drain_seconds=150,
        kill9=(15.0, 20.0),
        sigterm_group=(30.0, 40.0),
        redis_restart=(25.0, 0),
        postgres_restart=(50.0, 0),
        sqs_cut=(60.0, 0),
        sqs_cut_seconds=20.0,
        events_restart=(80.0, 0),
        provider_pause=(8.0, 0),
        pause_seconds=40.0,
        label="short: 1,000 jobs",
    )
