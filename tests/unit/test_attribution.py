"""questions.attribution: the opaque per-user id sent as the request's `user` field."""

from __future__ import annotations

from questions.attribution import provider_user_id


def test_the_id_is_stable_per_user_and_differs_between_users():
    assert provider_user_id(user_id=7) == provider_user_id(user_id=7)
    assert provider_user_id(user_id=7) != provider_user_id(user_id=8)


def test_the_id_reveals_nothing_and_depends_on_the_secret_key(settings):
    first = provider_user_id(user_id=12345)
    assert "12345" not in first
    assert len(first) == 34 and first.startswith("u-")
    settings.SECRET_KEY = "another-secret-key-for-another-deployment"
    assert provider_user_id(user_id=12345) != first
