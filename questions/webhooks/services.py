"""Writes of completion webhooks: endpoints (create, enable, rotate the secret, delete) and
deliveries (recorded when a job ends, attempted by the `deliver_webhook` task, sent again).

Validation is written once, here: a bad URL or event list is a Django ValidationError on its
field, which the API turns into a 400 and the page shows beside the field.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.http import Http404
from django.utils import timezone

from questions import metrics
from questions.backoff import Backoff
from questions.jobqueue import DELIVER_WEBHOOK, task_get
from questions.models import Question, WebhookDelivery, WebhookEndpoint, WebhookEvent
from questions.sqs.exceptions import RetryLater
from questions.webhooks.addresses import HostUnresolved, UnsafeUrl, destination_resolve
from questions.webhooks.http import SendFailed, post_pinned
from questions.webhooks.payload import event_payload
from questions.webhooks.signing import (
    SecretUnreadable,
    secret_decrypt,
    secret_encrypt,
    secret_generate,
    signed_headers,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

DeliveryStatus = WebhookDelivery.Status
URL_MAX_LENGTH = 2000
# An attempt's claim outlasts its timeout by this much (the database writes around it).
CLAIM_MARGIN_SECONDS = 30
# A message back a little before its delivery's next attempt is due still makes the attempt.
_EARLY = timedelta(seconds=2)
EVENT_OF_STATUS: dict[str, str] = {
    Question.Status.SUCCEEDED: WebhookEvent.SUCCEEDED,
    Question.Status.FAILED: WebhookEvent.FAILED,
    Question.Status.CANCELLED: WebhookEvent.CANCELLED,
}


def _invalid(field: str, message: str, *, code: str) -> ValidationError:
    return ValidationError({field: ValidationError(message, code=code)})


def webhook_url_validate(url: object) -> str:
    """The URL as stored, or a ValidationError on "url" saying why it may not receive webhooks
    (its scheme, or an address it resolves to)."""
    if not isinstance(url, str):
        raise _invalid("url", "The URL must be a string.", code="invalid_type")
    url = url.strip()
    if not url:
        raise _invalid("url", "The URL may not be blank.", code="blank")
    if len(url) > URL_MAX_LENGTH:
        raise _invalid(
            "url", f"The URL may be {URL_MAX_LENGTH} characters at most.", code="max_length"
        )
    if not url.isprintable() or any(c.isspace() for c in url):
        raise _invalid(
            "url", "The URL may not contain spaces or control characters.", code="invalid"
        )
    try:
        destination_resolve(url)
    except HostUnresolved:
        pass  # not in DNS (yet): each delivery resolves the name and checks what it finds
    except UnsafeUrl as exc:
        raise _invalid("url", str(exc), code="unsafe_url") from None
    return url


def webhook_events_validate(events: object) -> list[str]:
    known = list(WebhookEvent.values)
    if not isinstance(events, list) or not events:
        raise _invalid(
            "events", f"Give a non-empty list of events, of: {', '.join(known)}.", code="invalid"
        )
    chosen: list[str] = []
    for event in events:
        if not isinstance(event, str) or event not in known:
            raise _invalid(
                "events",
                f"Unknown event {event!r}; the events are: {', '.join(known)}.",
                code="unknown_event",
            )
        if event in chosen:
            # As the schema says (uniqueItems): a list with a repeat is a mistake to point out.
            raise _invalid(
                "events", f"{event!r} is listed twice; name each event once.", code="duplicate"
            )
        chosen.append(event)
    return chosen


def webhook_endpoint_create(
    *, owner: User, url: object, events: object
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint; returns it and its signing secret (which is never readable again)."""
    # The events first: the URL's check resolves its host, wasted on a request refused anyway.
    chosen = webhook_events_validate(events)
    checked_url = webhook_url_validate(url)
    limit = settings.QUESTIONS_WEBHOOK_MAX_PER_USER
    if WebhookEndpoint.objects.filter(owner=owner).count() >= limit:
        raise ValidationError(
            f"You have {limit} webhook endpoints, the most allowed; delete one first.",
            code="too_many",
        )
    secret = secret_generate()
    endpoint = WebhookEndpoint.objects.create(
        owner=owner, url=checked_url, events=chosen, secret_encrypted=secret_encrypt(secret)
    )
    logger.info("webhook endpoint created", extra={"endpoint_id": str(endpoint.pk)})
    return endpoint, secret


def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint) -> str:
    """A new signing secret for the endpoint, returned once; the old one stops at once."""
    secret = secret_generate()
    endpoint.secret_encrypted = secret_encrypt(secret)
    _update(endpoint, secret_encrypted=endpoint.secret_encrypted)
    logger.info("webhook secret rotated", extra={"endpoint_id": str(endpoint.pk)})
    return secret


def webhook_endpoint_enable(*, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """Turn a disabled endpoint back on (its URL is checked again). Past events are not resent."""
    webhook_url_validate(endpoint.url)
    _update(endpoint, is_active=True, disabled_at=None, disabled_reason="", failing_since=None)
    return endpoint


def _update(endpoint: WebhookEndpoint, **fields: object) -> None:
    """Set `fields` on the row and on `endpoint`; Http404 if the row is gone (deleted by a
    concurrent request since it was read)."""
    if not WebhookEndpoint.objects.filter(pk=endpoint.pk).update(**fields):
        raise Http404("No webhook endpoint with this id.")
    for name, value in fields.items():
        setattr(endpoint, name, value)


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint) -> None:
    endpoint.delete()


def _endpoint_disable(endpoint: WebhookEndpoint, reason: str) -> None:
    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint.pk, is_active=True).update(
        is_active=False, disabled_at=now, disabled_reason=reason
    )
    endpoint.is_active, endpoint.disabled_at, endpoint.disabled_reason = False, now, reason
    logger.warning(
        "webhook endpoint disabled", extra={"endpoint_id": str(endpoint.pk), "reason": reason}
    )


def webhook_events_record(*, question: Question) -> list[WebhookDelivery]:
    """`webhook_events_record_many` for one job."""
    return webhook_events_record_many(questions=[question])


def webhook_events_record_many(*, questions: Sequence[Question]) -> list[WebhookDelivery]:
    """Jobs have just reached a final state: one delivery per active endpoint of each job's
    owner that wants its event, sent to the webhook queue once the current transaction commits
    (one SELECT of the owners' endpoints, one INSERT of the deliveries). Never raises: a job's
    end must not fail for its webhooks (an error is logged)."""
    events = {question.pk: EVENT_OF_STATUS.get(question.status) for question in questions}
    questions = [question for question in questions if events[question.pk] is not None]
    if not questions:
        return []
    try:
        endpoints: dict[int, list[WebhookEndpoint]] = defaultdict(list)
        for endpoint in WebhookEndpoint.objects.filter(
            owner_id__in={question.owner_id for question in questions}, is_active=True
        ):
            endpoints[endpoint.owner_id].append(endpoint)
        if not endpoints:
            return []
        now = timezone.now()
        retry_until = now + timedelta(seconds=settings.QUESTIONS_WEBHOOK_RETRY_WINDOW)
        wanted: list[WebhookDelivery] = []
        for question in questions:
            event = events[question.pk]
            chosen = [e for e in endpoints.get(question.owner_id, []) if event in e.events]
            if not chosen or event is None:
                continue
            payload = event_payload(event=event, question=question, at=now)
            wanted.extend(
                WebhookDelivery(
                    endpoint=endpoint,
                    question_id=question.pk,
                    event=event,
                    payload=payload,
                    created_at=now,
                    retry_until=retry_until,
                )
                for endpoint in chosen
            )
        if not wanted:
            return []
        with transaction.atomic():
            deliveries = WebhookDelivery.objects.bulk_create(wanted)
            for delivery in deliveries:
                transaction.on_commit(partial(webhook_delivery_enqueue, delivery_id=delivery.pk))
    except DatabaseError as exc:
        for question in questions:
            logger.warning(
                "could not record the job's webhook events",
                extra={"job_id": str(question.pk), "error": type(exc).__name__},
            )
        return []
    return deliveries


def webhook_delivery_enqueue(*, delivery_id: uuid.UUID) -> bool:
    """Send a delivery to the webhook queue. On failure it stays pending (logged, counted);
    staff can send it again from the admin. Never raises."""
    try:
        task_get(DELIVER_WEBHOOK).enqueue(delivery_id=str(delivery_id))
    except Exception as exc:
        metrics.WEBHOOK_DELIVERIES.labels(outcome="enqueue_failed").inc()
        logger.warning(
            "could not enqueue a webhook delivery",
            extra={"delivery_id": str(delivery_id), "error": type(exc).__name__},
        )
        return False
    return True


def webhook_delivery_resend(*, delivery: WebhookDelivery) -> None:
    """Staff's "send again": the delivery pending once more, with a fresh retry window, under
    the same `webhook-id` (a receiver that has it already drops it)."""
    now = timezone.now()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING,
        next_attempt_at=None,
        finished_at=None,
        claimed_until=None,
        retry_until=now + timedelta(seconds=settings.QUESTIONS_WEBHOOK_RETRY_WINDOW),
    )
    transaction.on_commit(partial(webhook_delivery_enqueue, delivery_id=delivery.pk))


def _retry_backoff() -> Backoff:
    return Backoff(
        base=settings.QUESTIONS_WEBHOOK_RETRY_BASE, cap=settings.QUESTIONS_WEBHOOK_RETRY_CAP
    )


def webhook_deliver(*, delivery_id: str) -> str:
    """One attempt of a delivery (the `deliver_webhook` task). Returns what happened; raises
    RetryLater when the attempt failed and the retry window is still open.

    2xx: delivered. 410: the receiver is gone; the endpoint is disabled. Anything else (another
    status, no answer, an address now refused): tried again with backoff until `retry_until`;
    an endpoint whose deliveries have all failed for QUESTIONS_WEBHOOK_RETRY_WINDOW is disabled.
    """
    delivery = WebhookDelivery.objects.select_related("endpoint").filter(pk=delivery_id).first()
    if delivery is None:
        return "missing"
    if delivery.status != DeliveryStatus.PENDING:
        return "duplicate"
    endpoint = delivery.endpoint
    if not endpoint.is_active:
        _delivery_finish(
            delivery,
            DeliveryStatus.FAILED,
            error=f"Not sent: {endpoint.disabled_reason}",
            attempted=False,
        )
        metrics.WEBHOOK_DELIVERIES.labels(outcome="skipped").inc()
        return "skipped"
    now = timezone.now()
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now + _EARLY:
        # A second message of this delivery (sent again by staff, or redelivered by SQS):
        # it keeps to the schedule rather than adding attempts.
        raise RetryLater((delivery.next_attempt_at - now).total_seconds(), "not due yet")
    claim = timedelta(seconds=settings.QUESTIONS_WEBHOOK_TIMEOUT + CLAIM_MARGIN_SECONDS)
    claimed = (
        WebhookDelivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + claim)
    )
    if not claimed:
        return _claimed_elsewhere(delivery.pk, now)
    status_code: int | None = None
    outcome = "retry"
    try:
        destination = destination_resolve(endpoint.url)
        headers = signed_headers(
            secret=secret_decrypt(endpoint.secret_encrypted),
            webhook_id=delivery.webhook_id,
            payload=delivery.payload,
            at=now,
        )
        status_code = post_pinned(
            destination,
            body=delivery.payload.encode(),
            headers=headers,
            timeout=settings.QUESTIONS_WEBHOOK_TIMEOUT,
        )
        error = "" if 200 <= status_code < 300 else f"The receiver answered HTTP {status_code}."
    except UnsafeUrl as exc:
        error, outcome = f"Refused: {exc}", "blocked"
    except (SendFailed, SecretUnreadable) as exc:
        error = str(exc)
    except Exception as exc:
        # A failed attempt like any other (retried on schedule), not an error that leaves the
        # delivery claimed while its message is retried and then dropped as a duplicate.
        logger.exception("webhook attempt failed unexpectedly")
        error = f"Internal error ({type(exc).__name__}); it will be tried again."
    attempts = delivery.attempts + 1
    if status_code is not None and 200 <= status_code < 300:
        if not _delivery_finish(delivery, DeliveryStatus.SUCCEEDED, status_code=status_code):
            return "duplicate"
        WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=False).update(
            failing_since=None
        )
        metrics.WEBHOOK_DELIVERIES.labels(outcome="succeeded").inc()
        return "succeeded"
    if status_code == 410:
        if not _delivery_finish(
            delivery, DeliveryStatus.FAILED, status_code=status_code, error=error
        ):
            return "duplicate"
        _endpoint_disable(
            endpoint,
            f"The receiver answered 410 Gone on {_when(now)}: it asked for no more deliveries.",
        )
        metrics.WEBHOOK_DELIVERIES.labels(outcome="gone").inc()
        return "gone"
    metrics.WEBHOOK_DELIVERIES.labels(outcome=outcome).inc()
    failing_since = _endpoint_failing(endpoint, now)
    window = timedelta(seconds=settings.QUESTIONS_WEBHOOK_RETRY_WINDOW)
    if now - failing_since >= window:
        _endpoint_disable(
            endpoint,
            f"Every delivery failed from {_when(failing_since)} to {_when(now)}; "
            f"the last error: {error}",
        )
    if not endpoint.is_active or now >= delivery.retry_until:
        _delivery_finish(delivery, DeliveryStatus.FAILED, status_code=status_code, error=error)
        metrics.WEBHOOK_DELIVERIES.labels(outcome="failed").inc()
        return "failed"
    delay = _retry_backoff().delay(attempts)
    updated = WebhookDelivery.objects.filter(
        pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
    ).update(
        attempts=attempts,
        last_status_code=status_code,
        last_error=error,
        next_attempt_at=now + timedelta(seconds=delay),
        claimed_until=None,
    )
    if not updated:
        return "duplicate"
    raise RetryLater(delay, f"webhook attempt {attempts} failed")


def _claimed_elsewhere(delivery_id: uuid.UUID, now: datetime) -> str:
    """Another attempt holds the delivery: come back when its claim lapses (its worker may have
    died), unless the delivery is already settled."""
    current = WebhookDelivery.objects.filter(pk=delivery_id).values("status", "claimed_until")
    row = current.first()
    if row is None or row["status"] != DeliveryStatus.PENDING or row["claimed_until"] is None:
        return "duplicate"
    raise RetryLater(max((row["claimed_until"] - now).total_seconds(), 1.0), "claimed elsewhere")


def _delivery_finish(
    delivery: WebhookDelivery,
    status: str,
    *,
    status_code: int | None = None,
    error: str = "",
    attempted: bool = True,
) -> bool:
    """Store a final state, fenced on the attempt count (a duplicate message's attempt that
    raced this one stores nothing)."""
    return bool(
        WebhookDelivery.objects.filter(
            pk=delivery.pk, status=DeliveryStatus.PENDING, attempts=delivery.attempts
        ).update(
            status=status,
            attempts=delivery.attempts + int(attempted),
            last_status_code=status_code,
            last_error=error,
            next_attempt_at=None,
            claimed_until=None,
            finished_at=timezone.now(),
        )
    )


def _endpoint_failing(endpoint: WebhookEndpoint, now: datetime) -> datetime:
    """Mark the endpoint failing from now unless it already is; returns since when."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk, failing_since__isnull=True).update(
        failing_since=now
    )
    since = (
        WebhookEndpoint.objects.filter(pk=endpoint.pk)
        .values_list("failing_since", flat=True)
        .first()
    )
    return since or now


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
