"""Signing secrets: made here, kept encrypted at rest, and used to sign each attempt the
Standard Webhooks way (the `standardwebhooks` package) so any receiver library can verify.

The secret is `whsec_` + base64 of 32 random bytes. Stored with Fernet under a key derived
(HKDF-SHA256) from QUESTIONS_WEBHOOK_SECRET_KEY, or from DJANGO_SECRET_KEY when that is unset.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from standardwebhooks.webhooks import Webhook

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
SECRET_BYTES = 32
_HKDF_INFO = b"questions.webhooks.signing-secret"


class SecretUnreadable(Exception):
    """The stored secret does not decrypt: the encryption key changed since it was made."""


def secret_generate() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def _fernet() -> Fernet:
    material = settings.QUESTIONS_WEBHOOK_SECRET_KEY or settings.SECRET_KEY
    if not material:
        raise SecretUnreadable("Set QUESTIONS_WEBHOOK_SECRET_KEY or DJANGO_SECRET_KEY.")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO).derive(
        material.encode()
    )
    return Fernet(base64.urlsafe_b64encode(key))


def secret_encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def secret_decrypt(encrypted: str) -> str:
    try:
        return _fernet().decrypt(encrypted.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable(
            "The signing secret cannot be decrypted (the encryption key changed); "
            "rotate the endpoint's secret."
        ) from None


def signed_headers(*, secret: str, webhook_id: str, payload: str, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt (signed at the attempt's time: receivers
    refuse timestamps more than a few minutes off)."""
    at = at.astimezone(UTC)
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=webhook_id, timestamp=at, data=payload),
    }
