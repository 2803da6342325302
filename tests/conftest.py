"""The test rig: real PostgreSQL and Redis, a real SQS server (moto) over HTTP, and the fake
OpenAI-wire server from tests/fakes/llm_server.py. Nothing of the project's own code is mocked."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from questions import cache as job_cache
from questions.accounts import api_token_create
from questions.llm.client import reset_llm_client
from questions.sqs.client import get_sqs_client, reset_sqs_client
from questions.sqs.queues import queue_depth, queues_create
from questions.worker.dbpool import shutdown_db_pool
from tests.factories import UserFactory
from tests.fakes.llm_server import FakeLLM
from tests.fakes.sqs import start_moto
from tests.support import ROOT, WorkerProcess, child_env, free_port, wait_until

ARTIFACTS = ROOT / "test-artifacts"

# Credentials for the local SQS server; boto3 refuses to sign without some.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@pytest.hookimpl(trylast=True)  # after pytest-django has put the database tests in its order
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked `slow(seconds)` first, longest first; the rest keep their order. A
    parallel run (`make test`: pytest-xdist) hands out tests in this order, so its workers start
    on the long ones and share out the short ones, rather than one worker finishing the chaos
    soak alone at the end."""

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return float(mark.args[0]) if mark is not None else 0.0

    items.sort(key=lambda item: -seconds(item))  # stable: ties keep their order


@pytest.fixture(scope="session")
def sqs_endpoint() -> Iterator[str]:
    """A moto SQS server for the whole session (or the one AWS_ENDPOINT_URL_SQS names)."""
    if os.environ.get("TEST_SQS_ENDPOINT"):
        endpoint = os.environ["TEST_SQS_ENDPOINT"]
        process = None
    else:
        port = free_port()
        endpoint = f"http://127.0.0.1:{port}"
        process = start_moto(port)
    os.environ["AWS_ENDPOINT_URL_SQS"] = endpoint
    reset_sqs_client()

    def reachable() -> bool:
        try:
            get_sqs_client().list_queues()
        except Exception:
            return False
        return True

    wait_until(reachable, timeout=30, interval=0.2, what="the SQS server to start")
    yield endpoint
    if process is not None:
        process.terminate()
        process.wait(timeout=10)


@dataclass
class Queues:
    name: str
    dlq_name: str
    url: str
    dlq_url: str

    def depth(self) -> dict[str, int]:
        return queue_depth(self.url)

    def dlq_messages(self) -> list[dict[str, Any]]:
        """Everything in the DLQ (received with a short visibility, so left in place)."""
        messages: dict[str, dict[str, Any]] = {}
        for _ in range(5):
            batch = (
                get_sqs_client()
                .receive_message(
                    QueueUrl=self.dlq_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=0,
                    VisibilityTimeout=1,
                    MessageAttributeNames=["All"],
                )
                .get("Messages", [])
            )
            for message in batch:
                messages[message["MessageId"]] = message
            if not batch:
                break
        return list(messages.values())

    def send_raw(self, body: str) -> None:
        get_sqs_client().send_message(QueueUrl=self.url, MessageBody=body)


@pytest.fixture
def queues(sqs_endpoint: str, settings: Any) -> Queues:
    """A fresh queue + DLQ for this test, named in settings."""
    suffix = uuid.uuid4().hex[:10]
    name, dlq_name = f"questions-{suffix}", f"questions-dlq-{suffix}"
    created = queues_create(
        queue_name=name, dlq_name=dlq_name, visibility_timeout=30, max_receive_count=10
    )
    settings.SQS_QUEUE_NAME = name
    settings.SQS_DLQ_NAME = dlq_name
    return Queues(name=name, dlq_name=dlq_name, url=created.queue_url, dlq_url=created.dlq_url)


@pytest.fixture(scope="session")
def fake_llm_server() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


@pytest.fixture
def fake_llm(fake_llm_server: FakeLLM, settings: Any) -> Iterator[FakeLLM]:
    """The OpenAI-wire test server, reset, and the project configured to use it."""
    fake_llm_server.reset()
    settings.OPENAI_BASE_URL = fake_llm_server.base_url
    settings.OPENAI_API_KEY = "sk-test-not-a-real-key"
    settings.OPENAI_MODEL = "gpt-4o-mini"
    settings.OPENAI_TIMEOUT = 10.0
    reset_llm_client()
    yield fake_llm_server
    reset_llm_client()


@pytest.fixture(autouse=True)
def _clean_cache_state() -> Iterator[None]:
    """Each test starts with an empty Redis test database and a closed cache breaker."""
    job_cache.reset_breaker()
    with contextlib.suppress(Exception):  # a test that takes Redis down restores it itself
        # This run's keys only: django-redis's clear() is FLUSHDB, which would also wipe the
        # keys of every other test run sharing this Redis database.
        cache.delete_pattern("*")
    yield
    job_cache.reset_breaker()


@pytest.fixture(autouse=True)
def _close_worker_db_pool() -> Iterator[None]:
    """An in-process worker's database threads keep their connections: close them after."""
    yield
    shutdown_db_pool()


@pytest.fixture
def user() -> Any:
    return UserFactory()


@pytest.fixture
def other_user() -> Any:
    return UserFactory()


@pytest.fixture
def staff_user() -> Any:
    return UserFactory(is_staff=True)


def _token_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {api_token_create(user=user, name='tests').key}")
    return client


@pytest.fixture
def api(user: Any) -> APIClient:
    """An API client authenticated with `user`'s token."""
    return _token_client(user)


@pytest.fixture
def api_for() -> Callable[[Any], APIClient]:
    return _token_client


def _logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def client_for() -> Callable[[Any], Client]:
    """A Django test client logged in as the given user: the web pages without a browser."""
    return _logged_in


@pytest.fixture
def page(user: Any) -> Client:
    """The web pages as `user`, logged in (a Django test client, not a browser)."""
    return _logged_in(user)


@pytest.fixture
def superuser_client() -> Client:
    """The admin as a superuser, named to sort after the users a test makes."""
    return _logged_in(UserFactory(is_staff=True, is_superuser=True, username="zz-admin"))


@pytest.fixture
def run_worker(queues: Queues) -> Callable[..., None]:
    """Run the worker in-process until the queue is drained (--burst). It logs, not prints."""

    def run(*extra: str) -> None:
        call_command(
            "run_sqs_worker",
            "--processes=1",
            "--burst",
            "--wait-time=1",
            "--requeue-interval=0",
            *extra,
        )

    return run


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    """A folder for this test's artefacts (screenshots, logs) under test-artifacts/."""
    path = ARTIFACTS / request.node.name.replace("/", "_").replace("[", "_").replace("]", "")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def worker_process(queues: Queues, artifacts: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `run_sqs_worker` as a real subprocess sharing this test's DB, Redis, queues, LLM."""
    started: list[WorkerProcess] = []

    def start(
        *args: str, env: dict[str, str] | None = None, new_session: bool = False
    ) -> WorkerProcess:
        process = WorkerProcess(
            ["--processes=1", "--wait-time=1", *args],
            env=child_env(**(env or {})),
            log_path=artifacts / f"worker-{len(started)}.log",
            new_session=new_session,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        process.close()
