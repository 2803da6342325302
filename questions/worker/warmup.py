"""What a worker builds before it says "consuming", so that its first jobs do not pay for it:
the SQS client (botocore loads its service model), the LLM clients' TLS context (OpenSSL reads
the CA bundle) and the Redis cache's client (django-redis imports its serializer). None of them
connects: nothing here waits for a service. (The database threads still connect on first use:
opening all QUESTIONS_WORKER_DB_THREADS at start would hold connections a lightly loaded worker
never needs.)
"""

from __future__ import annotations

import contextlib

from django_redis import get_redis_connection

from questions.llm.transport import default_ssl_context
from questions.sqs.client import get_sqs_client


def warm_up() -> None:
    get_sqs_client()
    default_ssl_context()
    with contextlib.suppress(NotImplementedError):  # a cache that is not django-redis
        get_redis_connection("default")  # builds the client and its pool; connects on first use
