"""Test settings for a worker whose clock is off: `timezone.now()` runs TEST_CLOCK_SKEW_SECONDS
ahead (or behind). Leases must not depend on it: they are on the database's clock."""

from __future__ import annotations

import os
from datetime import timedelta

from django.utils import timezone

from config.settings.test import *  # noqa: F403

_SKEW = timedelta(seconds=float(os.environ.get("TEST_CLOCK_SKEW_SECONDS", "0")))
_real_now = timezone.now


def _skewed_now() -> object:
    return _real_now() + _SKEW


timezone.now = _skewed_now
