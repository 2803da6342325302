"""questions.web.client_ip: X-Forwarded-For is believed only from a trusted proxy."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from django.test import RequestFactory

from questions.web.client_ip import client_ip


def _request(remote: str, forwarded: str | None = None):
    extra = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **extra)


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("10.1.2.3", None, "10.1.2.3"),  # no header: the peer
        ("172.28.0.10", "198.51.100.7", "198.51.100.7"),  # from nginx: the client it saw
        ("172.28.0.10", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # only nginx's entry counts
        ("172.28.0.10", "not-an-ip", "172.28.0.10"),  # garbage: the peer
        ("172.28.0.10", "2001:db8::1", "2001:db8::1"),
        ("198.51.100.9", "203.0.113.1", "198.51.100.9"),  # not a proxy: header ignored
    ],
)
def test_client_ip_believes_forwarded_for_only_from_the_trusted_proxy(
    settings, remote, forwarded, expected
):
    settings.TRUSTED_PROXIES = [ip_network("172.28.0.10/32")]
    assert client_ip(_request(remote, forwarded)) == expected


def test_with_no_trusted_proxy_the_header_is_never_believed(settings):
    settings.TRUSTED_PROXIES = []
    assert client_ip(_request("127.0.0.1", "198.51.100.7")) == "127.0.0.1"
