"""Run the benchmarks side by side and print them as ratios: `python -m bench.run [--quick]`.

Writes bench/results/<UTC time>.json (and latest.json); process logs and wrk output go to
bench/results/<UTC time>/. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.rig import BENCH, ROOT, Rig, prepare_database, setup_django

HEADLINE = (0.5, 32)  # (L, C) of the throughput target


@dataclass(frozen=True)
class Plan:
    latencies: tuple[float, ...]
    concurrencies: tuple[int, ...]
    cell_seconds: float  # how long a cell should last at the ideal rate
    zero_latency_jobs: int
    bare_messages: int
    celery_cells: tuple[tuple[float, int], ...]
    seed_latencies: tuple[float, ...]
    e2e_seconds: float
    wrk_seconds: int
    memory_jobs: int
    # Issue 9's cells, worker and Celery side by side, N = 2·C jobs each: (L, C).
    scale_cells: tuple[tuple[float, int], ...] = ()

    def jobs(self, latency: float, concurrency: int) -> int:
        if latency == 0:
            return self.zero_latency_jobs if concurrency > 1 else self.zero_latency_jobs // 5
        waves = max(2, math.ceil(self.cell_seconds / latency))
        return waves * concurrency


FULL = Plan(
    latencies=(0.0, 0.5),
    concurrencies=(1, 8, 32, 64),
    cell_seconds=8,
    zero_latency_jobs=1500,
    bare_messages=5000,
    celery_cells=((0.5, 8), (0.5, 32), (0.5, 64), (0.0, 32)),
    seed_latencies=(0.5, 0.0),
    e2e_seconds=30,
    wrk_seconds=15,
    memory_jobs=10_000,
    scale_cells=((0.5, 32), (5.0, 64), (5.0, 256), (5.0, 512)),
)
QUICK = Plan(
    latencies=(0.0, 0.5),
    concurrencies=(1, 32),
    cell_seconds=3,
    zero_latency_jobs=400,
    bare_messages=1000,
    celery_cells=((0.5, 32), (0.0, 32)),
    seed_latencies=(0.5, 0.0),
    e2e_seconds=8,
    wrk_seconds=4,
    memory_jobs=1500,
    scale_cells=((0.5, 32), (5.0, 64)),
)


def versions() -> dict[str, str]:
    from importlib.metadata import version

    def cmd(argv: list[str]) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "missing"

    pg = cmd(["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc", "show server_version"])
    redis = cmd(["redis-cli", "info", "server"])
    redis = next(
        (line.split(":")[1] for line in redis.splitlines() if "redis_version" in line), "?"
    )
    fauxqs = json.loads((BENCH / "node_modules" / "fauxqs" / "package.json").read_text())["version"]
    wrk = cmd(["wrk", "--version"]).splitlines()
    return {
        "python": platform.python_version(),
        "django": version("django"),
        "gunicorn": version("gunicorn"),
        "boto3": version("boto3"),
        "openai": version("openai"),
        "celery": version("celery"),
        "kombu": version("kombu"),
        "postgresql": pg.split()[0] if pg else "?",
        "redis": redis.strip(),
        "node": cmd(["node", "--version"]),
        "fauxqs": fauxqs,
        "wrk": wrk[0] if wrk else "missing",
    }


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.machine(),
    )
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "ram_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 / 1024, 1),
        "os": platform.platform(),
        "load_at_start": os.getloadavg(),
    }


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def run(plan: Plan, mode: str, only: set[str], *, profile: bool = False) -> dict[str, Any]:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    logdir = BENCH / "results" / stamp
    logdir.mkdir(parents=True, exist_ok=True)
    rig = Rig(logdir=logdir)
    began = time.monotonic()
    report: dict[str, Any] = {
        "mode": mode,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "logs": str(logdir.relative_to(ROOT)),
    }
    try:
        rig.start_services()
        env = rig.env("bench.django_settings")
        prepare_database(env)
        setup_django(env)
        from bench import jobs, scenarios

        owner, token = jobs.bench_user()
        ctx = scenarios.Ctx(rig=rig, owner=owner, token=token, profile=profile)
        report["versions"] = versions()

        if "scale" in only:
            scale = []
            for latency, concurrency in plan.scale_cells:
                for kind in ("worker", "celery"):
                    cell = scenarios.throughput_cell(
                        ctx,
                        kind=kind,
                        latency=latency,
                        concurrency=concurrency,
                        count=max(2 * concurrency, plan.jobs(latency, concurrency) // 2),
                    )
                    scale.append(cell)
                    log(_cell_line(cell))
            report["scale"] = scale

        if "throughput" in only:
            report["bare_drain"] = scenarios.bare_drain(ctx, count=plan.bare_messages)
            log(f"bare boto3 receive→delete loop: {report['bare_drain']['msgs_per_s']} msgs/s")
            cells = []
            for latency in plan.latencies:
                for concurrency in plan.concurrencies:
                    count = plan.jobs(latency, concurrency)
                    cell = scenarios.throughput_cell(
                        ctx, kind="worker", latency=latency, concurrency=concurrency, count=count
                    )
                    if latency == 0:
                        cell["ratio_to_ideal"] = round(
                            cell["jobs_per_s"] / report["bare_drain"]["msgs_per_s"], 3
                        )
                    cells.append(cell)
                    log(_cell_line(cell))
            # The same headline cell scaled out: two processes of C/2 each (one GIL per process).
            latency, concurrency = HEADLINE
            cell = scenarios.throughput_cell(
                ctx,
                kind="worker",
                latency=latency,
                concurrency=concurrency // 2,
                processes=2,
                count=plan.jobs(latency, concurrency),
            )
            cells.append(cell)
            log(_cell_line(cell))
            report["throughput"] = cells

        if "peers" in only:
            peers = []
            for latency in plan.seed_latencies:
                count = plan.jobs(latency, 1) if latency else plan.zero_latency_jobs // 5
                cell = scenarios.throughput_cell(
                    ctx, kind="seed", latency=latency, concurrency=1, count=count
                )
                peers.append(cell)
                log(_cell_line(cell))
            for latency, concurrency in plan.celery_cells:
                count = plan.jobs(latency, concurrency)
                cell = scenarios.throughput_cell(
                    ctx, kind="celery", latency=latency, concurrency=concurrency, count=count
                )
                peers.append(cell)
                log(_cell_line(cell))
            report["peers"] = peers

        if "e2e" in only or "api" in only:
            web = scenarios.start_web(ctx)
            if "e2e" in only:
                latency, concurrency = HEADLINE
                capacity = _capacity(report, latency, concurrency) or concurrency / latency * 0.9
                report["e2e"] = scenarios.e2e_latency(
                    ctx,
                    web,
                    latency=latency,
                    concurrency=concurrency,
                    rate=capacity / 2,
                    duration=plan.e2e_seconds,
                )
                log(f"e2e added latency: {report['e2e']['added_ms']}")
                log(f"e2e breakdown: {report['e2e']['breakdown_p50_p95_ms']}")
            if "api" in only:
                if scenarios.ensure_wrk() is None:
                    report["api"] = {"skipped": "wrk is not installed: apt-get install wrk"}
                else:
                    report["api"] = scenarios.api(
                        ctx, web, duration=plan.wrk_seconds, connections=16
                    )
                    for row in report["api"]["rows"]:
                        log(f"api {row['name']}: {row['req_per_s']} req/s, p99 {row['p99_ms']} ms")
            rig.stop(web.process)

        if "memory" in only:
            report["memory"] = scenarios.memory(ctx, count=plan.memory_jobs, concurrency=64)
            log(f"memory: {report['memory']}")
    finally:
        rig.close()
        report["duration_s"] = round(time.monotonic() - began, 1)
    out = BENCH / "results" / f"{stamp}-{mode}.json"
    text = json.dumps(report, indent=2, default=str)
    out.write_text(text)
    (BENCH / "results" / f"latest-{mode}.json").write_text(text)
    report["json"] = str(out.relative_to(ROOT))
    return report


def _capacity(report: dict[str, Any], latency: float, concurrency: int) -> float | None:
    for cell in report.get("throughput", []):
        if cell["latency_s"] == latency and cell["concurrency"] == concurrency:
            return float(cell["jobs_per_s"])
    return None


def _cell_line(cell: dict[str, Any]) -> str:
    return (
        f"{cell['kind']:6} L={cell['latency_s']:<4} C={cell['concurrency']:<3} "
        f"{cell['jobs']:>5} jobs {cell['jobs_per_s']:>8} jobs/s "
        f"ratio {cell['ratio_to_ideal']} peak {cell['peak_rss_mib']} MiB "
        f"{'ok' if cell['correct'] else 'WRONG'}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (< 5 min) for checking")
    parser.add_argument(
        "--only",
        default="scale,throughput,peers,e2e,api,memory",
        help="comma-separated sections (default: all)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy each worker cell into the run's log folder"
    )
    args = parser.parse_args(argv)
    from bench.report import render

    report = run(
        QUICK if args.quick else FULL,
        "quick" if args.quick else "full",
        set(args.only.split(",")),
        profile=args.profile,
    )
    print(render(report))
    print(f"\nJSON: {report['json']}  ({report['duration_s']} s)")
    return 0 if report_correct(report) else 1


def report_correct(report: dict[str, Any]) -> bool:
    cells = [*report.get("throughput", []), *report.get("peers", []), *report.get("scale", [])]
    cells += [report[k] for k in ("e2e", "memory") if k in report]
    return all(cell.get("correct", False) for cell in cells)


if __name__ == "__main__":
    sys.exit(main())
