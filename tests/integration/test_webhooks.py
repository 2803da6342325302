"""Completion webhooks end to end: the API and the page register endpoints, a job's end records
a delivery, the worker on the webhook queue (moto SQS) sends it to a real HTTP receiver on
127.0.0.1, signed so that the `standardwebhooks` library verifies it. Retries keep the
webhook-id; 410 disables; addresses that are not public are refused at registration and again
at delivery."""

from __future__ import annotations

import io
import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from ipaddress import ip_network
from typing import Any

import pytest
from django.core.management import call_command
from django.http import Http404
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from questions import metrics
from questions.models import Question, WebhookDelivery, WebhookEndpoint
from questions.retention import questions_prune
from questions.services import question_cancel
from questions.sqs.client import get_sqs_client
from questions.sqs.exceptions import RetryLater
from questions.sqs.queues import queue_depth, queues_create
from questions.sqs.worker import Worker
from questions.webhooks.services import (
    webhook_deliver,
    webhook_endpoint_create,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
)
from tests.factories import QuestionFactory, ask, wait_for_status
from tests.fakes.tls import make_tls_files
from tests.fakes.webhook_receiver import WebhookReceiver
from tests.support import assert_json_error, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

Delivery = WebhookDelivery.Status
LOOPBACK = [ip_network("127.0.0.0/8")]
EVERYWHERE = [ip_network("0.0.0.0/0"), ip_network("::/0")]


@pytest.fixture
def webhook_queue(sqs_endpoint: str, settings: Any) -> str:
    """A fresh webhook queue + DLQ; http and 127.0.0.0/8 allowed; retries after about 1 s."""
    suffix = uuid.uuid4().hex[:10]
    name = f"questions-webhooks-{suffix}"
    queues_create(
        queue_name=name,
        dlq_name=f"questions-webhooks-dlq-{suffix}",
        visibility_timeout=30,
        max_receive_count=100,
    )
    settings.SQS_WEBHOOK_QUEUE_NAME = name
    settings.SQS_WEBHOOK_DLQ_NAME = f"questions-webhooks-dlq-{suffix}"
    settings.QUESTIONS_WEBHOOK_ALLOW_HTTP = True
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = LOOPBACK
    settings.QUESTIONS_WEBHOOK_RETRY_BASE = 0.5
    settings.QUESTIONS_WEBHOOK_RETRY_CAP = 1.0
    settings.QUESTIONS_WEBHOOK_TIMEOUT = 5.0
    return name


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@contextmanager
def webhook_worker(queue_name: str) -> Iterator[Worker]:
    """The same worker as for jobs, consuming the webhook queue, on a thread."""
    worker = Worker(
        queue_name=queue_name, dlq_name=f"{queue_name}-unused", wait_time=1, visibility_timeout=10
    )
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(timeout=30)
        assert not thread.is_alive()


def register(api: Any, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = api.post(
        "/api/webhooks/",
        {"url": url, "events": events or ["question.succeeded", "question.cancelled"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def cancelled_job(user: Any) -> Question:
    """A job of `user` that ends now (Stop on a queued job): its event is recorded."""
    return question_cancel(question=QuestionFactory(owner=user))


def delivery_of(question: Question) -> WebhookDelivery:
    return WebhookDelivery.objects.get(question=question)


def verified(secret: str, received: Any) -> dict[str, Any]:
    return Webhook(secret).verify(received.body, received.headers)


def outcome_count(outcome: str) -> float:
    return metrics.WEBHOOK_DELIVERIES.labels(outcome=outcome)._value.get()


# --- Signed, and the job as the API shows it


def test_event_is_signed_verifiable_and_carries_the_job(
    api, user, queues, fake_llm, run_worker, webhook_queue, receiver
):
    endpoint = register(api, receiver.url)
    secret = endpoint["secret"]
    assert secret.startswith("whsec_")
    question = ask(user)
    run_worker()  # the job's worker answers it with the fake LLM
    wait_for_status(question, "succeeded", timeout=10, what="the job to succeed")
    delivery = delivery_of(question)
    assert delivery.event == "question.succeeded"
    assert queue_depth(queues.url)["visible"] == 0

    with webhook_worker(webhook_queue):
        wait_until(lambda: receiver.requests(), timeout=20, what="the receiver to get the event")
        wait_until(
            lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == Delivery.SUCCEEDED,
            timeout=10,
            what="the delivery to be stored as succeeded",
        )

    [received] = receiver.requests()
    assert received.path == "/hooks/questions"
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"] == f"msg_{delivery.pk.hex}"
    body = verified(secret, received)
    assert body["type"] == "question.succeeded"
    # The job exactly as the API shows it (its url as a path: the sender knows no host name).
    shown = api.get(f"/api/questions/{question.pk}/").json()
    assert body["data"] == {**shown, "url": f"/api/questions/{question.pk}/"}
    assert shown["url"].endswith(body["data"]["url"])
    # Another secret, or a body changed in transit, does not verify.
    other = webhook_endpoint_create(owner=user, url=receiver.url, events=["question.failed"])[1]
    with pytest.raises(WebhookVerificationError):
        verified(other, received)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(received.body.replace(b"succeeded", b"failed"), received.headers)

    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.attempts, stored.last_status_code, stored.last_error) == (1, 200, "")
    # The event the endpoint did not ask for is not recorded.
    QuestionFactory(owner=user, status=Question.Status.RUNNING)
    assert WebhookDelivery.objects.count() == 1


# --- Retries: a receiver down for a while gets the event once back, with the same webhook-id


def test_receiver_down_then_failing_then_up_gets_the_event_with_one_webhook_id(
    api, user, webhook_queue, receiver
):
    secret = register(api, receiver.url)["secret"]
    receiver.stop()  # down: connections refused
    question = cancelled_job(user)
    delivery = delivery_of(question)
    with webhook_worker(webhook_queue):
        wait_until(
            lambda: WebhookDelivery.objects.get(pk=delivery.pk).attempts >= 3,
            timeout=30,
            what="three failed attempts while the receiver is down",
        )
        down = WebhookDelivery.objects.get(pk=delivery.pk)
        assert down.status == Delivery.PENDING
        assert down.last_error.startswith("Could not connect"), down.last_error
        assert down.next_attempt_at is not None
        assert WebhookEndpoint.objects.get().failing_since is not None

        receiver.status = 503  # back, but failing once more
        receiver.start()
        wait_until(lambda: receiver.requests(), timeout=20, what="an attempt once it is back")
        receiver.status = 200
        wait_until(
            lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == Delivery.SUCCEEDED,
            timeout=20,
            what="the delivery to succeed once the receiver answers 200",
        )

    requests = receiver.requests()
    assert [r.headers["webhook-id"] for r in requests] == [f"msg_{delivery.pk.hex}"] * 2
    assert [verified(secret, r)["data"]["id"] for r in requests] == [str(question.pk)] * 2
    assert requests[0].body == requests[1].body
    done = WebhookDelivery.objects.get(pk=delivery.pk)
    assert done.attempts >= 5
    assert done.last_status_code == 200
    assert WebhookEndpoint.objects.get().failing_since is None
    assert WebhookEndpoint.objects.get().is_active


# --- 410 disables; a day of failures disables; the owner sees why


def test_410_disables_the_endpoint_and_its_owner_sees_why(api, page, user, webhook_queue, receiver):
    endpoint = register(api, receiver.url)
    receiver.status = 410
    gone_before = outcome_count("gone")
    first = delivery_of(cancelled_job(user))
    with webhook_worker(webhook_queue):
        wait_until(
            lambda: WebhookDelivery.objects.get(pk=first.pk).status == Delivery.FAILED,
            timeout=20,
            what="the 410 to end the delivery",
        )
    assert len(receiver.requests()) == 1
    assert outcome_count("gone") == gone_before + 1
    shown = api.get(f"/api/webhooks/{endpoint['id']}/").json()
    assert shown["is_active"] is False
    assert "410 Gone" in shown["disabled_reason"]
    assert shown["disabled_at"] is not None
    assert "410 Gone" in page.get("/account/webhooks/").content.decode()
    # Nothing more is recorded for it; enabling it again (the owner's fix) turns it back on.
    cancelled_job(user)
    assert WebhookDelivery.objects.count() == 1
    enabled = api.post(f"/api/webhooks/{endpoint['id']}/enable")
    assert enabled.status_code == 200
    assert enabled.json()["is_active"] is True
    assert enabled.json()["disabled_reason"] == ""


def test_an_endpoint_failing_for_a_day_is_disabled(api, user, webhook_queue, receiver):
    endpoint = register(api, receiver.url)
    receiver.status = 500
    delivery = delivery_of(cancelled_job(user))
    with pytest.raises(RetryLater):
        webhook_deliver(delivery_id=str(delivery.pk))
    assert WebhookEndpoint.objects.get().is_active
    # A day of failures later (the stored state moved back a day): the next failure disables.
    day_ago = timezone.now() - timedelta(hours=24, minutes=1)
    WebhookEndpoint.objects.update(failing_since=day_ago)
    WebhookDelivery.objects.update(retry_until=day_ago)
    assert webhook_deliver(delivery_id=str(delivery.pk)) == "failed"

    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.attempts, stored.last_status_code) == (Delivery.FAILED, 2, 500)
    shown = api.get(f"/api/webhooks/{endpoint['id']}/").json()
    assert shown["is_active"] is False
    assert "Every delivery failed from" in shown["disabled_reason"]
    assert "HTTP 500" in shown["disabled_reason"]


def test_redirects_are_not_followed(api, user, webhook_queue, receiver):
    register(api, receiver.url)
    receiver.status = 307
    delivery = delivery_of(cancelled_job(user))
    with pytest.raises(RetryLater):
        webhook_deliver(delivery_id=str(delivery.pk))
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert (stored.status, stored.last_status_code) == (Delivery.PENDING, 307)
    assert len(receiver.requests()) == 1


# --- SSRF: refused at registration, and again at delivery

REFUSED_URLS = [
    ("http://127.0.0.1:{port}/hook", "loopback"),
    ("http://10.0.0.1/hook", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[::1]:{port}/hook", "loopback"),
    ("http://localhost:{port}/hook", "loopback"),
]


@pytest.mark.parametrize(("url", "kind"), REFUSED_URLS)
def test_addresses_that_are_not_public_are_refused_at_registration(
    api, settings, webhook_queue, url, kind
):
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = []
    response = api.post(
        "/api/webhooks/",
        {"url": url.format(port=8080), "events": ["question.succeeded"]},
        format="json",
    )
    body = assert_json_error(response, 400, "invalid")
    assert f"may not be sent to a {kind} address" in body["fields"]["url"][0]
    if "localhost" in url:
        assert "localhost resolves to it" in body["fields"]["url"][0]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(("url", "kind"), REFUSED_URLS)
def test_addresses_that_are_not_public_are_refused_again_at_delivery(
    settings, user, webhook_queue, receiver, url, kind
):
    """DNS rebinding: the name (or the rules) may change between registration and delivery; each
    attempt checks again, and connects to nothing it refused."""
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = EVERYWHERE
    webhook_endpoint_create(
        owner=user, url=url.format(port=receiver.port), events=["question.cancelled"]
    )
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = []
    blocked_before = outcome_count("blocked")
    delivery = delivery_of(cancelled_job(user))
    with pytest.raises(RetryLater):
        webhook_deliver(delivery_id=str(delivery.pk))
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert stored.status == Delivery.PENDING
    assert stored.last_error.startswith(f"Refused: Webhooks may not be sent to a {kind} address")
    assert stored.last_status_code is None
    assert receiver.requests() == []
    assert outcome_count("blocked") == blocked_before + 1


def test_a_name_not_in_dns_yet_is_taken_and_checked_at_each_delivery(
    api, user, webhook_queue, receiver
):
    """`.invalid` never resolves (RFC 2606): no address to refuse at registration, and nothing
    to send to at delivery, which is retried (the name may appear, and is checked then)."""
    response = api.post(
        "/api/webhooks/",
        {"url": "https://hooks.no-such-host.invalid/q", "events": ["question.cancelled"]},
        format="json",
    )
    assert response.status_code == 201, response.content
    delivery = delivery_of(cancelled_job(user))
    with pytest.raises(RetryLater):
        webhook_deliver(delivery_id=str(delivery.pk))
    stored = WebhookDelivery.objects.get(pk=delivery.pk)
    assert stored.status == Delivery.PENDING
    assert "could not be resolved" in stored.last_error
    assert stored.last_status_code is None


def test_an_endpoint_deleted_meanwhile_is_a_404_not_a_500(api, user, webhook_queue, receiver):
    """Two requests at once (found by the API contract test): one deletes the endpoint after
    the other read it; enabling or rotating it then is a 404."""
    endpoint, _ = webhook_endpoint_create(
        owner=user, url=receiver.url, events=["question.succeeded"]
    )
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()
    with pytest.raises(Http404):
        webhook_endpoint_enable(endpoint=endpoint)
    with pytest.raises(Http404):
        webhook_endpoint_rotate_secret(endpoint=endpoint)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ({"url": "ftp://example.com/", "events": ["question.failed"]}, "url", "https://"),
        ({"url": "ftp://example.com/", "events": ["nope"]}, "events", "Unknown"),
        ({"url": "not a url", "events": ["question.failed"]}, "url", "spaces"),
        ({"url": "https://user:pw@example.com/", "events": ["question.failed"]}, "url", "password"),
        ({"url": 42, "events": ["question.failed"]}, "url", "string"),
        ({"url": "https://example.com/", "events": ["question.started"]}, "events", "Unknown"),
        ({"url": "https://example.com/", "events": []}, "events", "non-empty"),
        ({"url": "https://example.com/"}, "events", "required"),
        (
            {"url": "https://example.com/", "events": ["question.failed", "question.failed"]},
            "events",
            "listed twice",
        ),
    ],
)
def test_bad_input_is_a_clear_400(api, body, field, message):
    body_out = assert_json_error(api.post("/api/webhooks/", body, format="json"), 400, "invalid")
    assert message in " ".join(body_out["fields"][field])


def test_http_is_refused_unless_allowed(api, settings, webhook_queue, receiver):
    settings.QUESTIONS_WEBHOOK_ALLOW_HTTP = False
    response = api.post(
        "/api/webhooks/", {"url": receiver.url, "events": ["question.failed"]}, format="json"
    )
    body = assert_json_error(response, 400, "invalid")
    assert "plain http is not allowed" in body["fields"]["url"][0]


# --- The secret is shown once; endpoints are their owner's


def test_secret_is_shown_once_and_never_readable_again(
    api, user, webhook_queue, receiver, superuser_client
):
    created = register(api, receiver.url)
    secret = created["secret"]
    endpoint = WebhookEndpoint.objects.get()
    assert secret not in endpoint.secret_encrypted
    listed = api.get("/api/webhooks/")
    detail = api.get(f"/api/webhooks/{created['id']}/")
    for response in (listed, detail):
        assert response.status_code == 200
        assert secret not in response.content.decode()
        assert "secret" not in response.content.decode()
    assert [e["id"] for e in listed.json()] == [created["id"]]
    # Staff neither: the admin shows no secret, not even encrypted.
    delivery = delivery_of(cancelled_job(user))
    for url in (
        "/admin/questions/webhookendpoint/",
        f"/admin/questions/webhookendpoint/{endpoint.pk}/change/",
        f"/admin/questions/webhookdelivery/{delivery.pk}/change/",
    ):
        page = superuser_client.get(url)
        assert page.status_code == 200, url
        assert secret not in page.content.decode()
        assert endpoint.secret_encrypted not in page.content.decode()

    rotated = api.post(f"/api/webhooks/{created['id']}/rotate-secret")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != secret
    webhook_deliver(delivery_id=str(delivery.pk))
    [received] = receiver.requests()
    assert verified(new_secret, received)["type"] == "question.cancelled"
    with pytest.raises(WebhookVerificationError):
        verified(secret, received)


def test_another_users_endpoint_is_a_404(api, api_for, other_user, webhook_queue, receiver):
    created = register(api, receiver.url)
    other = api_for(other_user)
    assert other.get("/api/webhooks/").json() == []
    for method, path in (
        ("get", f"/api/webhooks/{created['id']}/"),
        ("delete", f"/api/webhooks/{created['id']}/"),
        ("post", f"/api/webhooks/{created['id']}/rotate-secret"),
        ("post", f"/api/webhooks/{created['id']}/enable"),
    ):
        assert_json_error(getattr(other, method)(path), 404, "not_found")
    assert WebhookEndpoint.objects.count() == 1
    deleted = api.delete(f"/api/webhooks/{created['id']}/")
    assert deleted.status_code == 204
    assert not WebhookEndpoint.objects.exists()


def test_not_logged_in_is_a_401(client):
    response = client.get("/api/webhooks/")
    assert response.status_code in (401, 403)
    assert json.loads(response.content)["error"]


# --- Staff send a delivery again, under the same webhook-id


def test_admin_sends_a_failed_delivery_again(api, user, webhook_queue, receiver, superuser_client):
    register(api, receiver.url)
    receiver.status = 500
    delivery = delivery_of(cancelled_job(user))
    WebhookDelivery.objects.update(retry_until=timezone.now())
    assert webhook_deliver(delivery_id=str(delivery.pk)) == "failed"
    listing = superuser_client.get("/admin/questions/webhookdelivery/")
    assert "HTTP 500" in listing.content.decode()

    receiver.status = 200
    response = superuser_client.post(
        "/admin/questions/webhookdelivery/",
        {"action": "send_again", "_selected_action": [str(delivery.pk)]},
        follow=True,
    )
    assert "sent again" in response.content.decode()
    with webhook_worker(webhook_queue):
        wait_until(
            lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == Delivery.SUCCEEDED,
            timeout=20,
            what="the delivery sent again to succeed",
        )
    assert [r.headers["webhook-id"] for r in receiver.requests()] == [f"msg_{delivery.pk.hex}"] * 2


# --- The page


def test_page_registers_an_endpoint_and_shows_the_secret_once(page, webhook_queue, receiver):
    response = page.post(
        "/account/webhooks/", {"url": receiver.url, "events": ["question.succeeded"]}
    )
    assert response.status_code == 200
    secret = response.context["new_secret"]
    assert secret.startswith("whsec_") and secret in response.content.decode()
    again = page.get("/account/webhooks/").content.decode()
    assert receiver.url in again
    assert secret not in again

    refused = page.post(
        "/account/webhooks/", {"url": "http://10.0.0.1/", "events": ["question.succeeded"]}
    )
    assert refused.status_code == 400
    assert "private address" in refused.content.decode()
    assert WebhookEndpoint.objects.count() == 1


def test_create_sqs_queues_makes_the_webhook_queue_and_its_dlq(sqs_endpoint, settings):
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    call_command(
        "create_sqs_queues",
        f"--queue={name}-jobs",
        f"--dlq={name}-jobs-dlq",
        f"--webhook-queue={name}",
        f"--webhook-dlq={name}-dlq",
        stdout=io.StringIO(),
    )
    client = get_sqs_client()
    url = client.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    policy = json.loads(attributes["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == settings.SQS_WEBHOOK_MAX_RECEIVE_COUNT == 100
    assert policy["deadLetterTargetArn"].endswith(f"{name}-dlq")


# --- https: connected to the checked address, the name in SNI and the certificate check


@pytest.mark.parametrize("certified_name", ["localhost", "elsewhere.example"])
def test_https_pins_the_address_and_verifies_the_name(
    settings, monkeypatch, tmp_path, user, webhook_queue, certified_name
):
    """The URL names `localhost`; the sender connects to the address it resolved and checked,
    sends SNI `localhost` and accepts only a certificate for that name."""
    tls = make_tls_files(tmp_path, dns_name=certified_name)
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))  # trust the test CA (OpenSSL's own variable)
    settings.QUESTIONS_WEBHOOK_ALLOW_HTTP = False
    settings.QUESTIONS_WEBHOOK_ALLOWED_NETWORKS = [*LOOPBACK, ip_network("::1/128")]
    receiver = WebhookReceiver(tls=tls, host_name="localhost").start()
    try:
        _, secret = webhook_endpoint_create(
            owner=user, url=receiver.url, events=["question.cancelled"]
        )
        delivery = delivery_of(cancelled_job(user))
        if certified_name == "localhost":
            assert webhook_deliver(delivery_id=str(delivery.pk)) == "succeeded"
            [received] = receiver.requests()
            assert received.headers["host"] == f"localhost:{receiver.port}"
            assert receiver.sni == ["localhost"]
            assert verified(secret, received)["data"]["status"] == "cancelled"
        else:
            with pytest.raises(RetryLater):
                webhook_deliver(delivery_id=str(delivery.pk))
            stored = WebhookDelivery.objects.get(pk=delivery.pk)
            assert stored.last_error.startswith("TLS failed"), stored.last_error
            assert receiver.requests() == []
    finally:
        receiver.stop()


def test_pruning_a_job_deletes_its_deliveries(api, user, webhook_queue, receiver):
    """A delivery's payload holds the question and the answer: retention takes it too."""
    register(api, receiver.url)
    question = cancelled_job(user)
    assert WebhookDelivery.objects.filter(question=question).count() == 1
    report = questions_prune(created_before=timezone.now() + timedelta(seconds=1))
    assert report.deleted == 1
    assert not WebhookDelivery.objects.exists()
    assert WebhookEndpoint.objects.count() == 1


# --- As deployed: the job worker and the webhook worker as two real processes


def test_two_worker_processes_ask_answer_and_deliver(
    api, user, queues, fake_llm, worker_process, webhook_queue, receiver, settings
):
    """`run_sqs_worker` on the job queue ends the job and records the event; a second
    `run_sqs_worker --queue <webhook queue>` delivers it (docker-compose's webhook-worker)."""
    secret = register(api, receiver.url, ["question.succeeded"])["secret"]
    env = {
        "SQS_WEBHOOK_QUEUE_NAME": webhook_queue,
        "SQS_WEBHOOK_DLQ_NAME": settings.SQS_WEBHOOK_DLQ_NAME,
        "QUESTIONS_WEBHOOK_ALLOW_HTTP": "true",
        "QUESTIONS_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    worker_process("--requeue-interval=0", env=env)
    worker_process(
        f"--queue={webhook_queue}",
        f"--dlq={settings.SQS_WEBHOOK_DLQ_NAME}",
        "--requeue-interval=0",
        env=env,
    )
    job_id = api.post("/api/questions/", {"question": "Tell me?"}, format="json").json()["id"]
    wait_until(lambda: receiver.requests(), timeout=30, what="the event from the webhook worker")

    [received] = receiver.requests()
    body = verified(secret, received)
    assert (body["type"], body["data"]["id"], body["data"]["status"]) == (
        "question.succeeded",
        job_id,
        "succeeded",
    )
    delivery = WebhookDelivery.objects.get(question_id=job_id)
    assert received.headers["webhook-id"] == delivery.webhook_id
    wait_until(
        lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == Delivery.SUCCEEDED,
        timeout=10,
        what="the delivery stored as succeeded",
    )


def test_a_second_message_of_a_delivery_neither_sends_twice_nor_is_lost(
    api, user, webhook_queue, receiver
):
    """SQS delivers at least once and staff may send again: a message whose delivery another
    attempt holds comes back when that claim lapses; one early for the schedule waits for it."""
    register(api, receiver.url)
    delivery = delivery_of(cancelled_job(user))
    WebhookDelivery.objects.update(claimed_until=timezone.now() + timedelta(seconds=30))
    with pytest.raises(RetryLater) as held:
        webhook_deliver(delivery_id=str(delivery.pk))
    assert 25 < held.value.delay <= 30
    WebhookDelivery.objects.update(
        claimed_until=None, next_attempt_at=timezone.now() + timedelta(seconds=60)
    )
    with pytest.raises(RetryLater) as early:
        webhook_deliver(delivery_id=str(delivery.pk))
    assert 55 < early.value.delay <= 60
    assert receiver.requests() == []
    # Due (or its claim lapsed): sent once.
    WebhookDelivery.objects.update(claimed_until=timezone.now() - timedelta(seconds=1))
    WebhookDelivery.objects.update(next_attempt_at=timezone.now())
    assert webhook_deliver(delivery_id=str(delivery.pk)) == "succeeded"
    assert webhook_deliver(delivery_id=str(delivery.pk)) == "duplicate"
    assert len(receiver.requests()) == 1
