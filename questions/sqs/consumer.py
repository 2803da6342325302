"""The SQS side of the worker and nothing else (dramatiq_sqs's `SQSConsumer` shape).

Receives, deletes, extends, gives back, delays and dead-letters messages with blocking boto3
calls, batched by 10 where SQS allows it, and looks at the `Failed` list of every batch call.
It knows nothing of tasks, jobs or threads; the runner calls it from a small thread pool.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from questions import metrics
from questions.sqs.client import get_queue_url, get_sqs_client
from questions.sqs.queues import queue_depth

if TYPE_CHECKING:
    from mypy_boto3_sqs.type_defs import (
        DeleteMessageBatchRequestEntryTypeDef,
        MessageTypeDef,
        SendMessageRequestTypeDef,
    )

logger = logging.getLogger("questions.sqs.worker")

SQS_ERRORS = (BotoCoreError, ClientError)
MAX_VISIBILITY_SECONDS = 12 * 60 * 60  # SQS's own limit


class Consumer:
    def __init__(self, *, queue_name: str, dlq_name: str, visibility_timeout: int) -> None:
        self.queue_name = queue_name
        self.dlq_name = dlq_name
        self.visibility_timeout = visibility_timeout
        self.queue_url = ""
        self.dlq_url: str | None = None

    def connect(self) -> None:
        """Look up the queue's URL (raises the SQS error while it is unreachable) and the DLQ's."""
        self.queue_url = get_queue_url(self.queue_name)
        try:
            self.dlq_url = get_queue_url(self.dlq_name)
        except SQS_ERRORS:
            logger.warning("DLQ %s not found; poison messages stay on the queue", self.dlq_name)
            self.dlq_url = None

    def receive(self, count: int, wait: int) -> list[MessageTypeDef]:
        response = get_sqs_client().receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=wait,
            VisibilityTimeout=self.visibility_timeout,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=[
                "ApproximateReceiveCount",
                "SentTimestamp",
                "MessageGroupId",
            ],
        )
        messages = response.get("Messages", [])
        if messages:
            metrics.SQS_MESSAGES.labels(action="received").inc(len(messages))
        return messages

    def delete(self, handles: Sequence[str]) -> None:
        """Delete in batches of 10; a message SQS refuses to delete is redelivered later (the
        job's claim makes that harmless), so failures are logged, not raised."""
        for chunk in iter_chunks(handles, 10):
            entries: list[DeleteMessageBatchRequestEntryTypeDef] = [
                {"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(chunk)
            ]
            for attempt in range(3):
                try:
                    response = get_sqs_client().delete_message_batch(
                        QueueUrl=self.queue_url, Entries=entries
                    )
                except SQS_ERRORS:
                    logger.warning("delete_message_batch failed", exc_info=True)
                    time.sleep(0.5 * (attempt + 1))
                    continue
                failed = response.get("Failed", [])
                metrics.SQS_MESSAGES.labels(action="deleted").inc(len(entries) - len(failed))
                for failure in failed:
                    logger.warning(
                        "SQS did not delete a message",
                        extra={"code": failure.get("Code"), "sqs_message": failure.get("Message")},
                    )
                break
            else:
                logger.error(
                    "gave up deleting %d messages (SQS unreachable); they return after their "
                    "visibility timeout and are dropped then as duplicates",
                    len(chunk),
                )

    def change_visibility(self, handles: Sequence[str], timeout: int) -> set[str]:
        """Set the visibility of messages (batched); returns the handles SQS refused."""
        refused: set[str] = set()
        for chunk in iter_chunks(handles, 10):
            response = get_sqs_client().change_message_visibility_batch(
                QueueUrl=self.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": h, "VisibilityTimeout": timeout}
                    for i, h in enumerate(chunk)
                ],
            )
            for failure in response.get("Failed", []):
                refused.add(chunk[int(failure["Id"])])
                logger.warning(
                    "SQS did not change a message's visibility",
                    extra={"code": failure.get("Code"), "sqs_message": failure.get("Message")},
                )
        return refused

    def extend(self, handles: Sequence[str]) -> set[str]:
        refused = self.change_visibility(handles, self.visibility_timeout)
        metrics.SQS_MESSAGES.labels(action="extended").inc(len(handles) - len(refused))
        return refused

    def give_back(self, handles: Sequence[str]) -> None:
        """Make messages visible again at once (received but not run, or cut off)."""
        if not handles:
            return
        try:
            self.change_visibility(handles, 0)
        except SQS_ERRORS:
            logger.warning(
                "could not give %d messages back (SQS unreachable); they return after their "
                "visibility timeout",
                len(handles),
            )
            return
        metrics.SQS_MESSAGES.labels(action="given_back").inc(len(handles))
        logger.info(f"Gave back {len(handles)} unstarted messages.")

    def retry_later(self, handle: str, delay: float, reason: str = "") -> None:
        seconds = min(max(math.ceil(delay), 0), MAX_VISIBILITY_SECONDS)
        logger.info("message to be delivered again", extra={"delay": seconds, "reason": reason})
        get_sqs_client().change_message_visibility(
            QueueUrl=self.queue_url, ReceiptHandle=handle, VisibilityTimeout=seconds
        )
        metrics.SQS_MESSAGES.labels(action="retried").inc()

    def dead_letter(self, message: MessageTypeDef, reason: str) -> bool:
        """Copy the message to the DLQ with its reason; False when there is no DLQ (then it
        stays, and the queue's redrive policy applies). The caller deletes the original."""
        if self.dlq_url is None:
            logger.error("no DLQ configured; leaving a poison message on the queue")
            return False
        attributes = dict(message.get("MessageAttributes") or {})
        attributes["dead_letter_reason"] = {
            "DataType": "String",
            "StringValue": reason[:256] or "unknown",
        }
        copy: SendMessageRequestTypeDef = {
            "QueueUrl": self.dlq_url,
            "MessageBody": message.get("Body", "") or "(empty)",
            "MessageAttributes": attributes,
        }
        group_id = (message.get("Attributes") or {}).get("MessageGroupId")
        if group_id:  # redrive_dlq sends it back in its fair-queue group
            copy["MessageGroupId"] = group_id
        get_sqs_client().send_message(**copy)
        metrics.SQS_MESSAGES.labels(action="dead_lettered").inc()
        logger.error(
            "message moved to the DLQ",
            extra={"message_id": message.get("MessageId"), "reason": reason},
        )
        return True

    def is_empty(self) -> bool:
        try:
            return not any(queue_depth(self.queue_url).values())
        except SQS_ERRORS:
            return False


def iter_chunks[T](items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
