"""One delivery attempt over HTTP, connected to the address that was checked (urllib3's public
connection pools: the IP as the pool's host, the name as Host header, SNI and certificate
name). No redirects, no retries here (the queue retries), one timeout for the whole attempt,
and at most `MAX_RESPONSE_BYTES` of the answer read, then dropped."""

from __future__ import annotations

import urllib3
from urllib3.exceptions import HTTPError, NewConnectionError, SSLError, TimeoutError

from questions.webhooks.addresses import Destination

MAX_RESPONSE_BYTES = 4096
USER_AGENT = "questions-webhooks/1"


class SendFailed(Exception):
    """No HTTP answer: the connection failed, timed out, or TLS did not verify."""


def post_pinned(
    destination: Destination, *, body: bytes, headers: dict[str, str], timeout: float
) -> int:
    """POST the body; returns the answer's status code."""
    target = destination.target
    timeout_config = urllib3.Timeout(total=timeout)
    pool: urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool = urllib3.HTTPSConnectionPool(
            destination.address,
            target.port,
            timeout=timeout_config,
            retries=False,
            maxsize=1,
            cert_reqs="CERT_REQUIRED",
            server_hostname=target.host,
            assert_hostname=target.host,
        )
    else:
        pool = urllib3.HTTPConnectionPool(
            destination.address, target.port, timeout=timeout_config, retries=False, maxsize=1
        )
    all_headers = {
        "Host": target.host_header,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        **headers,
    }
    try:
        response = pool.urlopen(
            "POST",
            target.path,
            body=body,
            headers=all_headers,
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            response.read(MAX_RESPONSE_BYTES)
        finally:
            response.close()
        return response.status
    except NewConnectionError as exc:  # before TimeoutError: urllib3 makes it one
        raise SendFailed(f"Could not connect: {_reason(exc)}") from None
    except TimeoutError:
        raise SendFailed(f"No answer within {timeout:g} s.") from None
    except SSLError as exc:
        raise SendFailed(f"TLS failed: {_reason(exc)}") from None
    except HTTPError as exc:
        raise SendFailed(f"Could not connect: {_reason(exc)}") from None
    finally:
        pool.close()


def _reason(exc: Exception) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason)[:300]
