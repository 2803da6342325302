"""The client's IP address, for login lockout and logs: X-Forwarded-For counts only when the
request came from a trusted proxy (nginx overwrites the header with the address it saw), so a
client cannot pick its own address by sending the header itself."""

from __future__ import annotations

from ipaddress import ip_address

from django.conf import settings
from django.http import HttpRequest


def _is_trusted_proxy(address: str) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in settings.TRUSTED_PROXIES)


def client_ip(request: HttpRequest) -> str:
    remote = str(request.META.get("REMOTE_ADDR", ""))
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    if forwarded and _is_trusted_proxy(remote):
        # The right-most entry is the one our proxy wrote; anything left of it is hearsay.
        candidate = forwarded.rsplit(",", 1)[-1].strip()
        try:
            return str(ip_address(candidate))
        except ValueError:
            return remote
    return remote
