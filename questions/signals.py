"""Keep the token cache honest however a token disappears (revoked on the page or in the admin,
or with its user)."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from questions.cache import token_cache_delete, token_cache_revoke
from questions.models import ApiToken


@receiver(post_delete, sender=ApiToken)
def forget_deleted_token(sender: type[ApiToken], instance: ApiToken, **kwargs: Any) -> None:
    # Now (best effort), and a tombstone once the deletion is committed: a request that read
    # the row before the commit cannot cache the token again (questions.cache).
    token_cache_delete(instance.digest)
    transaction.on_commit(partial(token_cache_revoke, instance.digest), using=kwargs.get("using"))
