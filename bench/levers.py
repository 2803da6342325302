"""One lever at a time: the same cells run by several versions of the worker, side by side, with
Celery in the same run. `python -m bench.levers --variant before=<commit> --variant after=HEAD`.

Each variant is a commit of this repository, extracted with `git archive` into the run's folder
and run from there (same venv, same database: the variants must share their migrations). The
cells interleave the variants (cell by cell, every variant, then Celery), so a machine that gets
busier mid-run weighs on all of them alike. Prints a Markdown table per cell; the JSON goes to
bench/results/<time>-levers.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

from bench.rig import BENCH, ROOT, Rig, prepare_database, setup_django
from bench.run import log, machine

# (L, C, N, processes): the cells of issue 17's goals.
DEFAULT_CELLS = "0.5:32:256:1,5:256:512:1,5:512:1024:1,5:512:2048:2"


def extract(commit: str, into: Path) -> Path:
    """The tree of `commit`, as files, in `into` (a worker runs from there)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=ROOT, capture_output=True, check=True
    ).stdout
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def parse_cells(text: str) -> list[tuple[float, int, int, int]]:
    cells = []
    for item in text.split(","):
        latency, concurrency, count, processes = (item.split(":") + ["", "", "1"])[:4]
        c = int(concurrency)
        cells.append((float(latency), c, int(count or 2 * c), int(processes or 1)))
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.levers", description=__doc__)
    parser.add_argument(
        "--variant", action="append", required=True, help="label=commit (repeat; in order)"
    )
    parser.add_argument("--cells", default=DEFAULT_CELLS, help="L:C:N:processes,… (C per process)")
    parser.add_argument("--no-celery", action="store_true", help="leave Celery out")
    parser.add_argument(
        "--profile", action="store_true", help="py-spy each worker cell into the run's log folder"
    )
    args = parser.parse_args(argv)

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    logdir = BENCH / "results" / stamp
    variants: list[tuple[str, str, Path]] = []
    for item in args.variant:
        label, _, commit = item.partition("=")
        sha = subprocess.run(
            ["git", "rev-parse", "--short", commit or "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        variants.append((label, sha, extract(sha, logdir / "trees" / label)))
    rig = Rig(logdir=logdir)
    report: dict[str, Any] = {"date": stamp, "machine": machine(), "cells": []}
    try:
        rig.start_services()
        env = rig.env("bench.django_settings")
        prepare_database(env)
        setup_django(env)
        from bench import jobs, scenarios

        owner, token = jobs.bench_user()
        ctx = scenarios.Ctx(rig=rig, owner=owner, token=token, profile=args.profile)
        for latency, concurrency, count, processes in parse_cells(args.cells):
            runs: list[tuple[str, str, Path | None]] = [*variants]
            if not args.no_celery and processes == 1:
                runs.append(("celery", "", None))
            for label, sha, code in runs:
                began = time.monotonic()
                try:
                    cell = scenarios.throughput_cell(
                        ctx,
                        kind="celery" if code is None else "worker",
                        latency=latency,
                        concurrency=concurrency,
                        count=count,
                        processes=processes,
                        code=code or ROOT,
                    )
                except (RuntimeError, TimeoutError) as exc:
                    # One cell that does not finish (a consumer that died or hung) is reported
                    # as such; the other variants' cells still run.
                    log(f"{label:>14} L={latency} C={concurrency}×{processes}: FAILED: {exc}")
                    report["cells"].append(
                        _failed_cell(label, sha, latency, concurrency, count, processes, str(exc))
                    )
                    continue
                cell.update(variant=label, commit=sha, load=round(_load(), 2))
                report["cells"].append(cell)
                log(
                    f"{label:>14} L={latency} C={concurrency}×{processes} N={count}: "
                    f"ratio {cell['ratio_to_ideal']}, CPU {cell['cpu_ms_per_job_after_start']} "
                    f"ms/job, RSS {cell['peak_rss_mib']} MiB, in job {cell.get('in_job_ms')} ms, "
                    f"refill {cell.get('refill_ms')} ms, {'ok' if cell['correct'] else 'WRONG'} "
                    f"({time.monotonic() - began:.0f} s)"
                )
    finally:
        rig.close()
    out = BENCH / "results" / f"{stamp}-levers.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(render(report))
    print(f"\nJSON: {out.relative_to(ROOT)}")
    return 0 if all(cell["correct"] for cell in report["cells"]) else 1


def _failed_cell(
    label: str,
    sha: str,
    latency: float,
    concurrency: int,
    count: int,
    processes: int,
    error: str,
) -> dict[str, Any]:
    return {
        "variant": label,
        "commit": sha,
        "latency_s": latency,
        "concurrency": concurrency,
        "processes": processes,
        "jobs": count,
        "error": error,
        "ratio_to_ideal": None,
        "cpu_ms_per_job_after_start": None,
        "peak_rss_mib": None,
        "correct": False,
    }


def _load() -> float:
    import os

    return os.getloadavg()[0]


def render(report: dict[str, Any]) -> str:
    lines = [
        f"Levers {report['date']}: {report['machine']['cores']} cores, "
        f"load at start {report['machine']['load_at_start'][0]:.2f}",
        "",
        "| cell (L, C×processes, N) | variant | commit | ratio to C/L | CPU ms/job | peak RSS MiB "
        "| in job beyond L, p50 ms | refill p50 ms | one call per job |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for cell in report["cells"]:
        lines.append(
            f"| {cell['latency_s']} s, {cell['concurrency']}×{cell['processes']}, {cell['jobs']} "
            f"| {cell['variant']} | {cell['commit']} | {cell['ratio_to_ideal']} "
            f"| {cell['cpu_ms_per_job_after_start']} | {cell['peak_rss_mib']} "
            f"| {cell.get('in_job_ms')} | {cell.get('refill_ms')} "
            f"| {'✅' if cell['correct'] else '❌'} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
