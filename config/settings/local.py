"""`make run`: DEBUG on, readable logs, a throwaway secret key."""

from __future__ import annotations

from config.env import env_bool, env_str

from .base import *  # noqa: F403
from .base import LOGGING

DEBUG = env_bool("DJANGO_DEBUG", default=True)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", default="django-insecure-local-only-not-for-production")
LOGGING["handlers"]["stdout"]["formatter"] = env_str("LOG_FORMAT", default="console")
