"""Production settings plus one bare view, for the API comparison only (never used by the app)."""

from __future__ import annotations

from config.settings.production import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
