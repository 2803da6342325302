"""`Authorization: Token <key>` against questions.ApiToken, the lookup cached in Redis as JSON.

Without the cache every API request costs a PostgreSQL query before any work is done. The cache
holds the user's id and flags, the token's id and its expiry, keyed by the token's digest:
never the token, never a pickled User. A revoked token is refused at once: its entry becomes a
tombstone when its deletion commits, a lookup that raced the revocation finds the row gone when
it records the use and caches nothing, and a revocation that could not reach Redis is kept and
honoured by its process until Redis takes it (questions.cache, questions.signals). An expired
token is refused on a cache hit too; a user deactivated in the meantime keeps API access for at
most `TOKEN_CACHE_TTL` seconds. With Redis down, every request falls back to PostgreSQL, and for
`TOKEN_CACHE_TTL` after an outage a cached entry is checked against its row before it is
believed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from questions.accounts import api_token_exists, api_token_find, api_token_touch, token_digest
from questions.cache import REVOKED, token_cache_get, token_cache_set, token_cache_trusted
from questions.models import ApiToken

_INVALID = "Invalid token."
_EXPIRED = "Token has expired."
_INACTIVE = "User inactive or deleted."


def _entry_for(token: ApiToken) -> dict[str, Any]:
    user = token.user
    return {
        "token_id": token.pk,
        "user_id": user.pk,
        "username": user.get_username(),
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "expires_at": token.expires_at.isoformat() if token.expires_at else None,
    }


def _user_from(entry: dict[str, Any]) -> Any:
    """A User carrying only what the API needs (id and flags); never saved from here."""
    user_model = get_user_model()
    return user_model(
        pk=int(entry["user_id"]),
        **{user_model.USERNAME_FIELD: str(entry["username"])},
        is_active=bool(entry["is_active"]),
        is_staff=bool(entry["is_staff"]),
        is_superuser=bool(entry["is_superuser"]),
    )


def _expiry(entry: dict[str, Any]) -> datetime | None:
    value = entry.get("expires_at")
    return parse_datetime(value) if isinstance(value, str) else None


class CachedTokenAuthentication(TokenAuthentication):
    """`request.user` is the token's user; `request.auth` the ApiToken's id (cached or not)."""

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        digest = token_digest(key)
        entry = token_cache_get(digest)
        if entry == REVOKED:
            raise exceptions.AuthenticationFailed(_INVALID)
        if entry is not None:
            try:
                user, expires_at = _user_from(entry), _expiry(entry)
            except (KeyError, TypeError, ValueError):
                entry = None  # not what we write: look in PostgreSQL
        if entry is None:
            return self._from_database(key, digest)
        if expires_at is not None and expires_at <= timezone.now():
            raise exceptions.AuthenticationFailed(_EXPIRED)
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_INACTIVE)
        if not token_cache_trusted() and not api_token_exists(token_id=entry["token_id"]):
            # Revoked while Redis was unreachable, perhaps by another process.
            raise exceptions.AuthenticationFailed(_INVALID)
        return user, entry["token_id"]

    def _from_database(self, key: str, digest: str) -> tuple[Any, Any]:
        token = api_token_find(key=key)
        if token is None:
            raise exceptions.AuthenticationFailed(_INVALID)
        now = timezone.now()
        if token.is_expired(now):
            raise exceptions.AuthenticationFailed(_EXPIRED)
        if not token.user.is_active:
            raise exceptions.AuthenticationFailed(_INACTIVE)
        if not api_token_touch(token=token):
            # Revoked since it was read: cache nothing (its tombstone is on the way).
            raise exceptions.AuthenticationFailed(_INVALID)
        timeout = float(settings.TOKEN_CACHE_TTL)
        if token.expires_at is not None:
            timeout = min(timeout, (token.expires_at - now).total_seconds())
        token_cache_set(digest, _entry_for(token), timeout=timeout)
        return token.user, token.pk
