"""python -m bench.soak [--short | --jobs N] [--record [--note TEXT]] [--json PATH] [--keep]

Exits 0 when every invariant holds, 1 when one fails (the table says which)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from bench.soak import plan as plans
from bench.soak.run import run

RESULTS = Path(__file__).resolve().parents[1] / "RESULTS.md"


def table(report: dict[str, Any]) -> str:
    lines = ["| check | measured | limit | |", "|---|---|---|---|"]
    for check in report["checks"]:
        mark = "" if check["ok"] is None else ("pass" if check["ok"] else "**FAIL**")
        lines.append(f"| {check['name']} | {check['value']} | {check['limit']} | {mark} |")
    return "\n".join(lines)


def summary(report: dict[str, Any]) -> str:
    figures = report["figures"]
    faults = ", ".join(f"{kind} ×{n}" for kind, n in figures["fault_counts"].items())
    watchers = figures["watchers"]
    provider = figures["provider"]
    drained_after = figures["drained_after_s"]
    drained = "NOT (deadline)" if drained_after is None else f"in {drained_after} s"
    return "\n".join(
        [
            f"Faults dealt: {faults}.",
            f"Provider: {provider['calls']:,} calls, {provider['paid']:,} paid; answers by kind "
            f"{figures['provider_kinds']}.",
            f"POSTs: {figures['posts']} (transport errors {figures['post_transport_errors']}, "
            f"gave up {figures['post_gave_up']}); Stops: {figures['cancels']}.",
            f"Watchers ({watchers['count']}): {watchers['watched_to_end']:,} jobs followed to "
            f"their end, {watchers['reconnects']:,} reconnects, statuses {watchers['statuses']}.",
            f"Load {figures['load_seconds']} s, drained {drained}, "
            f"{figures['total_seconds']} s in all.",
        ]
    )


def record(report: dict[str, Any], note: str = "") -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    plan = report["plan"]
    section = [
        "",
        f"## Chaos soak ({plan['label']}): {stamp}" + (f", {note}" if note else ""),
        "",
        f"`make soak`: {plan['jobs']:,} questions from {plan['users']} users, "
        f"{plan['supervisors']}×{plan['processes']} worker processes × {plan['concurrency']} "
        f"slots, {plan['watchers']} watchers on the events process; OPENAI_TIMEOUT "
        f"{plan['openai_timeout']:g} s, lease {plan['openai_timeout'] + plan['claim_margin']:g} s.",
        "",
        table(report),
        "",
        summary(report),
        "",
    ]
    with RESULTS.open("a") as results:
        results.write("\n".join(section))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--short", action="store_true", help="1,000 jobs, about 3 minutes")
    size.add_argument("--jobs", type=int, default=10_000, help="questions (default 10,000)")
    parser.add_argument("--record", action="store_true", help="append to bench/RESULTS.md")
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--note", default="", help="words for the RESULTS.md heading")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and its logs")
    args = parser.parse_args(argv)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # unwinds the run's cleanup: processes, clusters, temp dirs

    signal.signal(signal.SIGTERM, interrupted)
    plan = plans.short() if args.short else plans.full(args.jobs)
    report = run(plan, keep=args.keep, progress=lambda line: print(line, flush=True))
    print(table(report))
    print(summary(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if args.record:
        record(report, args.note)
    print("soak: every invariant holds" if report["ok"] else "soak: an invariant FAILED")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
