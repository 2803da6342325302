"""ASGI entry point: the `events` process (uvicorn) that serves `/api/questions/{id}/events`.

The same Django project as config.wsgi; nginx sends only the Server-Sent Events path here, where
a watcher costs a coroutine instead of a gunicorn thread. Django's request spans are left out:
a stream lives as long as its job, and the OpenTelemetry Django middleware needs an extra ASGI
package for little use here (the job's own trace covers the work).
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from config.telemetry import configure_telemetry  # noqa: E402

configure_telemetry("questions-events")
_django = get_asgi_application()


async def application(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Django's handler without its per-request thread.

    Django runs each request's synchronous parts (middleware, the view that authenticates and
    loads the job) in a thread of that request's own, which lives as long as the request: for
    an event stream, the whole answer. A thousand watchers were a thousand idle threads (about
    100 KiB each, measured by bench/streaming.py). Here those short synchronous parts share
    asgiref's one thread instead; the streams themselves run on the event loop.
    """
    if scope["type"] != "http":
        raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
    await _django.handle(scope, receive, send)
