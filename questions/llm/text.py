"""Text from a provider, made fit to store and to send on: what PostgreSQL and Redis can encode."""

from __future__ import annotations


def without_lone_surrogates(text: str) -> str:
    """Each lone UTF-16 surrogate (a JSON "\\ud800" without its pair) replaced by U+FFFD: such
    a string cannot be encoded as UTF-8, so PostgreSQL (psycopg) and Redis would refuse it with
    a UnicodeEncodeError. A surrogate pair split across two pieces is joined again."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def storable_text(text: str) -> str:
    """What a PostgreSQL text column takes: no NUL characters, no lone surrogates."""
    return without_lone_surrogates(text.replace("\x00", ""))
