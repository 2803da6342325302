"""WSGI entry point for gunicorn. Telemetry is set up before Django loads its middleware."""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from config.telemetry import configure_telemetry  # noqa: E402

configure_telemetry("questions-web", instrument_django=True)
application = get_wsgi_application()
