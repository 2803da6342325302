"""Production settings: pass `check --deploy` with real-looking values, refuse without a key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

PRODUCTION_ENV = {
    "DJANGO_SETTINGS_MODULE": "config.settings.production",
    "DJANGO_SECRET_KEY": "k3J9x!v2Qm#8Lr$tZp6Wn@4Yc1Hd7Fs0Ga5Eb-Uq_Io+Tj=Xl%Vk*Ry^Mh&Nw(Pe)",
    "DJANGO_ALLOWED_HOSTS": "questions.example.com",
    "DATABASE_URL": "postgres://questions:pw@db.internal:5432/questions",
    "REDIS_URL": "redis://cache.internal:6379/0",
    "OPENAI_API_KEY": "sk-live-looking-but-fake",
}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_settings_refuse_to_start_without_a_secret_key():
    env = {k: v for k, v in PRODUCTION_ENV.items() if k != "DJANGO_SECRET_KEY"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY" in result.stderr


def test_a_malformed_setting_is_reported_by_name():
    result = manage("check", env={**PRODUCTION_ENV, "OPENAI_TIMEOUT": "soon"})
    assert result.returncode != 0
    assert "OPENAI_TIMEOUT must be a number" in result.stderr


def test_the_call_deadline_may_not_be_shorter_than_openai_timeout():
    env = {**PRODUCTION_ENV, "OPENAI_TIMEOUT": "60", "OPENAI_CALL_DEADLINE": "30"}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "OPENAI_CALL_DEADLINE must be at least OPENAI_TIMEOUT" in result.stderr


@pytest.mark.parametrize(
    "key",
    [
        "insecure-compose-only-key-change-me",  # compose's old default
        "django-insecure-local-only-not-for-production",  # config.settings.local's
        "change-me-to-a-long-random-string-change-me-to-a-long-random-string",
        "short-but-random-Q8x!",
        "a" * 80,
    ],
)
def test_production_settings_refuse_a_placeholder_or_short_secret_key(key):
    result = manage("check", env={**PRODUCTION_ENV, "DJANGO_SECRET_KEY": key})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is a placeholder or too short" in result.stderr
    assert key not in result.stderr  # the key itself is never printed


def test_a_malformed_trusted_proxy_is_reported_by_name():
    result = manage("check", env={**PRODUCTION_ENV, "DJANGO_TRUSTED_PROXIES": "10.0.0.0/8,nginx"})
    assert result.returncode != 0
    assert "DJANGO_TRUSTED_PROXIES must list IP addresses or networks" in result.stderr


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("QUESTIONS_SSE_MAX_PER_USER", "-1", "QUESTIONS_SSE_MAX_PER_USER must be >= 0"),
        ("QUESTIONS_SSE_MAX_PER_IP", "many", "QUESTIONS_SSE_MAX_PER_IP must be an integer"),
        ("QUESTIONS_SSE_LEASE_SECONDS", "0", "QUESTIONS_SSE_LEASE_SECONDS must be more than 0"),
        (
            "QUESTIONS_EVENTS_CATCHUP_CONCURRENCY",
            "50",
            "QUESTIONS_EVENTS_CATCHUP_CONCURRENCY must be below",
        ),
    ],
)
def test_the_limits_on_event_streams_are_checked_at_start(name, value, message):
    result = manage("check", env={**PRODUCTION_ENV, name: value})
    assert result.returncode != 0
    assert message in result.stderr
