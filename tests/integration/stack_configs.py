"""The committed nginx and Prometheus configs, rendered for a run on this machine.

Only what must differ on loopback is substituted: nginx's upstream servers, listen address and
the lines marked `# path`; Prometheus's targets and scrape interval. Everything else (timeouts,
limits, headers, /metrics denial, metrics paths) is the file docker-compose.yml uses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT

NGINX_CONF = ROOT / "nginx" / "nginx.conf"
PROMETHEUS_YML = ROOT / "observability" / "prometheus.yml"
DASHBOARD = ROOT / "observability" / "grafana" / "dashboards" / "questions.json"
COMPOSE_FILE = ROOT / "docker-compose.yml"

_DIRECTIVE = re.compile(
    r"^(\s*)(\S+)\s+(\S+)(.*?);\s*#\s*(path|upstream|events-upstream|listen)\s*$"
)


def render_nginx_conf(
    *,
    workdir: Path,
    listen: str,
    upstreams: Sequence[str],
    static_root: Path,
    events_upstreams: Sequence[str] | None = None,
) -> Path:
    """nginx/nginx.conf with loopback upstreams, a loopback listen and paths under `workdir`.

    `events_upstreams` are the events (ASGI) processes; without them, the web replicas stand in.
    """
    paths: Mapping[str, str] = {
        "pid": str(workdir / "nginx.pid"),
        "error_log": str(workdir / "error.log"),
        "include": "/etc/nginx/mime.types",
        "access_log": str(workdir / "access.log"),
        "alias": f"{static_root}/",
    }
    out: list[str] = []
    seen: dict[str, int] = {"path": 0, "upstream": 0, "events-upstream": 0, "listen": 0}
    for line in NGINX_CONF.read_text().splitlines():
        match = _DIRECTIVE.match(line)
        if not match:
            out.append(line)
            continue
        indent, directive, _value, rest, marker = match.groups()
        seen[marker] += 1
        if marker == "path":
            out.append(f"{indent}{directive} {paths[directive]}{rest};")
        elif marker == "listen":
            out.append(f"{indent}listen {listen};")
        elif marker == "events-upstream":
            addresses = events_upstreams or upstreams
            out.extend(f"{indent}server {address}{rest};" for address in addresses)
        elif seen["upstream"] == 1:  # the first upstream line stands for all of them
            out.extend(f"{indent}server {address}{rest};" for address in upstreams)
    assert seen == {"path": len(paths), "upstream": 2, "events-upstream": 1, "listen": 1}, (
        f"nginx/nginx.conf changed shape; update tests/integration/stack_configs.py: {seen}"
    )
    if os.geteuid() == 0:
        # As root, nginx's workers would run as www-data and could not read a checkout in a
        # private folder (mktemp -d is 0700): keep them as the test's own user.
        out.insert(0, "user root;")
    rendered = workdir / "nginx.conf"
    rendered.write_text("\n".join(out) + "\n")
    return rendered


def render_prometheus_yml(
    *, workdir: Path, targets: Mapping[str, Sequence[str]], scrape_interval: str = "1s"
) -> Path:
    """observability/prometheus.yml scraping `targets` (job name → host:port) at a short interval.

    Jobs of the compose file that have no process here (the collector) are left out.
    """
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = scrape_interval
    config["global"]["evaluation_interval"] = scrape_interval
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] in targets:
            job["static_configs"] = [{"targets": list(targets[job["job_name"]])}]
            jobs.append(job)
    missing = set(targets) - {job["job_name"] for job in jobs}
    assert not missing, f"observability/prometheus.yml has no scrape job {missing}"
    config["scrape_configs"] = jobs
    rendered = workdir / "prometheus.yml"
    rendered.write_text(yaml.safe_dump(config, sort_keys=False))
    return rendered


_PROMQL_WORDS = {
    # functions and aggregations the dashboard may use
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "delta", "histogram_quantile",
    "clamp_min", "clamp_max", "topk", "bottomk", "abs", "vector", "scalar", "time", "sort_desc",
    "label_replace", "avg_over_time", "max_over_time", "sum_over_time", "absent",
    # keywords
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset",
}  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (a small lexer, enough for dashboards)."""
    expr = re.sub(r"\$\{?\w+\}?", " 1 ", expr)  # Grafana variables: $__rate_interval, $price
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set(re.findall(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr))
    return {name for name in names if name not in _PROMQL_WORDS}


def dashboard_exprs(dashboard: Mapping[str, Any]) -> list[str]:
    exprs: list[str] = []

    def walk(panels: Sequence[Mapping[str, Any]]) -> None:
        for panel in panels:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return exprs


def exposition_names(text: str) -> set[str]:
    """Every metric name a /metrics page offers, including families without samples yet."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "counter":  # the text format names the family with or without _total
                names.add(f"{name.removesuffix('_total')}_total")
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names
