"""gunicorn settings for one web replica: `gunicorn config.wsgi -c config/gunicorn.conf.py`.

`GUNICORN_WORKERS` processes (default 1) with `GUNICORN_THREADS` threads each. The work is I/O
(PostgreSQL, Redis, SQS), so threads serve it, but one process is one GIL: on a host with more
cores, more processes answer faster. With one process django-prometheus's counters live in its
memory and a scrape sees all of them; with several, prometheus_client's multiprocess mode is
switched on here (a fresh directory per start, dead workers' files marked on exit), so a scrape
of any process still sees the whole replica.

Logs: JSON lines on stdout, the same shape as Django's (config.logging). No access log here:
nginx writes one per request, with the request id.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

from config.env import env_int, env_str
from config.logging import logging_config

bind = env_str("GUNICORN_BIND", default="0.0.0.0:8000")
workers = env_int("GUNICORN_WORKERS", default=1)
if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    # Set before any worker imports prometheus_client (it reads this at import).
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="prometheus-")
worker_class = "gthread"
threads = env_int("GUNICORN_THREADS", default=8)
# A request that takes longer than this is stuck: the worker is restarted.
timeout = env_int("GUNICORN_TIMEOUT", default=30)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", default=20)
# Longer than nginx's upstream keepalive_timeout, so nginx closes idle connections first.
keepalive = 75
# nginx is the only client; it sets X-Forwarded-Proto.
forwarded_allow_ips = "*"
worker_tmp_dir = "/dev/shm"  # noqa: S108 (the heartbeat file; tmpfs avoids disk stalls)
accesslog = None
errorlog = "-"
# gunicorn's control socket lives in $HOME, which the container's user cannot write and which
# two replicas on one host would share; nothing here uses it.
control_socket_disable = True
loglevel = env_str("LOG_LEVEL", default="info").lower()
logconfig_dict = logging_config(
    level="INFO",
    loggers={
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        # A dictConfig turns gunicorn's access log on; WARNING keeps it quiet (see above).
        "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
)


def on_starting(server: Any) -> None:
    """Start with empty multiprocess metric files (a restart must not add old counts)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        os.makedirs(directory, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
