"""Login lockout (django-axes): by username and by client IP, on the login page and the admin's,
answered with 429 and a page that says when to try again; the client IP from X-Forwarded-For
only when a trusted proxy sent it."""

from __future__ import annotations

from datetime import timedelta
from ipaddress import ip_network

import pytest
from django.test import Client

from tests.factories import PASSWORD, UserFactory
from tests.support import wait_until

pytestmark = pytest.mark.django_db

LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]


@pytest.fixture(autouse=True)
def _short_lockout(settings):
    settings.AXES_FAILURE_LIMIT = 5
    settings.AXES_COOLOFF_TIME = timedelta(seconds=3)


def _login(client: Client, path: str, username: str, password: str, **extra):
    return client.post(path, {"username": username, "password": password}, **extra)


def _logged_in(response) -> bool:
    return response.status_code == 302 and "_auth_user_id" in response.client.session


@pytest.mark.parametrize("path", LOGIN_PAGES)
def test_ten_wrong_passwords_lock_the_account_until_the_cool_off_ends(path):
    user = UserFactory(is_staff=True)
    client = Client()
    statuses = [_login(client, path, user.username, "wrong").status_code for _ in range(10)]
    assert statuses[:4] == [200] * 4  # the form again, with its error
    assert statuses[5:] == [429] * 5

    refused = _login(client, path, user.username, PASSWORD)
    assert refused.status_code == 429
    assert "_auth_user_id" not in client.session
    assert b"try again in 1 minute" in refused.content
    assert int(refused["Retry-After"]) == 3

    # Only time lets the right password in again (polling does not prolong the lockout).
    response = wait_until(
        lambda: (r := _login(client, path, user.username, PASSWORD)).status_code != 429 and r,
        timeout=30,
        interval=0.5,
        what="the lockout to end",
    )
    assert _logged_in(response)


def test_the_lockout_is_by_username_whatever_the_address():
    user = UserFactory()
    for n in range(5):
        _login(Client(REMOTE_ADDR=f"198.51.100.{n + 1}"), LOGIN_PAGES[0], user.username, "wrong")
    response = _login(Client(REMOTE_ADDR="203.0.113.9"), LOGIN_PAGES[0], user.username, PASSWORD)
    assert response.status_code == 429


def test_the_lockout_is_by_address_whatever_the_username():
    victim = UserFactory()
    client = Client(REMOTE_ADDR="198.51.100.7")
    for n in range(5):
        _login(client, LOGIN_PAGES[0], f"guess{n}", "wrong")
    assert _login(client, LOGIN_PAGES[0], victim.username, PASSWORD).status_code == 429
    # Another address is not affected.
    other = Client(REMOTE_ADDR="198.51.100.8")
    assert _logged_in(_login(other, LOGIN_PAGES[0], victim.username, PASSWORD))


def test_a_client_cannot_escape_the_ip_lockout_with_its_own_x_forwarded_for(settings):
    settings.TRUSTED_PROXIES = []  # nobody's X-Forwarded-For is believed
    victim = UserFactory()
    client = Client(REMOTE_ADDR="198.51.100.7")
    for n in range(5):
        _login(client, LOGIN_PAGES[0], f"guess{n}", "wrong", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")
    response = _login(
        client, LOGIN_PAGES[0], victim.username, PASSWORD, HTTP_X_FORWARDED_FOR="10.9.9.9"
    )
    assert response.status_code == 429


def test_behind_the_trusted_proxy_each_client_address_is_counted_on_its_own(settings):
    settings.TRUSTED_PROXIES = [ip_network("127.0.0.1/32")]
    victim = UserFactory()
    proxy = Client(REMOTE_ADDR="127.0.0.1")
    for n in range(5):
        _login(proxy, LOGIN_PAGES[0], f"guess{n}", "wrong", HTTP_X_FORWARDED_FOR="198.51.100.66")
    locked = _login(
        proxy, LOGIN_PAGES[0], victim.username, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.66"
    )
    assert locked.status_code == 429
    # The proxy's own address is not what was locked: another client behind it logs in.
    other = _login(
        proxy, LOGIN_PAGES[0], victim.username, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.67"
    )
    assert _logged_in(other)
