"""Queue administration: create the queue and its DLQ, read depths, redrive the DLQ."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from questions.sqs.client import get_queue_url, get_sqs_client

if TYPE_CHECKING:
    from mypy_boto3_sqs.literals import QueueAttributeNameType
    from mypy_boto3_sqs.type_defs import SendMessageRequestTypeDef

_DEPTH_ATTRIBUTES: dict[str, QueueAttributeNameType] = {
    "visible": "ApproximateNumberOfMessages",
    "in_flight": "ApproximateNumberOfMessagesNotVisible",
    "delayed": "ApproximateNumberOfMessagesDelayed",
}


# How long SQS keeps a message (the queue's MessageRetentionPeriod, as queues_create sets it).
MESSAGE_RETENTION_SECONDS = 4 * 24 * 3600


@dataclass(frozen=True, slots=True)
class CreatedQueues:
    queue_url: str
    dlq_url: str
    dlq_arn: str


def queues_create(
    *, queue_name: str, dlq_name: str, visibility_timeout: int, max_receive_count: int
) -> CreatedQueues:
    """Create (or update) the queue, its DLQ and the redrive policy. Idempotent."""
    client = get_sqs_client()
    dlq_url = client.create_queue(
        QueueName=dlq_name, Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)}
    )["QueueUrl"]
    dlq_arn = client.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    attributes: dict[QueueAttributeNameType, str] = {
        "VisibilityTimeout": str(visibility_timeout),
        "MessageRetentionPeriod": str(MESSAGE_RETENTION_SECONDS),
        "RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive_count)}
        ),
    }
    try:
        queue_url = client.get_queue_url(QueueName=queue_name)["QueueUrl"]
    except client.exceptions.QueueDoesNotExist:
        queue_url = client.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
    else:
        # Existing queue: make its attributes match (create_queue would refuse a difference).
        client.set_queue_attributes(QueueUrl=queue_url, Attributes=attributes)
    return CreatedQueues(queue_url=queue_url, dlq_url=dlq_url, dlq_arn=dlq_arn)


def queue_depth(queue_url: str) -> dict[str, int]:
    """Approximate counts: visible, in flight (received, not deleted), delayed."""
    attributes = get_sqs_client().get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=list(_DEPTH_ATTRIBUTES.values())
    )["Attributes"]
    return {name: int(attributes.get(attr, 0)) for name, attr in _DEPTH_ATTRIBUTES.items()}


@dataclass(frozen=True, slots=True)
class QueueFacts:
    """What the requeue sweep needs to know of the queue: whether it holds no message at all
    (visible, in flight or delayed) and how long it keeps one."""

    drained: bool
    retention_seconds: int


def queue_facts(queue_name: str) -> QueueFacts:
    """The queue's facts, or the safe assumptions (not drained, the default retention) when
    SQS cannot be asked."""
    try:
        url = get_queue_url(queue_name)
        attributes = get_sqs_client().get_queue_attributes(
            QueueUrl=url,
            AttributeNames=[*_DEPTH_ATTRIBUTES.values(), "MessageRetentionPeriod"],
        )["Attributes"]
    except (BotoCoreError, ClientError):
        return QueueFacts(drained=False, retention_seconds=MESSAGE_RETENTION_SECONDS)
    return QueueFacts(
        drained=not any(int(attributes.get(a, 0)) for a in _DEPTH_ATTRIBUTES.values()),
        retention_seconds=int(attributes.get("MessageRetentionPeriod", MESSAGE_RETENTION_SECONDS)),
    )


@dataclass(frozen=True, slots=True)
class RedriveReport:
    moved: int
    remaining: int


def dlq_redrive(*, dlq_name: str, queue_name: str, limit: int | None = None) -> RedriveReport:
    """Move messages from the DLQ back to the queue by receive-and-resend.

    Works on any SQS server (start_message_move_task is not everywhere). Each message is sent
    to the queue before it is deleted from the DLQ, so a crash duplicates rather than loses.
    """
    client = get_sqs_client()
    dlq_url, queue_url = get_queue_url(dlq_name), get_queue_url(queue_name)
    moved = 0
    while limit is None or moved < limit:
        batch_size = 10 if limit is None else min(10, limit - moved)
        messages = client.receive_message(
            QueueUrl=dlq_url,
            MaxNumberOfMessages=batch_size,
            WaitTimeSeconds=1,
            VisibilityTimeout=60,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["MessageGroupId"],
        ).get("Messages", [])
        if not messages:
            break
        for message in messages:
            attributes = {
                key: value
                for key, value in (message.get("MessageAttributes") or {}).items()
                if key != "dead_letter_reason"
            }
            send_kwargs: SendMessageRequestTypeDef = {
                "QueueUrl": queue_url,
                "MessageBody": message["Body"],
            }
            if attributes:
                send_kwargs["MessageAttributes"] = attributes
            group_id = (message.get("Attributes") or {}).get("MessageGroupId")
            if group_id:  # back in its fair-queue group
                send_kwargs["MessageGroupId"] = group_id
            client.send_message(**send_kwargs)
            client.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            moved += 1
    return RedriveReport(moved=moved, remaining=sum(queue_depth(dlq_url).values()))
