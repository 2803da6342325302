"""pytest: the real PostgreSQL and Redis on 127.0.0.1, fast password hashing."""

from __future__ import annotations

import os

import dj_database_url

from config.env import env_int, env_str, postgres_timeouts

from .base import *  # noqa: F403
from .base import CACHES, DATABASE_CONNECT_TIMEOUT, DATABASE_STATEMENT_TIMEOUT

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
DEBUG = False
DATABASES = {
    "default": postgres_timeouts(
        dj_database_url.parse(
            env_str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/questions")
        ),
        connect_timeout=DATABASE_CONNECT_TIMEOUT,
        statement_timeout=DATABASE_STATEMENT_TIMEOUT,
    )
}
# One test database per test run, so two runs on one machine (a developer's and CI's) never
# drop each other's database. Worker subprocesses get the name through DATABASE_URL.
DATABASES["default"]["TEST"] = {
    "NAME": env_str(
        "TEST_DATABASE_NAME", default=f"test_{DATABASES['default']['NAME']}_{os.getpid()}"
    )
}
CACHES["default"]["LOCATION"] = env_str("REDIS_URL", default="redis://127.0.0.1:6379/15")
# Subprocesses started by a test (test or production settings) inherit the prefix, so they share
# its cache keys, and no other test process (pytest-xdist's, another run's) shares them.
CACHES["default"]["KEY_PREFIX"] = env_str("CACHE_KEY_PREFIX", default=f"test-{os.getpid()}")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Generous limits on asking, unless a test (or the environment of a subprocess) sets its own.
QUESTIONS_THROTTLE_RATE = env_str("QUESTIONS_THROTTLE_RATE", default="1000/minute")
QUESTIONS_MAX_OPEN_PER_USER = env_int("QUESTIONS_MAX_OPEN_PER_USER", default=1000)
# Each test sees readiness as it is now (tests/integration/test_health.py turns the reuse on
# to test it).
READYZ_CACHE_SECONDS = 0.0
