"""API tokens: made (the plaintext returned once), listed, revoked. Only digests are stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from django.db.models import QuerySet
from django.utils import timezone

from questions.models import ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User

TOKEN_BYTES = 32
PREFIX_LENGTH = 6


def token_digest(key: str) -> str:
    """What is stored (and what the cache is keyed by) for a token."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: `key` exists only here, it is never stored."""

    token: ApiToken
    key: str


def api_token_create(*, user: User, name: str, expires_at: datetime | None = None) -> NewToken:
    key = secrets.token_urlsafe(TOKEN_BYTES)
    token = ApiToken.objects.create(
        user=user,
        name=name.strip() or "API token",
        digest=token_digest(key),
        prefix=key[:PREFIX_LENGTH],
        expires_at=expires_at,
    )
    return NewToken(token=token, key=key)


def api_token_revoke(*, user: User, token_id: int) -> bool:
    """Delete one of `user`'s tokens. The cache entry goes with it (questions.signals), so the
    token is refused at once. False if the user holds no such token."""
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    return bool(deleted)


def api_token_touch(*, token: ApiToken) -> None:
    """Record a use (called on a cache miss only, so at most once per TOKEN_CACHE_TTL)."""
    now = timezone.now()
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def api_token_find(*, key: str) -> ApiToken | None:
    """The token with this plaintext key (and its user), or None."""
    return ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
