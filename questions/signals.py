"""Keep the token cache honest however a token disappears (regenerated, deleted in the admin)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete
from django.dispatch import receiver
from rest_framework.authtoken.models import Token

from questions.cache import token_cache_delete


@receiver(post_delete, sender=Token)
def forget_deleted_token(sender: type[Token], instance: Token, **kwargs: Any) -> None:
    token_cache_delete(instance.key)
