"""ASGI entry point: the `events` process (uvicorn) that serves `/api/questions/{id}/events`.

The same Django project as config.wsgi; nginx sends only the Server-Sent Events path here, where
a watcher costs a coroutine instead of a gunicorn thread. Django's request spans are left out:
a stream lives as long as its job, and the OpenTelemetry Django middleware needs an extra ASGI
package for little use here (the job's own trace covers the work).
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from config.telemetry import configure_telemetry  # noqa: E402

configure_telemetry("questions-events")
application = get_asgi_application()
