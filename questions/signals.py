"""Keep the token cache honest however a token disappears (revoked on the page or in the admin,
or with its user); let migrations run past the statement timeout."""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import connections, transaction
from django.db.models.signals import post_delete, pre_migrate
from django.dispatch import receiver

from questions.cache import token_cache_delete, token_cache_revoke
from questions.models import ApiToken


@receiver(post_delete, sender=ApiToken)
def forget_deleted_token(sender: type[ApiToken], instance: ApiToken, **kwargs: Any) -> None:
    # Now (best effort), and a tombstone once the deletion is committed: a request that read
    # the row before the commit cannot cache the token again (questions.cache).
    token_cache_delete(instance.digest)
    transaction.on_commit(partial(token_cache_revoke, instance.digest), using=kwargs.get("using"))


@receiver(pre_migrate, dispatch_uid="questions.migrate_without_statement_timeout")
def migrate_without_statement_timeout(sender: object, using: str, **kwargs: Any) -> None:
    """A migration may rewrite a large table: DATABASE_STATEMENT_TIMEOUT bounds requests and
    jobs, not `migrate`'s own connection."""
    connection = connections[using]
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = 0")
