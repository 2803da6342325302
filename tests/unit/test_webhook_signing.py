"""questions.webhooks.signing: secrets made, kept encrypted, and signatures any Standard
Webhooks library verifies."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from questions.webhooks.signing import (
    SecretUnreadable,
    secret_decrypt,
    secret_encrypt,
    secret_generate,
    signed_headers,
)


def test_a_secret_is_whsec_and_32_random_bytes():
    secret = secret_generate()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert secret != secret_generate()


def test_stored_encrypted_and_unreadable_under_another_key(settings):
    secret = secret_generate()
    encrypted = secret_encrypt(secret)
    assert secret not in encrypted
    assert secret_decrypt(encrypted) == secret
    settings.QUESTIONS_WEBHOOK_SECRET_KEY = "another key"
    with pytest.raises(SecretUnreadable, match="rotate"):
        secret_decrypt(encrypted)


def test_headers_verify_with_the_library():
    secret = secret_generate()
    payload = '{"type":"question.failed","data":{"question":"Ça va ?"}}'
    headers = signed_headers(
        secret=secret, webhook_id="msg_1", payload=payload, at=datetime.now(UTC)
    )
    assert Webhook(secret).verify(payload.encode(), headers)["data"]["question"] == "Ça va ?"
