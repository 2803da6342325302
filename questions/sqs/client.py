"""The one SQS client of the process, built once from settings, and queue URL lookups.

boto3 reads `AWS_ENDPOINT_URL_SQS` from the environment itself, so LocalStack, moto or fauxqs is
only an environment variable away. Queue URLs are always the ones the server returns.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from django.conf import settings

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
else:
    SQSClient = Any

_lock = threading.Lock()
_client: SQSClient | None = None
_queue_urls: dict[str, str] = {}

# Long polls wait up to 20 s, so reads must be allowed longer than that.
_CONFIG = Config(
    connect_timeout=2,
    read_timeout=30,
    retries={"mode": "standard", "max_attempts": 2},
    max_pool_connections=64,
)


def get_sqs_client() -> SQSClient:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = boto3.session.Session().client(
                    "sqs", region_name=settings.AWS_REGION, config=_CONFIG
                )
    return _client


def get_queue_url(queue_name: str) -> str:
    """The URL the server gives for this queue name (cached once found)."""
    url = _queue_urls.get(queue_name)
    if url is None:
        url = get_sqs_client().get_queue_url(QueueName=queue_name)["QueueUrl"]
        _queue_urls[queue_name] = url
    return url


def reset_sqs_client() -> None:
    """Forget the client and the URLs (tests and endpoint changes)."""
    global _client
    with _lock:
        _client = None
        _queue_urls.clear()
