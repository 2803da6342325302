from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from questions.selectors import question_status_counts
from questions.sqs.client import get_queue_url
from questions.sqs.queues import queue_depth


class Command(BaseCommand):
    help = "Show queue and DLQ depths and the jobs by status, with the oldest waiting job's age."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--queue", default=settings.SQS_QUEUE_NAME, help="Queue name.")
        parser.add_argument("--dlq", default=settings.SQS_DLQ_NAME, help="Dead-letter queue name.")
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            main = queue_depth(get_queue_url(options["queue"]))
            dlq = queue_depth(get_queue_url(options["dlq"]))
        except (BotoCoreError, ClientError) as exc:
            raise CommandError(f"Could not read the queues: {exc}") from exc
        try:
            jobs = question_status_counts()
        except DatabaseError as exc:
            raise CommandError(f"Could not read the jobs: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"queue": main, "dlq": dlq, "jobs": jobs}))
            return
        self.stdout.write(
            f"Queue {options['queue']}: {main['visible']} visible, {main['in_flight']} in flight, "
            f"{main['delayed']} delayed"
        )
        dlq_total = sum(dlq.values())
        self.stdout.write(f"DLQ   {options['dlq']}: {dlq_total} messages")
        statuses = ", ".join(f"{jobs[s]} {s}" for s in ("queued", "running", "succeeded", "failed"))
        self.stdout.write(f"Jobs: {statuses}")
        age = jobs["oldest_waiting_seconds"]
        self.stdout.write("Oldest waiting job: " + ("none" if age is None else f"{age:.0f}s old"))
