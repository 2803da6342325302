"""questions.sqs.messages: the task message's wire format, encoded and decoded directly."""

from __future__ import annotations

import json

import pytest

from questions.sqs.messages import MalformedMessage, TaskMessage, decode_message, encode_message


def test_a_message_survives_the_round_trip():
    body = encode_message(
        task_path="questions.tasks.answer_question",
        result_id="r-1",
        args=["0b7e3c1a-0000-4000-8000-000000000001"],
        kwargs={"attempt": 2},
        enqueued_at="2026-01-01T00:00:00+00:00",
    )

    assert decode_message(body) == TaskMessage(
        task_path="questions.tasks.answer_question",
        result_id="r-1",
        args=["0b7e3c1a-0000-4000-8000-000000000001"],
        kwargs={"attempt": 2},
        enqueued_at="2026-01-01T00:00:00+00:00",
    )


def test_the_body_carries_ids_and_the_format_version_only():
    body = encode_message(task_path="t", result_id="r", args=[], kwargs={}, enqueued_at="e")

    assert json.loads(body) == {
        "v": 1,
        "task": "t",
        "id": "r",
        "args": [],
        "kwargs": {},
        "enqueued_at": "e",
    }


def test_missing_args_kwargs_and_enqueued_at_take_their_defaults():
    message = decode_message(json.dumps({"v": 1, "task": "t", "id": "r", "enqueued_at": 5}))

    assert (message.args, message.kwargs, message.enqueued_at) == ([], {}, None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("not json{", "body is not JSON"),
        ("", "body is not JSON"),
        ("[1, 2]", "body is not a JSON object"),
        ('"a string"', "body is not a JSON object"),
        ('{"task": "t", "id": "r"}', "unknown format version None"),
        ('{"v": 2, "task": "t", "id": "r"}', "unknown format version 2"),
        ('{"v": 1, "id": "r"}', "task and id must be strings"),
        ('{"v": 1, "task": "t", "id": 7}', "task and id must be strings"),
        (
            '{"v": 1, "task": "t", "id": "r", "args": {}}',
            "args must be a list and kwargs an object",
        ),
        (
            '{"v": 1, "task": "t", "id": "r", "kwargs": []}',
            "args must be a list and kwargs an object",
        ),
    ],
)
def test_each_malformed_body_is_refused_with_its_reason(body, reason):
    with pytest.raises(MalformedMessage) as caught:
        decode_message(body)

    assert str(caught.value).startswith(reason)
    assert isinstance(caught.value, ValueError)
