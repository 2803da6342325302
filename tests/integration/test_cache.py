"""The Redis cache of finished jobs: reads hit Redis first, and Redis down changes nothing."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from questions.job_cache import job_cache_get
from questions.models import Question
from tests.factories import QuestionFactory
from tests.support import api_ask, free_port

pytestmark = pytest.mark.django_db


def fallbacks(operation: str) -> float:
    value = REGISTRY.get_sample_value("questions_cache_fallbacks_total", {"operation": operation})
    return value or 0.0


def test_a_finished_job_is_served_from_redis(api, user, django_assert_num_queries):
    job = QuestionFactory(owner=user, status="succeeded", answer="from the database")

    first = api.get(f"/api/questions/{job.pk}/")  # miss: read PostgreSQL, fill the cache
    assert first.json()["answer"] == "from the database"
    assert cache.get(f"job:{job.pk}")["answer"] == "from the database"

    # Change the row behind the cache's back: a cache hit must not see it.
    Question.objects.filter(pk=job.pk).update(answer="changed in the database")
    with django_assert_num_queries(0):  # the token's user and the job both come from Redis
        second = api.get(f"/api/questions/{job.pk}/")
    assert second.json()["answer"] == "from the database"


def test_an_unfinished_job_is_never_cached(api, user):
    job = QuestionFactory(owner=user, status="queued")
    api.get(f"/api/questions/{job.pk}/")
    assert cache.get(f"job:{job.pk}") is None


def test_cached_jobs_still_respect_ownership(api, api_for, user, other_user):
    job = QuestionFactory(owner=user, status="succeeded", answer="mine")
    assert api.get(f"/api/questions/{job.pk}/").status_code == 200  # now cached
    assert api_for(other_user).get(f"/api/questions/{job.pk}/").status_code == 404


def test_the_worker_caches_the_finished_job(api, queues, fake_llm, run_worker, transactional_db):
    fake_llm.configure(answer="cached by the worker")
    job_id = api_ask(api, "q?").json()["id"]
    run_worker()
    cached = cache.get(f"job:{job_id}")
    assert cached is not None and cached["answer"] == "cached by the worker"


def test_with_redis_down_the_api_answers_from_postgresql(api, user, settings, queues, caplog):
    job = QuestionFactory(owner=user, status="succeeded", answer="still here")
    settings.CACHES = {
        "default": {
            **settings.CACHES["default"],
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    before = fallbacks("get")
    caplog.set_level(logging.WARNING, logger="questions.cache")

    for _ in range(3):
        response = api.get(f"/api/questions/{job.pk}/")
        assert response.status_code == 200
        assert response.json()["answer"] == "still here"
    # Asking still works too (the rate limit counts the user's questions in PostgreSQL instead).
    created = api_ask(api, "Redis is down?")
    assert created.status_code == 202

    # Each request looked up its token's user (4) and each GET its job (3) in Redis first.
    assert fallbacks("get") - before == 7
    outage_logs = [r for r in caplog.records if "Redis cache unavailable" in r.getMessage()]
    assert len(outage_logs) == 1  # logged once per outage, not per request


def _plant_marker(path: str) -> None:
    Path(path).write_text("pwned")


class _Exploit:
    """A pickle that, if ever unpickled, creates a file (as `os.system` would run a command)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_plant_marker, (str(self.marker),))


def _write_raw(key: str, value: bytes) -> None:
    redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).set(cache.make_key(key), value)


def test_a_pickle_planted_in_redis_is_never_unpickled(api, user, tmp_path):
    job = QuestionFactory(owner=user, status="succeeded", answer="from PostgreSQL")
    marker = tmp_path / "executed"
    _write_raw(f"job:{job.pk}", pickle.dumps(_Exploit(marker)))
    # The exploit works where pickle is trusted:
    assert pickle.loads(pickle.dumps(_Exploit(tmp_path / "proof"))) is None  # noqa: S301
    assert (tmp_path / "proof").exists()
    before = fallbacks("get")

    response = api.get(f"/api/questions/{job.pk}/")

    assert response.status_code == 200
    assert response.json()["answer"] == "from PostgreSQL"
    assert not marker.exists()
    assert fallbacks("get") == before  # a foreign value is a miss, not a Redis outage
    # The miss refilled the key with plain JSON.
    raw = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).get(
        cache.make_key(f"job:{job.pk}")
    )
    assert json.loads(raw)["answer"] == "from PostgreSQL"


def test_a_pickled_staff_user_planted_under_a_token_key_grants_nothing(user, other_user, tmp_path):
    from questions.accounts import api_token_create, token_digest

    theirs = QuestionFactory(owner=other_user, status="succeeded")
    new = api_token_create(user=user, name="t")
    marker = tmp_path / "executed"
    _write_raw(f"auth:token:{token_digest(new.key)}", pickle.dumps(_Exploit(marker)))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {new.key}")

    assert client.get(f"/api/questions/{theirs.pk}/").status_code == 404  # not staff
    assert client.get("/api/questions/").status_code == 200  # looked up in PostgreSQL
    assert not marker.exists()
    # A JSON entry claiming staff for a token's digest is honoured only as what we wrote; a
    # forged one still needs the token itself, which Redis never holds.
    assert not list(
        redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).scan_iter(match=f"*{new.key}*")
    )


def test_cached_jobs_are_json_without_the_owner(api, user):
    job = QuestionFactory(owner=user, status="succeeded", answer="a", cost="0.000123")
    api.get(f"/api/questions/{job.pk}/")
    raw = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"]).get(
        cache.make_key(f"job:{job.pk}")
    )
    stored = json.loads(raw)
    assert stored["owner_id"] == user.pk and "owner" not in stored
    assert user.password not in raw.decode()
    rebuilt = job_cache_get(job.pk)
    assert rebuilt is not None and rebuilt.pk == job.pk and rebuilt.owner_id == user.pk
    assert rebuilt.created_at == job.created_at  # microseconds kept
    assert str(rebuilt.cost) == "0.000123"
