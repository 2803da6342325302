"""The API across a PostgreSQL restart: never a 500.

gunicorn as configured for production, its persistent database connections (CONN_MAX_AGE)
routed through a TCP proxy. Cutting every connection is what a restart of PostgreSQL does to
them: the next requests, once the database is back, are answered as usual (the connection is
health-checked and opened again), and while it is really down they get a JSON 503.
"""

from __future__ import annotations

import pytest
import requests

from questions.accounts import api_token_create
from tests.support import GUNICORN, database_proxy, free_port, production_env, serving

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_database_restart_costs_no_500(user, queues, artifacts):
    proxy, via_proxy = database_proxy()
    token = api_token_create(user=user, name="restart").key
    port = free_port()
    env = production_env(
        GUNICORN_BIND=f"127.0.0.1:{port}",
        GUNICORN_WORKERS="1",
        GUNICORN_THREADS="2",
        DATABASE_URL=via_proxy,
        DATABASE_CONN_MAX_AGE="600",
        QUESTIONS_THROTTLE_RATE="1000/hour",
        QUESTIONS_MAX_OPEN_PER_USER="100",
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("DATABASE_CONN_HEALTH_CHECKS", None)  # the default is what is tested
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Token {token}"}

    def ask(number: int) -> requests.Response:
        return requests.post(
            f"{base}/api/questions/",
            json={"question": f"Across the restart {number}?"},
            headers=headers,
            timeout=30,
        )

    try:
        with serving(GUNICORN, env=env, log_path=artifacts / "gunicorn.log", base_url=base):
            # Both threads hold a connection of their own before the restart.
            first = ask(0)
            assert first.status_code == 202, first.text
            assert [ask(n).status_code for n in range(1, 4)] == [202] * 3

            proxy.cut()  # the restart: every connection terminated...
            proxy.restore()  # ...and the server back at once
            assert [ask(n).status_code for n in range(4, 10)] == [202] * 6

            proxy.cut()  # really down
            down = ask(10)
            assert down.status_code == 503, down.text
            assert down.headers["Content-Type"].startswith("application/json")
            assert down.json()["error"] == "database_unavailable"
            assert int(down.headers["Retry-After"]) > 0
            assert "Traceback" not in down.text

            proxy.restore()
            assert [ask(n).status_code for n in range(11, 14)] == [202] * 3
    finally:
        proxy.cut()
