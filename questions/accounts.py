"""A person's API token, as the account page shows and regenerates it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from rest_framework.authtoken.models import Token

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser


def api_token_get(*, user: AbstractBaseUser) -> Token:
    """The user's token, created on first use."""
    token, _ = Token.objects.get_or_create(user=user)
    return token


def api_token_regenerate(*, user: AbstractBaseUser) -> Token:
    """A new token; the old one stops working at once."""
    with transaction.atomic():
        Token.objects.filter(user=user).delete()
        return Token.objects.create(user=user)
