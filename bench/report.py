"""The report as Markdown tables (printed by bench.run and pasted into bench/RESULTS.md)."""

from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join("" if v is None else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "✅" if ok else "❌"


def _find(cells: list[dict[str, Any]], kind: str, latency: float, concurrency: int) -> dict | None:
    for cell in cells:
        if (cell["kind"], cell["latency_s"], cell["concurrency"]) == (kind, latency, concurrency):
            return cell
    return None


def render(report: dict[str, Any]) -> str:
    out: list[str] = [
        f"Benchmark ({report['mode']}) {report['date']}: {report['machine']['cores']} cores, "
        f"{report['machine']['ram_gib']} GiB RAM, run took {report.get('duration_s')} s"
    ]
    scale = report.get("scale", [])
    if scale:
        targets = {(0.5, 32): 0.93, (5.0, 64): 0.95, (5.0, 256): 0.9, (5.0, 512): 0.85}
        rows = []
        for ours in (c for c in scale if c["kind"] == "worker"):
            key = (ours["latency_s"], ours["concurrency"])
            celery = _find(scale, "celery", *key)
            target = targets.get(key)
            rows.append(
                [
                    ours["latency_s"],
                    ours["concurrency"],
                    ours["jobs"],
                    ours["ratio_to_ideal"],
                    f"≥ {target} {_mark(ours['ratio_to_ideal'] >= target)}" if target else "",
                    ours.get("cpu_ms_per_job_after_start"),
                    ours["cpu_ms_per_job"],
                    ours["peak_rss_mib"],
                    celery["ratio_to_ideal"] if celery else None,
                    celery.get("cpu_ms_per_job_after_start") if celery else None,
                    celery["peak_rss_mib"] if celery else None,
                    _mark(ours["correct"] and (celery is None or celery["correct"])),
                ]
            )
        out += [
            "",
            "### 0. Hundreds of calls in flight: one worker process and Celery (threads pool), "
            "N = 2·C jobs, ratio to C/L",
            "",
            _table(
                [
                    "L (s)",
                    "C",
                    "jobs",
                    "worker ratio",
                    "target",
                    "worker CPU ms/job (after start)",
                    "(with start-up)",
                    "worker peak RSS MiB",
                    "Celery ratio",
                    "Celery CPU ms/job (after start)",
                    "Celery peak RSS MiB",
                    "correct",
                ],
                rows,
            ),
        ]
        big = _find(scale, "worker", 5.0, 512)
        if big:
            out.append(
                f"\nPeak RSS at C = 512: {big['peak_rss_mib']} MiB (target < 250) "
                f"{_mark(big['peak_rss_mib'] < 250)}; CPU target ≤ 5 ms/job."
            )
    cells = report.get("throughput", [])
    if cells:
        bare = report["bare_drain"]["msgs_per_s"]
        out += [
            "",
            f"### 1. Worker throughput (ideal: C/L; for L = 0 the bare boto3 receive→delete "
            f"loop on the same server, {bare} msgs/s)",
            "",
            _table(
                [
                    "L (s)",
                    "C",
                    "jobs",
                    "jobs/s",
                    "ideal",
                    "ratio",
                    "CPU ms/job",
                    "peak RSS MiB",
                    "correct",
                ],
                [
                    [
                        c["latency_s"],
                        (
                            f"{c['processes']} × {c['concurrency']}"
                            if c.get("processes", 1) > 1
                            else c["concurrency"]
                        ),
                        c["jobs"],
                        c["jobs_per_s"],
                        c["ideal_jobs_per_s"] or f"{bare} (bare loop)",
                        c["ratio_to_ideal"],
                        c["cpu_ms_per_job"],
                        c["peak_rss_mib"],
                        _mark(c["correct"]),
                    ]
                    for c in cells
                ],
            ),
        ]
        head = _find(cells, "worker", 0.5, 32)
        if head:
            out.append(
                f"\nTarget ≥ 0.9 · C/L at C = 32, L = 0.5 s: {head['ratio_to_ideal']} "
                f"{_mark(head['ratio_to_ideal'] >= 0.9)}"
            )
        scaled = next((c for c in cells if c.get("processes", 1) > 1), None)
        if scaled:
            out.append(
                f"Scaled out, the same 32 slots as {scaled['processes']} processes × "
                f"{scaled['concurrency']}: {scaled['ratio_to_ideal']} "
                f"{_mark(scaled['ratio_to_ideal'] >= 0.9)}"
            )
    peers = report.get("peers", [])
    if peers and cells:
        rows = []
        for peer in peers:
            ours = _find(cells, "worker", peer["latency_s"], peer["concurrency"])
            if peer["kind"] == "seed":
                ours = _find(cells, "worker", peer["latency_s"], 32) or ours
            rows.append(
                [
                    peer["kind"],
                    peer["latency_s"],
                    peer["concurrency"] if peer["kind"] != "seed" else "1 (sequential)",
                    peer["jobs"],
                    peer["jobs_per_s"],
                    peer["cpu_ms_per_job"],
                    ours["concurrency"] if ours else None,
                    ours["jobs_per_s"] if ours else None,
                    round(ours["jobs_per_s"] / peer["jobs_per_s"], 2) if ours else None,
                    _mark(peer["correct"]),
                ]
            )
        out += [
            "",
            "### 2. Peers on the same rig (seed = one message per receive, sequential; "
            "Celery threads pool on kombu's SQS transport, same server)",
            "",
            _table(
                [
                    "peer",
                    "L (s)",
                    "C",
                    "jobs",
                    "peer jobs/s",
                    "peer CPU ms/job",
                    "our C",
                    "ours jobs/s",
                    "ours ÷ peer",
                    "correct",
                ],
                rows,
            ),
        ]
    e2e = report.get("e2e")
    if e2e:
        added = e2e["added_ms"]
        out += [
            "",
            "### 3. End-to-end added latency (POST → job succeeded − L), "
            f"L = {e2e['latency_s']} s, C = {e2e['concurrency']}, "
            f"{e2e['rate_per_s']} POST/s (half the measured capacity)",
            "",
            _table(
                ["jobs", "p50 ms", "p95 ms", "p99 ms", "mean ms", "correct"],
                [
                    [
                        e2e["jobs"],
                        added["p50"],
                        added["p95"],
                        added["p99"],
                        added["mean"],
                        _mark(e2e["correct"]),
                    ]
                ],
            ),
            f"\nTargets p50 < 50 ms {_mark(added['p50'] < 50)}, p95 < 250 ms "
            f"{_mark(added['p95'] < 250)}",
        ]
    api = report.get("api")
    if api and "rows" in api:
        out += [
            "",
            f"### 4. API through gunicorn ({api['gunicorn']}), wrk {api['connections']} "
            f"connections × {api['duration_s']} s each",
            "",
            _table(
                ["endpoint", "req/s", "p50 ms", "p99 ms", "÷ bare view", "non-2xx"],
                [
                    [
                        r["name"],
                        r["req_per_s"],
                        r["p50_ms"],
                        r["p99_ms"],
                        r["ratio_to_bare"],
                        r["non_2xx"] + r["socket_errors"],
                    ]
                    for r in api["rows"]
                ],
            ),
        ]
        by = {r["name"]: r for r in api["rows"]}
        out.append(
            f"\nTargets POST ≥ 0.5 × bare {_mark(by['post']['ratio_to_bare'] >= 0.5)}, "
            f"GET cache hit ≥ 0.8 × bare {_mark(by['get_cache_hit']['ratio_to_bare'] >= 0.8)}"
        )
    elif api:
        out += ["", f"### 4. API: {api.get('skipped')}"]
    memory = report.get("memory")
    if memory:
        out += [
            "",
            f"### 5. Worker memory, C = {memory['concurrency']}, L = 0, {memory['jobs']} jobs "
            f"({memory['jobs_per_s']} jobs/s)",
            "",
            _table(
                [
                    "peak RSS MiB",
                    "RSS at 10 %",
                    "at 50 %",
                    "at end",
                    "growth 10 %→end",
                    "growth 50 %→end",
                    "correct",
                ],
                [
                    [
                        memory["peak_rss_mib"],
                        memory["rss_at_10pct_mib"],
                        memory["rss_at_50pct_mib"],
                        memory["rss_at_end_mib"],
                        memory["growth_10pct_to_end_mib"],
                        memory["growth_50pct_to_end_mib"],
                        _mark(memory["correct"]),
                    ]
                ],
            ),
            f"\nTarget peak < 150 MB {_mark(memory['peak_rss_mib'] * 1.048576 < 150)}",
        ]
    return "\n".join(out)


def main() -> None:
    """`python -m bench.report [results.json]`: the tables of a finished run again."""
    import json
    import sys
    from pathlib import Path

    path = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/latest-full.json")
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
