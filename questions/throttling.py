"""The per-user limit on asking (each question costs money), for the API and the page alike."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured
from rest_framework.settings import api_settings
from rest_framework.throttling import UserRateThrottle

from questions.metrics import CACHE_FALLBACKS


class AskRateThrottle(UserRateThrottle):
    """`QUESTIONS_THROTTLE_RATE` per user. Counts live in Redis; if Redis is down it lets
    requests through (counted as a cache fallback) rather than refusing every question."""

    scope = "ask"

    def get_rate(self) -> str | None:
        # Read the setting at call time: DRF binds THROTTLE_RATES once, at import, so a rate
        # changed later (override_settings in tests) would otherwise go unseen.
        try:
            return api_settings.DEFAULT_THROTTLE_RATES[self.scope]
        except KeyError:
            raise ImproperlyConfigured(f"No throttle rate set for scope {self.scope!r}.") from None

    def allow_request(self, request: Any, view: Any) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            CACHE_FALLBACKS.labels(operation="throttle").inc()
            return True
