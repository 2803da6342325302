"""questions.live.slots: caps on open streams, exact in Redis, and per process while Redis is
unreachable (real Redis; a dead port for the outage)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from questions.live.slots import (
    Refused,
    Scope,
    Slot,
    reset_slots_breaker,
    slot_acquire,
    slot_counts,
)
from tests.support import free_port


@pytest.fixture(autouse=True)
def _closed_breaker() -> Iterator[None]:
    reset_slots_breaker()
    yield
    reset_slots_breaker()


def _scopes(limit: int) -> list[Scope]:
    return [Scope(f"user:{uuid.uuid4().hex}", limit), Scope(f"ip:{uuid.uuid4().hex}", 0)]


def test_slots_are_taken_in_every_scope_or_none_and_given_back():
    user = Scope(f"user:{uuid.uuid4().hex}", 2)
    ip = Scope(f"ip:{uuid.uuid4().hex}", 3)
    first, second = slot_acquire([user, ip]), slot_acquire([user, ip])
    assert isinstance(first, Slot) and first.in_redis and isinstance(second, Slot)
    refused = slot_acquire([user, ip])
    assert isinstance(refused, Refused) and refused.scope == user and refused.retry_after >= 1
    # The refusal took nothing in the IP scope: one more for another user still fits there.
    assert slot_counts([user, ip]) == {user.name: 2, ip.name: 2}
    other = Scope(f"user:{uuid.uuid4().hex}", 2)
    assert isinstance(slot_acquire([other, ip]), Slot)
    assert isinstance(slot_acquire([other, ip]), Refused)  # the IP is full now

    asyncio.run(first.release())
    assert slot_counts([user, ip]) == {user.name: 1, ip.name: 2}
    assert isinstance(slot_acquire([user, ip]), Slot)


def test_with_redis_unreachable_the_process_counts_its_own_streams(settings):
    settings.CACHES = {
        **settings.CACHES,
        "default": {**settings.CACHES["default"], "LOCATION": f"redis://127.0.0.1:{free_port()}/0"},
    }
    scopes = _scopes(2)
    held = [slot_acquire(scopes), slot_acquire(scopes)]
    assert all(isinstance(slot, Slot) and not slot.in_redis for slot in held)
    assert isinstance(slot_acquire(scopes), Refused)
    asyncio.run(held[0].release())  # type: ignore[union-attr]
    assert isinstance(slot_acquire(scopes), Slot)
