"""questions.webhooks.addresses: which URLs and addresses may receive webhooks (SSRF)."""

from __future__ import annotations

from ipaddress import ip_address, ip_network

import pytest

from questions.webhooks.addresses import UnsafeUrl, address_refusal, destination_resolve, url_parse


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped IPv6 is the IPv4 address
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-public"),  # carrier-grade NAT
        ("192.0.2.1", "private"),  # documentation range
    ],
)
def test_addresses_that_are_not_public_are_refused(settings, address, kind):
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = []
    refusal = address_refusal(ip_address(address))
    assert refusal is not None and refusal.split(" address")[0].endswith(kind), refusal


@pytest.mark.parametrize("address", ["93.184.216.34", "2606:4700:4700::1111", "8.8.8.8"])
def test_public_addresses_are_allowed(settings, address):
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = []
    assert address_refusal(ip_address(address)) is None


def test_the_allow_list_lets_a_network_through(settings):
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = [ip_network("10.20.0.0/16")]
    assert address_refusal(ip_address("10.20.3.4")) is None
    assert address_refusal(ip_address("10.21.3.4")) is not None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://93.184.216.34/", "plain http is not allowed"),
        ("ftp://93.184.216.34/", "must start with https://"),
        ("https:///path", "must name a host"),
        ("https://u:p@93.184.216.34/", "user name or password"),
        ("https://93.184.216.34:99999/", "not a valid URL"),
        ("https://93.184.216.34/#frag", "fragment"),
    ],
)
def test_url_rules(settings, url, message):
    settings.QUESTIONS_WEBHOOK_ALLOW_HTTP = False
    with pytest.raises(UnsafeUrl, match=message):
        url_parse(url)


def test_a_url_is_taken_apart_for_the_pinned_connection(settings):
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = []
    destination = destination_resolve("https://[2606:4700:4700::1111]:8443/hooks?x=1")
    assert destination.address == "2606:4700:4700::1111"
    assert destination.target.path == "/hooks?x=1"
    assert destination.target.host_header == "[2606:4700:4700::1111]:8443"
    assert url_parse("https://93.184.216.34/").host_header == "93.184.216.34"
