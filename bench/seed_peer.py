"""The seed's design, as the floor: one message per receive, processed sequentially.

    python -m bench.seed_peer --queue NAME

It runs the project's own task on each message and deletes it afterwards; nothing else.
"""

from __future__ import annotations

import argparse
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
django.setup()

from django.db import close_old_connections  # noqa: E402
from django.tasks.base import TaskContext  # noqa: E402

from questions.sqs.client import get_queue_url, get_sqs_client  # noqa: E402
from questions.sqs.messages import decode_message  # noqa: E402
from questions.sqs.worker import WorkerTaskContext  # noqa: E402
from questions.tasks import answer_question  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queue", required=True)
    args = parser.parse_args()
    client = get_sqs_client()
    url = get_queue_url(args.queue)
    print("seed consumer ready", flush=True)
    while True:
        messages = client.receive_message(
            QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1
        ).get("Messages", [])
        for message in messages:
            task_message = decode_message(message["Body"])
            context: TaskContext = WorkerTaskContext(task_result=None, max_attempts=5)  # type: ignore[arg-type]
            close_old_connections()
            answer_question.call(context, *task_message.args, **task_message.kwargs)
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


if __name__ == "__main__":
    main()
