"""What must hold after the soak, computed from the job rows, the provider's own call log, the
fault log and the samples. Each check is a row of the report: a figure, its limit, pass or not."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from bench.soak.chaos import Fault, Samples
from bench.soak.load import Posted
from bench.soak.plan import Plan
from bench.soak.provider import answer_words, is_paid

FINAL = {"succeeded", "failed", "cancelled"}
# A call is "hit" by a kill -9 when it was running at that moment and was cut within this many
# seconds after it (the fake notices a client gone within a quarter of a second).
KILL_HIT_WINDOW = 3.0
# How much slower than the deadline a call may be seen to give up on a loaded 2-core machine.
PORT_REUSE_GUARD = 30.0
DEADLINE_SLACK = 3.0
RSS_WARMUP = 30.0


@dataclass
class Check:
    name: str
    value: str
    limit: str
    ok: bool | None  # None: a figure, not an invariant


@dataclass
class JobRow:
    id: str
    owner_id: int
    status: str
    has_answer: bool
    error: str
    attempts: int
    cost: Decimal | None


def job_rows() -> dict[str, JobRow]:
    from questions.models import Question

    return {
        str(row["id"]): JobRow(
            id=str(row["id"]),
            owner_id=row["owner_id"],
            status=row["status"],
            has_answer=bool(row["answer"]),
            error=row["error"],
            attempts=row["attempts"],
            cost=row["cost"],
        )
        for row in Question.objects.values(
            "id", "owner_id", "status", "answer", "error", "attempts", "cost"
        )
    }


def ledger_summary() -> dict[str, Any] | None:
    """The ledger of provider calls (`questions.LLMCall`), if this code has one: rows, total
    cost, cost per user, rows per outcome."""
    from django.apps import apps
    from django.db import connection
    from django.db.models import Sum

    model = next(
        (m for m in apps.get_app_config("questions").get_models() if m.__name__ == "LLMCall"), None
    )
    if model is None:
        return None
    if model._meta.db_table not in connection.introspection.table_names():
        return None
    fields = {f.name for f in model._meta.get_fields()}
    summary: dict[str, Any] = {"rows": model._default_manager.count()}
    if "cost" in fields:
        summary["cost"] = model._default_manager.aggregate(total=Sum("cost"))["total"] or Decimal(0)
    user_field = next((name for name in ("user", "owner") if name in fields), None)
    if user_field and "cost" in fields:
        summary["by_user"] = {
            row[user_field]: row["total"] or Decimal(0)
            for row in model._default_manager.values(user_field).annotate(total=Sum("cost"))
        }
    if "outcome" in fields:
        summary["by_outcome"] = dict(
            Counter(model._default_manager.values_list("outcome", flat=True))
        )
    return summary


def _hit_by_a_kill(call: dict[str, Any], kills: list[Fault]) -> bool:
    """A kill -9 struck the process that made the call before it was done with it: the call's
    connection was open in the killed process at the kill, or closed there in the seconds before
    it (the fake closes a streamed answer's connection at its end: the answer was read, but
    perhaps not yet stashed or stored). Without the ports: the call was cut just after the
    kill."""
    ended = call.get("ended_at")
    if ended is None:
        return False
    for kill in kills:
        if not call["received_at"] <= kill.at + 0.5:
            continue
        ports = kill.detail.get("ports")
        if ports is not None:
            # (a port is reused only long after: the guard keeps an old call off a new kill)
            if call.get("client_port") in ports and ended >= kill.at - PORT_REUSE_GUARD:
                return True
        elif call.get("outcome") == "cut" and kill.at - 0.5 <= ended <= kill.at + KILL_HIT_WINDOW:
            return True
    return False


def _call_summary(call: dict[str, Any], kills: list[Fault]) -> dict[str, Any]:
    def at(key: str) -> float | None:
        value = call.get(key)
        return None if value is None else round(value, 2)

    return {
        "received_at": at("received_at"),
        "content_at": at("content_at"),
        "ended_at": at("ended_at"),
        "status": call.get("status"),
        "outcome": call.get("outcome"),
        "port": call.get("client_port"),
        "hit_by_kill": _hit_by_a_kill(call, kills),
    }


def _quartiles(values: list[float]) -> tuple[float, float]:
    quarter = max(1, len(values) // 4)
    return statistics.median(values[:quarter]), statistics.median(values[-quarter:])


def evaluate(
    *,
    plan: Plan,
    posted: list[Posted],
    rows: dict[str, JobRow],
    calls: list[dict[str, Any]],
    faults: list[Fault],
    samples: Samples,
    ledger: dict[str, Any] | None,
    pool: int,
    price_per_token: Decimal,
    final_exits: dict[str, int | None],
) -> tuple[list[Check], dict[str, Any]]:
    checks: list[Check] = []
    figures: dict[str, Any] = {}
    accepted = [p for p in posted if p.job_id]
    by_n = {p.n: p for p in accepted}

    # --- every job ends, with a reason; none lost --------------------------------------------
    statuses = Counter(rows[p.job_id].status if p.job_id in rows else "missing" for p in accepted)
    figures["jobs"] = {
        "asked": len(posted),
        "accepted": len(accepted),
        "refused": dict(Counter(p.refusal for p in posted if p.refusal)),
        "statuses": dict(statuses),
    }
    with_reason = 0
    for p in accepted:
        row = rows.get(p.job_id or "")
        if row is None or row.status not in FINAL:
            continue
        if (
            (row.status == "succeeded" and row.has_answer)
            or (row.status == "failed" and row.error)
            or row.status == "cancelled"
        ):
            with_reason += 1
    lost = statuses["missing"] + statuses["queued"] + statuses["running"]
    figures["open_jobs"] = [
        p.job_id for p in accepted if p.job_id not in rows or rows[p.job_id].status not in FINAL
    ][:20]
    checks.append(
        Check("jobs finished (final, with a reason)", f"{with_reason:,} / {len(accepted):,}",
              "all", with_reason == len(accepted) and bool(accepted))
    )  # fmt: skip
    checks.append(
        Check("jobs lost (no row, or still queued/running)", f"{lost:,}"
              f" (queued {statuses['queued']}, running {statuses['running']})", "0", lost == 0)
    )  # fmt: skip
    checks.append(
        Check(
            "job statuses", ", ".join(f"{k} {v:,}" for k, v in sorted(statuses.items())), "", None
        )
    )

    # --- paid calls per job -------------------------------------------------------------------
    kills = [f for f in faults if f.kind == "kill -9" and f.detail.get("pid")]
    paid: Counter[int] = Counter()
    hits: Counter[int] = Counter()
    for call in calls:
        n = call.get("n")
        if n is None:
            continue
        if is_paid(call):
            paid[n] += 1
        if _hit_by_a_kill(call, kills):
            hits[n] += 1
    over = sorted(n for n in paid if paid[n] > 1 + hits[n])
    distribution = Counter(paid[p.n] for p in accepted)
    figures["paid_calls_per_job"] = dict(sorted(distribution.items()))
    figures["kill_hits"] = sum(hits.values())
    figures["jobs_paid_more_than_allowed"] = {
        by_n[n].job_id: [_call_summary(c, kills) for c in calls if c.get("n") == n]
        for n in over[:20]
        if n in by_n
    }
    checks.append(
        Check(
            "paid calls per job (max; distribution)",
            f"max {max(paid.values(), default=0)}; "
            + ", ".join(f"{k}×{v:,}" for k, v in sorted(distribution.items())),
            "≤ 1 + kills mid-call",
            not over,
        )
    )
    checks.append(
        Check("jobs paid more than 1 + kills mid-call", f"{len(over):,} ({sum(hits.values())} "
              f"calls hit by {len(kills)} kill -9)", "0", not over)
    )  # fmt: skip

    # --- the ledger against the provider's own count ------------------------------------------
    paid_calls = [c for c in calls if is_paid(c)]
    figures["provider"] = {
        "calls": len(calls),
        "paid": len(paid_calls),
        "outcomes": dict(Counter(f"{c.get('status')} {c.get('outcome')}" for c in calls)),
    }
    # The ledger has a row per call made, paid or not (a 429 or a 5xx costs nothing but is
    # a row); a call cut off by kill -9 can have none (its worker died with it), any other must.
    cut_by_kills = sum(1 for call in calls if _hit_by_a_kill(call, kills))
    figures["provider"]["cut_by_kill_9"] = cut_by_kills
    if ledger is not None:
        figures["ledger"] = {
            k: str(v) if isinstance(v, Decimal) else v for k, v in ledger.items() if k != "by_user"
        }
        rows_ok = len(calls) - cut_by_kills <= ledger["rows"] <= len(calls)
        checks.append(
            Check("ledger rows = provider's calls",
                  f"{ledger['rows']:,} vs {len(calls):,} ({cut_by_kills} cut by kill -9; "
                  f"ledger by outcome {ledger.get('by_outcome', '?')})",
                  "equal, less the calls kill -9 cut", rows_ok)
        )  # fmt: skip
    else:
        costed = sum(1 for r in rows.values() if r.cost is not None)
        checks.append(
            Check("ledger = provider's paid calls (PENDING: no ledger table; jobs with a cost "
                  "shown)", f"{costed:,} vs {len(paid_calls):,}", "equal",
                  costed == len(paid_calls))
        )  # fmt: skip

    # --- budgets ------------------------------------------------------------------------------
    owner_of = {p.n: p.user for p in accepted}
    billed: dict[int, Decimal] = defaultdict(Decimal)
    largest: dict[int, Decimal] = defaultdict(Decimal)
    for call in paid_calls:
        user = owner_of.get(call.get("n", -1))
        if user is None:
            continue
        cost = (call.get("prompt_words", 0) + answer_words()) * price_per_token
        billed[user.id] += cost
        largest[user.id] = max(largest[user.id], cost)
    budget_users = {p.user.id: p.user for p in posted if p.user.budget is not None}
    above = {
        user.username: f"${billed[uid]:.4f} > ${user.budget}"
        for uid, user in budget_users.items()
        if user.budget is not None and billed[uid] > user.budget + largest[uid]
    }
    worst = max(
        (billed[uid] / u.budget for uid, u in budget_users.items() if u.budget), default=Decimal(0)
    )
    checks.append(
        Check("users above budget + one call (provider's bill)",
              f"{len(above)} of {len(budget_users)} budgeted (highest {worst:.0%} of budget)"
              + (f": {above}" if above else ""), "0", not above)
    )  # fmt: skip

    # --- time without progress ----------------------------------------------------------------
    stalls = []
    for call in calls:
        if call.get("status") not in (None, 200):
            continue
        end = call.get("content_at") or call.get("ended_at")
        if end is not None:
            stalls.append(end - call["received_at"])
    longest = max(stalls, default=0.0)
    checks.append(
        Check("longest call without content (a slot held, no progress)", f"{longest:.1f} s",
              f"≤ OPENAI_TIMEOUT {plan.openai_timeout:g} s (+{DEADLINE_SLACK:g})",
              longest <= plan.openai_timeout + DEADLINE_SLACK)
    )  # fmt: skip

    # --- PostgreSQL sessions ------------------------------------------------------------------
    peak = max((count for _, count in samples.pg), default=0)
    checks.append(
        Check("PostgreSQL sessions (peak of samples)", f"{peak} ({len(samples.pg)} samples)",
              f"≤ pool {pool}", peak <= pool and bool(samples.pg))
    )  # fmt: skip

    # --- RSS ------------------------------------------------------------------------------------
    by_pid: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)
    for t, role, pid, mib in samples.rss:
        by_pid[(role, pid)].append((t, mib))
    span = (max(t for t, *_ in samples.rss) - min(t for t, *_ in samples.rss)) if samples.rss else 0
    growth = []
    for (role, pid), all_samples in by_pid.items():
        # the first RSS_WARMUP s of a process are its imports and first requests, not growth
        series = [s for s in all_samples if s[0] >= all_samples[0][0] + RSS_WARMUP]
        lived = series[-1][0] - series[0][0] if series else 0
        if len(series) < 8 or lived < span / 2:
            continue
        first, last = _quartiles([mib for _, mib in series])
        growth.append((last - first, role, pid, first, last))
    growth.sort(reverse=True)
    figures["rss"] = [
        {
            "role": role,
            "pid": pid,
            "first_quartile_mib": round(a, 1),
            "last_quartile_mib": round(b, 1),
        }
        for _, role, pid, a, b in growth
    ]
    grew = [g for g in growth if g[4] > g[3] * 1.5 + 25]
    shown = "; ".join(f"{role} {a:.0f}→{b:.0f} MiB" for _, role, _, a, b in growth[:4])
    checks.append(
        Check("RSS, first vs last quartile (long-lived processes)",
              shown or "no process lived long enough", "flat (≤ ×1.5 + 25 MiB)", not grew)
    )  # fmt: skip

    # --- the workers' own stops ---------------------------------------------------------------
    stops = [f for f in faults if f.kind == "SIGTERM group"]
    ungraceful = [f.detail for f in stops if f.detail.get("exit_code") != 0]
    final_bad = {name: code for name, code in final_exits.items() if code != 0}
    checks.append(
        Check("SIGTERM to a worker's group: a graceful stop (exit 0)",
              f"{len(stops) - len(ungraceful)} of {len(stops)} during the run"
              + (f", not: {[(d.get('name'), d.get('exit_code')) for d in ungraceful]}"
                 if ungraceful else "")
              + (f"; at the end: {final_bad}" if final_bad else ""),
              "all", not ungraceful and not final_bad)
    )  # fmt: skip
    figures["fault_counts"] = dict(Counter(f.kind for f in faults))
    return checks, figures


def as_dicts(checks: list[Check]) -> list[dict[str, Any]]:
    return [asdict(c) for c in checks]
