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
    """Delete one of `user`'s tokens. Its cache entry goes with it and becomes a tombstone when
    the deletion commits (questions.signals), so the token is refused at once, Redis reachable
    or not. False if the user holds no such token."""
    deleted, _ = ApiToken.objects.filter(user=user, pk=token_id).delete()
    return bool(deleted)


def api_token_touch(*, token: ApiToken) -> bool:
    """Record a use (called on a cache miss only, so at most once per TOKEN_CACHE_TTL). False if
    the token was deleted meanwhile (the UPDATE waits for a revocation in progress to commit)."""
    now = timezone.now()
    touched = ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    token.last_used_at = now
    return bool(touched)


def api_token_exists(*, token_id: int) -> bool:
    return ApiToken.objects.filter(pk=token_id).exists()


def api_token_list(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at")


def api_token_find(*, key: str) -> ApiToken | None:
    """The token with this plaintext key (and its user), or None."""
    return ApiToken.objects.select_related("user").filter(digest=token_digest(key)).first()
