"""WSGI entry point for gunicorn (and `manage.py runserver`, through WSGI_APPLICATION).
Telemetry is set up before Django loads its middleware."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import quote

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from config.telemetry import configure_telemetry  # noqa: E402

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def with_request_uri(app: WSGIApp) -> WSGIApp:
    """Give the environ a `REQUEST_URI` (the request target) when the server sets none.

    gunicorn sets `RAW_URI`; wsgiref's server, which runserver is, sets neither. OpenTelemetry's
    instrumentation then rebuilds the URL from `PATH_INFO` with wsgiref.util.request_uri, after
    Django has replaced PATH_INFO in the environ with its decoded path: a path beyond Latin-1
    (`/api/questions/%F3%89%8B%9F/`) made that a 500 instead of a 404. Here PATH_INFO is still
    the server's Latin-1 string, which quotes back to the bytes the client sent.
    """

    def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if "RAW_URI" not in environ and "REQUEST_URI" not in environ:
            path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
            target = quote(path, safe="/;=,", encoding="latin-1")
            if environ.get("QUERY_STRING"):
                target += "?" + environ["QUERY_STRING"]
            environ["REQUEST_URI"] = target
        return app(environ, start_response)

    return application


configure_telemetry("questions-web", instrument_django=True)
application = with_request_uri(get_wsgi_application())
