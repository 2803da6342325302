"""Where a webhook may be sent (SSRF): the URL's rules, and the address it resolves to.

A URL must be https (http only with QUESTIONS_WEBHOOK_ALLOW_HTTP), name a host, and carry no
credentials. Its host is resolved once per attempt; if any address it resolves to is loopback,
private, link-local (169.254.169.254 among them), multicast, reserved or unspecified, and not
inside QUESTIONS_WEBHOOK_ALLOWED_NETWORKS, it is refused. The attempt then connects to the
address checked here, never resolving the name again (no DNS rebinding in between). A name
not in DNS (yet) is no address to refuse: registration takes it (`HostUnresolved`), and every
delivery resolves it and checks what it finds.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValueError):
    """The URL may not receive webhooks; the message says why, fit for its owner."""


class HostUnresolved(UnsafeUrl):
    """The URL's host has no address now: nothing can be sent to it, and nothing refused."""


@dataclass(frozen=True, slots=True)
class Target:
    """A webhook URL taken apart."""

    scheme: str
    host: str
    port: int
    path: str

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Destination:
    """A target pinned to the one address that was checked."""

    target: Target
    address: str


def url_parse(url: str) -> Target:
    """The URL's parts, or UnsafeUrl for one that breaks the rules before any lookup."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise UnsafeUrl(f"This is not a valid URL ({exc}).") from None
    allowed = {"https", "http"} if settings.QUESTIONS_WEBHOOK_ALLOW_HTTP else {"https"}
    if parts.scheme not in allowed:
        raise UnsafeUrl(
            "The URL must start with https://."
            if parts.scheme != "http"
            else "The URL must use https://; plain http is not allowed here."
        )
    if not parts.hostname:
        raise UnsafeUrl("The URL must name a host.")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("The URL may not contain a user name or password.")
    if parts.fragment:
        raise UnsafeUrl("The URL may not contain a fragment (#…).")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return Target(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        path=path,
    )


def address_refusal(address: IPAddress) -> str | None:
    """Why this address may not receive webhooks, or None if it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if any(address in network for network in settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS):
        return None
    for test, kind in (
        (address.is_loopback, "a loopback"),
        (address.is_link_local, "a link-local"),
        (address.is_multicast, "a multicast"),
        (address.is_unspecified, "an unspecified"),
        (address.is_reserved, "a reserved"),
        (address.is_private, "a private"),
        (not address.is_global, "a non-public"),
    ):
        if test:
            return f"{kind} address ({address})"
    return None


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to (an IP literal: itself)."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise HostUnresolved(f"The host {host!r} could not be resolved ({exc}).") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # The scope of a link-local IPv6 address ("fe80::1%eth0") is not part of it.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise HostUnresolved(f"The host {host!r} has no address.")
    return addresses


def destination_resolve(url: str) -> Destination:
    """Check the URL, resolve its host once and pin the first address; UnsafeUrl if any
    address the name has is refused (a name with one private address among public ones is a
    name an attacker may steer)."""
    target = url_parse(url)
    addresses = resolve(target.host, target.port)
    for address in addresses:
        refusal = address_refusal(address)
        if refusal is not None:
            raise UnsafeUrl(
                f"Webhooks may not be sent to {refusal}: {target.host} resolves to it."
                if str(address) != target.host
                else f"Webhooks may not be sent to {refusal}."
            )
    return Destination(target=target, address=str(addresses[0]))
