from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from prometheus_client import start_http_server

from config.telemetry import configure_telemetry
from questions.llm.client import aclose_llm_clients
from questions.management.commands._options import int_range, non_negative_float
from questions.sqs.worker import Worker, flush_and_exit, restore_signal_handlers
from questions.worker.chores import oldest_queued_chore, queue_depth_chore, requeue_chore
from questions.worker.dbpool import shutdown_db_pool
from questions.worker.inflight import hand_back_unstarted
from questions.worker.supervisor import Supervisor, child_command
from questions.worker.warmup import warm_up

logger = logging.getLogger("questions.worker")


class Command(BaseCommand):
    help = (
        "Consume the SQS queue and answer questions with the LLM. SIGTERM (any number of times, "
        "to the main process or its whole group) or one Ctrl-C: stop receiving, finish the jobs "
        "in flight within --shutdown-timeout, give unstarted messages back, exit 0. A second "
        "Ctrl-C (SIGINT) or SIGQUIT forces an exit at once; what it cuts off is redelivered."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--queue", default=settings.SQS_QUEUE_NAME, help="Queue name (default: %(default)s)."
        )
        parser.add_argument(
            "--dlq", default=settings.SQS_DLQ_NAME, help="Dead-letter queue (default: %(default)s)."
        )
        parser.add_argument(
            "--concurrency",
            type=int_range(1, 512),
            default=4,
            help="Jobs in flight at once, as coroutines on one event loop (default: %(default)s).",
        )
        parser.add_argument(
            "--batch-size",
            type=int_range(1, 10),
            default=10,
            help="Most messages asked for per receive, 1..10 (default: %(default)s).",
        )
        parser.add_argument(
            "--wait-time",
            type=int_range(0, 20),
            default=20,
            help="Long-poll seconds when idle, 0..20 (default: %(default)s).",
        )
        parser.add_argument(
            "--visibility-timeout",
            type=int_range(1, 43200),
            default=settings.SQS_VISIBILITY_TIMEOUT,
            help="Seconds a received message stays invisible; the heartbeat renews it "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--max-attempts",
            type=int_range(1, 100),
            default=settings.QUESTIONS_MAX_ATTEMPTS,
            help="LLM attempts per job before it fails (default: QUESTIONS_MAX_ATTEMPTS, "
            "%(default)s; the daily budget reserves for that many).",
        )
        parser.add_argument(
            "--burst",
            action="store_true",
            help="Exit once the queue is empty and nothing is in flight.",
        )
        parser.add_argument(
            "--shutdown-timeout",
            type=non_negative_float,
            default=30.0,
            help="Seconds to let jobs in flight finish after SIGTERM or a first Ctrl-C; "
            "jobs still running then are cut off and redelivered. Give systemd, compose or "
            "Kubernetes a stop timeout longer than this (default: %(default)s).",
        )
        parser.add_argument(
            "--requeue-interval",
            type=non_negative_float,
            default=60.0,
            help="Seconds between sweeps that resend stale queued jobs; 0 turns them off "
            "(default: %(default)s).",
        )
        parser.add_argument(
            "--processes",
            type=int_range(1, 64),
            default=os.cpu_count() or 1,
            help="Worker processes, each with --concurrency jobs in flight, under one supervisor "
            "that restarts a child that died (default: one per core, %(default)s).",
        )
        parser.add_argument(
            "--alive-file",
            default=None,
            help="Touch this file on every turn of the event loop (about once a second), for a "
            "liveness probe that checks its age (default: off).",
        )
        parser.add_argument(
            "--metrics-port",
            type=int_range(0, 65535),
            default=None,
            help="Serve Prometheus metrics on this port (default: off).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["processes"] > 1:
            supervisor = Supervisor(
                child_argv=child_command(sys.argv),
                processes=options["processes"],
                metrics_port=options["metrics_port"],
            )
            code = supervisor.run()
            if code:
                raise SystemExit(code)
            return
        configure_telemetry("questions-worker")
        if options["metrics_port"] is not None:
            start_http_server(options["metrics_port"], addr=settings.METRICS_ADDR)
            logger.info("metrics on :%s/metrics", options["metrics_port"])
        warm_up()
        worker = Worker(
            queue_name=options["queue"],
            dlq_name=options["dlq"],
            concurrency=options["concurrency"],
            batch_size=options["batch_size"],
            wait_time=options["wait_time"],
            visibility_timeout=options["visibility_timeout"],
            max_attempts=options["max_attempts"],
            burst=options["burst"],
            shutdown_timeout=options["shutdown_timeout"],
            alive_file=options["alive_file"],
            on_stop=hand_back_unstarted,
            on_loop_end=aclose_llm_clients,
            chores=[
                requeue_chore(options["requeue_interval"], options["queue"]),
                queue_depth_chore(options["queue"]),
                oldest_queued_chore(),
            ],
        )
        previous = worker.install_signal_handlers()
        try:
            finished = worker.run()
        finally:
            restore_signal_handlers(previous)
        if finished:
            shutdown_db_pool()
        if not finished:
            # Job threads outlived the grace period; their messages were given back to SQS and
            # their claims expire on their own. Do not wait for them.
            logger.error("%s jobs were cut off by the shutdown timeout.", worker.unfinished)
            flush_and_exit(1)
