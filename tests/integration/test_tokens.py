"""API tokens: stored only as digests, revocable and expiring at once (through the cache too),
the old plaintext DRF tokens migrated, and no token anywhere in a dump of the database."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import threading
from datetime import timedelta
from io import StringIO

import pytest
import redis
import requests
from django.conf import settings
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.utils import timezone
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.test import APIClient

from questions.accounts import api_token_create, api_token_revoke, token_digest
from questions.api.authentication import CachedTokenAuthentication
from questions.cache import reset_breaker
from questions.models import ApiToken
from tests.factories import UserFactory
from tests.support import TCPProxy, child_env, free_port, serving, wait_until

pytestmark = pytest.mark.django_db

MIGRATION = "0003_security_api_tokens"


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _raw_redis() -> redis.Redis:
    return redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])


def _token_cache_key(key: str) -> str:
    return cache.make_key(f"auth:token:{token_digest(key)}")


def test_a_token_is_stored_only_as_its_digest(user):
    new = api_token_create(user=user, name="ci")
    row = ApiToken.objects.values().get(pk=new.token.pk)
    assert new.key not in json.dumps(row, default=str)
    assert row["digest"] == token_digest(new.key)
    assert len(new.key) >= 40  # 32 random bytes


def test_several_tokens_per_user_each_works_and_is_revoked_alone(user):
    first = api_token_create(user=user, name="one")
    second = api_token_create(user=user, name="two")
    assert _client(first.key).get("/api/questions/").status_code == 200
    assert _client(second.key).get("/api/questions/").status_code == 200

    assert api_token_revoke(user=user, token_id=first.token.pk)
    assert _client(first.key).get("/api/questions/").status_code == 401
    assert _client(second.key).get("/api/questions/").status_code == 200


def test_a_revoked_token_is_refused_at_once_even_though_it_was_cached(user):
    new = api_token_create(user=user, name="cached")
    client = _client(new.key)
    assert client.get("/api/questions/").status_code == 200
    assert _raw_redis().exists(_token_cache_key(new.key))  # the lookup is now cached

    api_token_revoke(user=user, token_id=new.token.pk)
    assert not _raw_redis().exists(_token_cache_key(new.key))
    assert client.get("/api/questions/").status_code == 401


def test_a_token_deleted_in_bulk_elsewhere_is_refused_at_once(user):
    new = api_token_create(user=user, name="admin-deleted")
    client = _client(new.key)
    assert client.get("/api/questions/").status_code == 200
    ApiToken.objects.filter(user=user).delete()  # e.g. the admin's bulk delete
    assert client.get("/api/questions/").status_code == 401


def test_an_expired_token_is_refused(user):
    new = api_token_create(user=user, name="old", expires_at=timezone.now() - timedelta(seconds=1))
    response = _client(new.key).get("/api/questions/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has expired."


def test_a_token_expiring_while_cached_is_refused_on_a_hit(user, django_assert_num_queries):
    new = api_token_create(user=user, name="soon", expires_at=timezone.now() + timedelta(hours=1))
    client = _client(new.key)
    assert client.get("/api/questions/").status_code == 200
    # The cached entry is what a hit sees: move its expiry into the past, as time would.
    entry = cache.get(f"auth:token:{token_digest(new.key)}")
    entry["expires_at"] = (timezone.now() - timedelta(seconds=1)).isoformat()
    cache.set(f"auth:token:{token_digest(new.key)}", entry, timeout=60)

    with django_assert_num_queries(0):  # decided from the cache alone
        response = client.get("/api/questions/")
    assert response.status_code == 401
    assert response.json()["detail"] == "Token has expired."


def test_the_token_cache_holds_plain_json_without_secrets(user):
    new = api_token_create(user=user, name="json")
    assert _client(new.key).get("/api/questions/").status_code == 200

    raw = _raw_redis().get(_token_cache_key(new.key))
    entry = json.loads(raw)  # plain JSON, not a pickle
    assert entry["user_id"] == user.pk and entry["token_id"] == new.token.pk
    assert entry["is_active"] is True and entry["is_staff"] is False
    assert new.key.encode() not in raw
    assert user.password.encode() not in raw
    assert all(new.key not in k.decode() for k in _raw_redis().scan_iter(match="*auth:token*"))


def test_a_cache_miss_records_the_last_use(user):
    new = api_token_create(user=user, name="used")
    assert new.token.last_used_at is None
    assert _client(new.key).get("/api/questions/").status_code == 200
    new.token.refresh_from_db()
    assert new.token.last_used_at is not None


def test_a_deactivated_user_is_refused_once_the_cache_entry_is_gone(user):
    new = api_token_create(user=user, name="x")
    assert _client(new.key).get("/api/questions/").status_code == 200
    user.is_active = False
    user.save()
    cache.delete(f"auth:token:{token_digest(new.key)}")
    assert _client(new.key).get("/api/questions/").status_code == 401


def test_create_demo_user_prints_a_usable_token_and_replaces_its_previous_one():
    out = StringIO()
    call_command("create_demo_user", stdout=out)
    first = re.search(r"API token: (\S+)", out.getvalue()).group(1)
    assert _client(first).get("/api/questions/").status_code == 200

    out = StringIO()
    call_command("create_demo_user", stdout=out)
    second = re.search(r"API token: (\S+)", out.getvalue()).group(1)
    assert second != first
    assert _client(second).get("/api/questions/").status_code == 200
    assert _client(first).get("/api/questions/").status_code == 401


def test_staff_can_list_and_revoke_tokens_in_the_admin_but_never_read_or_make_one():
    admin = UserFactory(is_staff=True, is_superuser=True)
    owner = UserFactory()
    new = api_token_create(user=owner, name="leaked")
    client = Client()
    client.force_login(admin)

    listing = client.get("/admin/questions/apitoken/")
    assert listing.status_code == 200
    assert "leaked" in listing.content.decode()
    assert new.key not in listing.content.decode()
    assert new.token.digest not in listing.content.decode()
    detail = client.get(f"/admin/questions/apitoken/{new.token.pk}/change/")
    assert new.token.digest not in detail.content.decode()
    assert client.get("/admin/questions/apitoken/add/").status_code == 403

    assert _client(new.key).get("/api/questions/").status_code == 200
    deleted = client.post(
        f"/admin/questions/apitoken/{new.token.pk}/delete/", {"post": "yes"}, follow=True
    )
    assert deleted.status_code == 200
    assert not ApiToken.objects.filter(pk=new.token.pk).exists()
    assert _client(new.key).get("/api/questions/").status_code == 401


# --- the data migration and the dump ---------------------------------------------------------

LEGACY_KEY = "0123456789abcdef0123456789abcdef01234567"


def _migrate_to_latest() -> None:
    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _migrate_back_and_add_a_legacy_token(user_id: int) -> MigrationExecutor:
    """The database as it was before this change: DRF's authtoken_token with a plaintext key."""
    parent = importlib.import_module(f"questions.migrations.{MIGRATION}").Migration.dependencies
    executor = MigrationExecutor(connection)
    executor.migrate([next(dep for dep in parent if dep[0] == "questions")])
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE authtoken_token (key varchar(40) PRIMARY KEY,"
            " created timestamptz NOT NULL,"
            " user_id integer NOT NULL UNIQUE REFERENCES auth_user(id))"
        )
        cursor.execute("INSERT INTO authtoken_token VALUES (%s, now(), %s)", [LEGACY_KEY, user_id])
    return executor


@pytest.mark.django_db(transaction=True)
def test_the_migration_hashes_existing_drf_tokens_so_current_clients_keep_working():
    user = UserFactory()
    _migrate_back_and_add_a_legacy_token(user.pk)

    _migrate_to_latest()

    assert "authtoken_token" not in connection.introspection.table_names()
    token = ApiToken.objects.get(user=user)
    assert token.digest == token_digest(LEGACY_KEY)
    assert _client(LEGACY_KEY).get("/api/questions/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_no_token_appears_in_a_dump_of_the_database():
    owner = UserFactory()
    _migrate_back_and_add_a_legacy_token(owner.pk)
    _migrate_to_latest()

    made = api_token_create(user=owner, name="page").key
    out = StringIO()
    call_command("create_demo_user", stdout=out)
    demo = re.search(r"API token: (\S+)", out.getvalue()).group(1)
    for key in (made, demo, LEGACY_KEY):
        assert _client(key).get("/api/questions/").status_code == 200

    db = settings.DATABASES["default"]
    dump = subprocess.run(
        ["pg_dump", "-h", db["HOST"], "-p", str(db["PORT"] or 5432), "-U", db["USER"], db["NAME"]],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    assert token_digest(made) in dump  # the dump does hold the token table
    for key in (made, demo, LEGACY_KEY):
        assert key not in dump


# --- revocation races and outages --------------------------------------------------------------


def _lock_waiters() -> int:
    """Sessions on this test database waiting for a row lock."""
    with connection.cursor() as cursor:
        # Inside a transaction, the activity view is a snapshot until cleared.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


@pytest.mark.django_db(transaction=True)
def test_a_lookup_racing_a_revocation_cannot_cache_the_token_again(user):
    new = api_token_create(user=user, name="racing")
    outcome: dict[str, object] = {}

    def concurrent_request() -> None:
        # Another request with the token while the revocation is not yet committed: it still
        # reads the row, then waits on the row's lock to record the use.
        try:
            outcome["user"] = CachedTokenAuthentication().authenticate_credentials(new.key)[0]
        except AuthenticationFailed as exc:
            outcome["refused"] = str(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=concurrent_request)
    with transaction.atomic():
        api_token_revoke(user=user, token_id=new.token.pk)
        thread.start()
        wait_until(_lock_waiters, timeout=10, what="the concurrent lookup to wait on the row")
    thread.join(timeout=10)

    assert outcome == {"refused": "Invalid token."}
    assert _client(new.key).get("/api/questions/").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_a_token_revoked_while_redis_was_unreachable_is_refused_when_redis_is_back(user, settings):
    direct = _raw_redis()
    host, port = (
        direct.connection_pool.connection_kwargs["host"],
        direct.connection_pool.connection_kwargs["port"],
    )
    db = direct.connection_pool.connection_kwargs["db"]
    proxy = TCPProxy(int(port)).start()
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://{host}:{proxy.port}/{db}"},
    }
    try:
        new = api_token_create(user=user, name="revoked in an outage")
        client = _client(new.key)
        assert client.get("/api/questions/").status_code == 200
        assert direct.exists(_token_cache_key(new.key))  # cached

        proxy.cut()
        assert api_token_revoke(user=user, token_id=new.token.pk)
        assert direct.exists(_token_cache_key(new.key))  # the delete never reached Redis
        assert client.get("/api/questions/").status_code == 401  # PostgreSQL decides meanwhile

        proxy.restore()
        reset_breaker()  # Redis is back, and this process tries it again
        assert client.get("/api/questions/").status_code == 401
        assert client.get("/api/questions/").status_code == 401
    finally:
        proxy.cut()


def _get(url: str, headers: dict[str, str]) -> int:
    return requests.get(url, headers=headers, timeout=10).status_code


@pytest.mark.django_db(transaction=True)
def test_a_process_back_from_a_redis_outage_checks_cached_tokens_against_their_rows(
    user, artifacts
):
    # Another process revoked the token while Redis was unreachable, and could not write its
    # tombstone (it died). A server that saw the outage must not believe the stale entry.
    direct = _raw_redis()
    proxy = TCPProxy(int(direct.connection_pool.connection_kwargs["port"])).start()
    db = direct.connection_pool.connection_kwargs["db"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = artifacts / "uvicorn.log"
    new = api_token_create(user=user, name="revoked elsewhere")
    headers = {"Authorization": f"Token {new.key}"}
    try:
        with serving(
            [sys.executable, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
             "--port", str(port), "--no-access-log", "--lifespan", "off"],
            env=child_env(REDIS_URL=f"redis://127.0.0.1:{proxy.port}/{db}"),
            log_path=log,
            base_url=base,
        ):  # fmt: skip
            assert _get(f"{base}/api/questions/", headers) == 200
            assert direct.exists(_token_cache_key(new.key))  # cached
            proxy.cut()
            # The server meets the outage, and answers from PostgreSQL.
            assert _get(f"{base}/api/questions/", headers) == 200
            with connection.cursor() as cursor:  # revoked, no signal, no tombstone
                cursor.execute("DELETE FROM questions_apitoken WHERE id = %s", [new.token.pk])
            proxy.restore()
            assert direct.exists(_token_cache_key(new.key))  # the stale entry is still there

            statuses: list[int] = []

            def cache_back() -> bool:
                statuses.append(_get(f"{base}/api/questions/", headers))
                return "Redis cache available again" in log.read_text()

            # Until the server's breaker lets it use Redis again, and the request that did.
            wait_until(cache_back, timeout=20, interval=0.2, what="the server to use Redis again")
            statuses.append(_get(f"{base}/api/questions/", headers))
    finally:
        proxy.cut()
    assert set(statuses) == {401}, statuses
