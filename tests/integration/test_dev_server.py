"""`make run`'s web server: `manage.py runserver` serving config.wsgi, with OpenTelemetry's Django
instrumentation on, as scripts/run-local.sh starts it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import requests

from tests.support import child_env, free_port, serving

pytestmark = pytest.mark.django_db(transaction=True)

# What schemathesis sent: `%F3%89%8B%9F` decodes to U+C92DF, a character beyond Latin-1.
BEYOND_LATIN_1 = "/api/questions/%F3%89%8B%9F%C3%87Z/"


@pytest.mark.parametrize("debug", ["false", "true"])
def test_a_path_beyond_latin_1_is_a_404(debug: str, artifacts: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = child_env(DJANGO_SETTINGS_MODULE="config.settings.local", DJANGO_DEBUG=debug)
    env.pop("OTEL_SDK_DISABLED", None)  # as make run: the Django instrumentation on
    argv = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
    with serving(argv, env=env, log_path=artifacts / f"runserver-{debug}.log", base_url=base):
        response = requests.get(f"{base}{BEYOND_LATIN_1}", timeout=10)
        cancel = requests.post(f"{base}{BEYOND_LATIN_1}cancel", timeout=10)

    # JSON, as the schema says, with DEBUG on too (config/urls.py's last route).
    for answer in (response, cancel):
        assert answer.status_code == 404, answer.text[:2000]
        assert answer.json() == {"error": "not_found", "detail": "No such resource."}
    assert "Traceback" not in (artifacts / f"runserver-{debug}.log").read_text()
