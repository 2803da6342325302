"""The API schema's pattern for a question (questions.services.QUESTION_TEXT_PATTERN) says what
validate_question_text accepts, no more and no less: a generated client that keeps to the schema
is never refused, and one that breaks it always is."""

from __future__ import annotations

import re
import sys

from django.conf import settings
from django.core.exceptions import ValidationError
from hypothesis import example, given
from hypothesis import strategies as st

from questions.services import QUESTION_TEXT_PATTERN, WHITESPACE, validate_question_text

PATTERN = re.compile(QUESTION_TEXT_PATTERN)
# Text weighted towards what the pattern is about: whitespace of every kind, NUL, the rest.
pieces = st.one_of(st.sampled_from([*WHITESPACE, "\x00", "a", "\u00e9", "\U0001f600"]), st.text())
texts = st.lists(pieces, max_size=12).map("".join)


def _accepted(text: str) -> bool:
    try:
        validate_question_text(text)
    except ValidationError:
        return False
    return True


def _schema_allows(text: str) -> bool:
    """JSON Schema: minLength, maxLength, and `pattern` searched for (not matched whole)."""
    limit = settings.QUESTIONS_MAX_LENGTH
    return 1 <= len(text) <= limit and PATTERN.search(text) is not None


def test_whitespace_is_what_strip_removes() -> None:
    every_space = {chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()}
    assert set(WHITESPACE) == every_space
    assert all(not (char + "x" + char).strip(WHITESPACE).startswith(char) for char in WHITESPACE)


@given(texts)
@example("")
@example(" \n\t")
@example("\x00")
@example("a\x00")
@example("\u3000why?\x85")
@example("\x1c\x1d")
def test_the_schema_allows_what_the_service_accepts(text: str) -> None:
    assert _schema_allows(text) == _accepted(text), repr(text)


def test_the_length_is_counted_as_sent() -> None:
    limit = settings.QUESTIONS_MAX_LENGTH
    assert _accepted("x" * limit) and _schema_allows("x" * limit)
    padded = " " + "x" * (limit - 1) + " "
    assert not _accepted(padded) and not _schema_allows(padded)
