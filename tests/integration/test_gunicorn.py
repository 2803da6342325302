"""gunicorn as configured for production, with several processes: /metrics still counts the
whole replica (prometheus_client multiprocess mode, set up by config/gunicorn.conf.py)."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.support import GUNICORN, free_port, production_env, serving

pytestmark = pytest.mark.django_db(transaction=True)


def _get_count(metrics: str) -> float:
    pattern = r'^django_http_requests_total_by_method_total\{method="GET"\} ([0-9.e+]+)$'
    match = re.search(pattern, metrics, re.M)
    return float(match.group(1)) if match else 0.0


def test_two_processes_share_one_metrics_view(queues, artifacts):
    port = free_port()
    env = production_env(
        GUNICORN_BIND=f"127.0.0.1:{port}", GUNICORN_WORKERS="2", GUNICORN_THREADS="2"
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    base = f"http://127.0.0.1:{port}"
    with serving(GUNICORN, env=env, log_path=artifacts / "gunicorn.log", base_url=base):
        before = _get_count(requests.get(f"{base}/metrics", timeout=5).text)
        # 80 requests on fresh connections from 8 threads at once: both processes take some.
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(
                    lambda _: requests.get(f"{base}/healthz", timeout=10).status_code, range(80)
                )
            )
        assert statuses == [200] * 80
        # Every scrape, whichever process answers it, counts all 80 (+ the scrapes themselves).
        for _ in range(6):
            after = _get_count(requests.get(f"{base}/metrics", timeout=5).text)
            assert after - before >= 80
        workers = {
            line.split("pid: ")[1].split('"')[0]
            for line in (artifacts / "gunicorn.log").read_text().splitlines()
            if "Booting worker with pid" in line
        }
        assert len(workers) == 2
