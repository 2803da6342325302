"""The peer a team would pick instead: Celery 5 on kombu's SQS transport, threads pool."""
