"""Who a paid LLM call (or a queued job) was for, as a provider may see it: an opaque, stable id
per user.

OpenAI's `user` field (and LiteLLM-style proxies' per-user budgets) want the same id for the same
person on every call, but must not learn who that is: an HMAC of the user's primary key under
SECRET_KEY, so it cannot be reversed or guessed from the id.
"""

from __future__ import annotations

from django.utils.crypto import salted_hmac

_SALT = "questions.attribution.provider_user_id"


def provider_user_id(*, user_id: int) -> str:
    """The value for the `user` field of a chat completion request for this user's question."""
    return "u-" + salted_hmac(_SALT, str(user_id), algorithm="sha256").hexdigest()[:32]


_QUEUE_SALT = "questions.attribution.queue_group_id"


def queue_group_id(*, user_id: int) -> str:
    """The SQS MessageGroupId of this user's jobs: SQS fair queues keep one user's flood of
    questions from delaying everyone else's. Opaque like provider_user_id, under another salt, so
    the two ids of one person cannot be matched with each other."""
    return "g-" + salted_hmac(_QUEUE_SALT, str(user_id), algorithm="sha256").hexdigest()[:32]
