"""Keep the token cache honest however a token disappears (revoked on the page or in the admin,
or with its user)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver

from questions.cache import token_cache_delete
from questions.models import ApiToken


@receiver(post_delete, sender=ApiToken)
def forget_deleted_token(sender: type[ApiToken], instance: ApiToken, **kwargs: Any) -> None:
    token_cache_delete(instance.digest)
