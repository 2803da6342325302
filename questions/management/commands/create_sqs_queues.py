from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from questions.management.commands._options import int_range
from questions.sqs.queues import queues_create


class Command(BaseCommand):
    help = (
        "Create the SQS queues (jobs, webhook deliveries), their dead-letter queues and "
        "redrive policies (idempotent)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=settings.SQS_QUEUE_NAME, help="Queue name.")
        parser.add_argument("--dlq", default=settings.SQS_DLQ_NAME, help="Dead-letter queue name.")
        parser.add_argument(
            "--webhook-queue",
            default=settings.SQS_WEBHOOK_QUEUE_NAME,
            help="Queue of webhook deliveries.",
        )
        parser.add_argument(
            "--webhook-dlq",
            default=settings.SQS_WEBHOOK_DLQ_NAME,
            help="Dead-letter queue of webhook deliveries.",
        )
        parser.add_argument(
            "--visibility-timeout",
            type=int_range(0, 43200),
            default=settings.SQS_VISIBILITY_TIMEOUT,
            help="Default visibility timeout, seconds.",
        )
        parser.add_argument(
            "--max-receive-count",
            type=int_range(1, 1000),
            default=settings.SQS_MAX_RECEIVE_COUNT,
            help="Deliveries before SQS moves a message to the DLQ.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            created = queues_create(
                queue_name=options["queue"],
                dlq_name=options["dlq"],
                visibility_timeout=options["visibility_timeout"],
                max_receive_count=options["max_receive_count"],
            )
            webhooks = queues_create(
                queue_name=options["webhook_queue"],
                dlq_name=options["webhook_dlq"],
                visibility_timeout=options["visibility_timeout"],
                # A delivery is retried for a day: far more receives than a job's.
                max_receive_count=settings.SQS_WEBHOOK_MAX_RECEIVE_COUNT,
            )
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"Could not create the queues: {exc}") from exc
        self.stdout.write(f"Queue {options['queue']}: {created.queue_url}")
        self.stdout.write(
            f"DLQ   {options['dlq']}: {created.dlq_url} "
            f"(after {options['max_receive_count']} receives)"
        )
        self.stdout.write(f"Queue {options['webhook_queue']}: {webhooks.queue_url}")
        self.stdout.write(
            f"DLQ   {options['webhook_dlq']}: {webhooks.dlq_url} "
            f"(after {settings.SQS_WEBHOOK_MAX_RECEIVE_COUNT} receives)"
        )
