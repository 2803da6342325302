"""gunicorn settings for one web replica: `gunicorn config.wsgi -c config/gunicorn.conf.py`.

One worker process with threads per replica, on purpose: django-prometheus keeps its counters
in process memory, so with one process a scrape of the replica sees all of its requests. Several
processes would need prometheus_client's multiprocess mode (a shared directory that must be
wiped at each start, gauges that need a merge mode, no exemplars). The work is I/O (PostgreSQL,
Redis, SQS), so threads serve it well; scale out with more replicas behind nginx.

Logs: JSON lines on stdout, the same shape as Django's (config.logging). No access log here:
nginx writes one per request, with the request id.
"""

from __future__ import annotations

from config.env import env_int, env_str

bind = env_str("GUNICORN_BIND", default="0.0.0.0:8000")
workers = 1
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
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "config.logging.ContextFilter"}},
    "formatters": {"json": {"()": "config.logging.JsonFormatter"}},
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "filters": ["context"],
            "formatter": "json",
        }
    },
    "root": {"handlers": ["stdout"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": "INFO", "propagate": False},
        # A dictConfig turns gunicorn's access log on; WARNING keeps it quiet (see above).
        "gunicorn.access": {"handlers": ["stdout"], "level": "WARNING", "propagate": False},
    },
}
