"""The wire format of a task message: JSON naming the task and its arguments, nothing else.

The body never carries the question text or a secret, only ids. Trace context travels in
MessageAttributes (W3C traceparent / tracestate) so the worker continues the request's trace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from opentelemetry import propagate

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import MessageAttributeValueTypeDef

FORMAT_VERSION = 1


class MalformedMessage(ValueError):
    """The body is not a task message this worker understands."""


@dataclass(frozen=True, slots=True)
class TaskMessage:
    task_path: str
    result_id: str
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: str | None


def encode_message(
    *, task_path: str, result_id: str, args: list[Any], kwargs: dict[str, Any], enqueued_at: str
) -> str:
    return json.dumps(
        {
            "v": FORMAT_VERSION,
            "task": task_path,
            "id": result_id,
            "args": args,
            "kwargs": kwargs,
            "enqueued_at": enqueued_at,
        },
        separators=(",", ":"),
    )


def decode_message(body: str) -> TaskMessage:
    try:
        data = json.loads(body)
    except (TypeError, ValueError) as exc:
        raise MalformedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedMessage("body is not a JSON object")
    if data.get("v") != FORMAT_VERSION:
        raise MalformedMessage(f"unknown format version {data.get('v')!r}")
    task_path, result_id = data.get("task"), data.get("id")
    args, kwargs = data.get("args", []), data.get("kwargs", {})
    if not isinstance(task_path, str) or not isinstance(result_id, str):
        raise MalformedMessage("task and id must be strings")
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise MalformedMessage("args must be a list and kwargs an object")
    enqueued_at = data.get("enqueued_at")
    return TaskMessage(
        task_path=task_path,
        result_id=result_id,
        args=args,
        kwargs=kwargs,
        enqueued_at=enqueued_at if isinstance(enqueued_at, str) else None,
    )


def trace_attributes() -> dict[str, MessageAttributeValueTypeDef]:
    """The current trace context as SQS MessageAttributes."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {
        key: {"DataType": "String", "StringValue": value} for key, value in carrier.items() if value
    }


def trace_carrier(message_attributes: dict[str, Any] | None) -> dict[str, str]:
    """The trace context carried by a received message, ready for `propagate.extract`."""
    carrier: dict[str, str] = {}
    for key, attribute in (message_attributes or {}).items():
        value = attribute.get("StringValue") if isinstance(attribute, dict) else None
        if isinstance(value, str):
            carrier[key] = value
    return carrier
