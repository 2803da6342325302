"""pytest: the real PostgreSQL and Redis on 127.0.0.1, fast password hashing."""

from __future__ import annotations

import os

import dj_database_url

from config.env import env_str

from .base import *  # noqa: F403
from .base import CACHES, REST_FRAMEWORK

SECRET_KEY = "test-secret-key-not-for-production"  # noqa: S105
DEBUG = False
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", default="postgres://postgres@127.0.0.1:5432/questions")
    )
}
CACHES["default"]["LOCATION"] = env_str("REDIS_URL", default="redis://127.0.0.1:6379/15")
# Worker subprocesses started by a test inherit the prefix, so they share its cache keys.
CACHES["default"]["KEY_PREFIX"] = env_str("CACHE_KEY_PREFIX", default=f"test-{os.getpid()}")
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"] = {"ask": "1000/minute"}
LOG_FORMAT = "json"
