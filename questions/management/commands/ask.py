from __future__ import annotations

import time
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from questions.management.commands._options import non_negative_float
from questions.models import Question
from questions.services import question_create


class Command(BaseCommand):
    help = "Ask a question from the shell; with --wait, wait for the answer and print it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("question", help="The question to ask.")
        parser.add_argument(
            "--user", default="demo", help="Username who asks (default: %(default)s)."
        )
        parser.add_argument("--wait", action="store_true", help="Wait for the answer.")
        parser.add_argument(
            "--timeout",
            type=non_negative_float,
            default=120.0,
            help="With --wait, give up after this many seconds (default: %(default)s).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"]).first()
        if user is None:
            raise CommandError(f"No user named {options['user']!r}.")
        try:
            with transaction.atomic():
                question, _ = question_create(owner=user, text=options["question"])
        except ValidationError as exc:
            raise CommandError(" ".join(exc.messages)) from exc
        question.refresh_from_db()
        if question.enqueued_at is None:
            self.stderr.write(
                f"Job {question.pk} is recorded but could not be sent to SQS; it stays queued "
                "and requeue_jobs (or the worker's periodic sweep) will send it."
            )
        else:
            self.stdout.write(f"Job {question.pk} {question.status}.")
        if not options["wait"]:
            return
        deadline = time.monotonic() + options["timeout"]
        while not question.is_finished:
            if time.monotonic() > deadline:
                raise CommandError(
                    f"No answer after {options['timeout']:.0f}s; job {question.pk} is "
                    f"{question.status}. Is run_sqs_worker running?"
                )
            time.sleep(0.5)
            question.refresh_from_db()
        if question.status == Question.Status.FAILED:
            raise CommandError(f"Job {question.pk} failed: {question.error}")
        self.stdout.write(f"Answer ({question.model}):\n{question.answer}")
