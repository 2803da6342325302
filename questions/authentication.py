"""DRF token authentication with the token → user lookup cached in Redis.

Without it every API request costs a PostgreSQL query before any work is done. A token that is
regenerated or deleted is dropped from the cache at once (questions.accounts and the Token
post_delete receiver); a user deactivated in the meantime keeps API access for at most
`TOKEN_CACHE_TTL` seconds. With Redis down, every request falls back to PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication

from questions.cache import token_cache_get, token_cache_set


class CachedTokenAuthentication(TokenAuthentication):
    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        user = token_cache_get(key)
        if user is None:
            user, token = super().authenticate_credentials(key)
            token_cache_set(key, user)
            return user, token
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, key
