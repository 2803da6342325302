"""Stop: `POST /api/questions/{id}/cancel`, the page's Stop button and the admin action.

A queued job ends cancelled and is never sent to the LLM; a running one stops mid-answer and
keeps what was written (one LLM call, its stream cut); a finished one is a 409."""

from __future__ import annotations

import pytest
from django.test import Client
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from questions.live.streams import stream_key
from questions.models import Question
from questions.services import QuestionAlreadyFinished, question_cancel, question_create
from tests.factories import QuestionFactory, reloaded
from tests.support import api_ask, assert_json_error, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

LONG_ANSWER = " ".join(f"word{n}" for n in range(60))


def _stream_entries(job_id: object) -> list[tuple[str, dict[str, str]]]:
    from django_redis import get_redis_connection

    raw = get_redis_connection("default").xrange(stream_key(job_id))
    return [
        (entry_id.decode(), {k.decode(): v.decode() for k, v in fields.items()})
        for entry_id, fields in raw
    ]


def _cancelled_count(previous: str) -> float:
    value = REGISTRY.get_sample_value(
        "questions_jobs_cancelled_total", {"previous_status": previous}
    )
    return value or 0.0


def test_a_queued_job_is_cancelled_and_never_reaches_the_llm(
    api, user, queues, fake_llm, run_worker
):
    before = _cancelled_count("queued")
    job_id = api_ask(api, "Stop me?").json()["id"]

    response = api.post(f"/api/questions/{job_id}/cancel")

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["id"], body["status"]) == (job_id, "cancelled")
    assert body["finished_at"] is not None
    job = Question.objects.get(pk=job_id)
    assert (job.status, job.claim_expires_at, job.answer) == ("cancelled", None, "")
    assert job.finished_at is not None
    # Watchers are told, since no worker will write the end of this stream.
    assert [fields for _, fields in _stream_entries(job_id)] == [{"end": "cancelled"}]
    assert _cancelled_count("queued") == before + 1
    # Its SQS message is still delivered: the worker must not call the LLM for it.
    run_worker()
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("cancelled", 0)
    assert fake_llm.calls == 0
    # The API shows the cancelled job, from the cache or the row alike.
    assert api.get(f"/api/questions/{job_id}/").json()["status"] == "cancelled"
    assert api.get("/api/questions/?status=cancelled").json()["count"] == 1


def test_a_finished_job_is_409_and_left_as_is(api, user, queues, fake_llm, run_worker):
    job_id = api_ask(api, "Done?").json()["id"]
    run_worker()
    assert Question.objects.get(pk=job_id).status == "succeeded"

    response = api.post(f"/api/questions/{job_id}/cancel")

    body = assert_json_error(response, 409, "already_finished")
    assert "succeeded" in body["detail"]
    job = Question.objects.get(pk=job_id)
    assert (job.status, job.answer != "") == ("succeeded", True)
    assert fake_llm.calls == 1
    # A second Stop of a cancelled job is a 409 too.
    cancelled = QuestionFactory(owner=user, status="cancelled")
    assert_json_error(api.post(f"/api/questions/{cancelled.pk}/cancel"), 409, "already_finished")


def test_a_running_job_stops_mid_answer_and_keeps_the_partial_answer(
    api, user, queues, fake_llm, worker_process
):
    # Needs the streaming worker (issue 12, the worker's branch): it reads the provider's
    # stream, sees the cancelled row within a second and closes the stream.
    fake_llm.configure(answer=LONG_ANSWER, stream_interval=0.3, completion_tokens=60)
    worker_process("--concurrency=2")
    job_id = api_ask(api, "Long one?").json()["id"]

    def deltas() -> list[str]:
        return [f["delta"] for _, f in _stream_entries(job_id) if "delta" in f]

    wait_until(lambda: len(deltas()) >= 3, timeout=20, what="the first words of the answer")
    response = api.post(f"/api/questions/{job_id}/cancel")
    assert response.status_code == 202, response.content
    assert response.json()["status"] == "cancelled"

    def stored() -> Question | None:
        job = Question.objects.get(pk=job_id)
        return job if job.answer else None

    job = wait_until(stored, timeout=10, what="the partial answer on the cancelled row")
    assert job.status == "cancelled"
    assert LONG_ANSWER.startswith(job.answer.strip())
    assert len(job.answer.split()) < 60
    assert job.completion_tokens is not None
    wait_until(lambda: fake_llm.cut_streams == 1, timeout=5, what="the provider stream closed")
    assert fake_llm.calls == 1
    # The worker writes the stream's end after the row (the row is what the test waited for).
    wait_until(
        lambda: [f for _, f in _stream_entries(job_id)][-1] == {"end": "cancelled"},
        timeout=5,
        what="the stream to end with the cancellation",
    )


def test_unknown_or_someone_elses_job_is_404_and_no_auth_is_401(api, other_user, queues):
    theirs = QuestionFactory(owner=other_user)
    assert_json_error(api.post(f"/api/questions/{theirs.pk}/cancel"), 404, "not_found")
    assert_json_error(
        api.post("/api/questions/00000000-0000-0000-0000-000000000000/cancel"), 404, "not_found"
    )
    assert_json_error(APIClient().post(f"/api/questions/{theirs.pk}/cancel"), 401)
    assert reloaded(theirs).status == "queued"


def test_session_auth_needs_csrf(user, queues):
    job = QuestionFactory(owner=user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert_json_error(client.post(f"/api/questions/{job.pk}/cancel"), 403)
    assert reloaded(job).status == "queued"


def test_the_service_refuses_a_finished_job(user, queues):
    job = QuestionFactory(owner=user, status="failed")
    with pytest.raises(QuestionAlreadyFinished):
        question_cancel(question=job)
    assert reloaded(job).status == "failed"


def test_the_page_stop_button_cancels_with_a_csrf_protected_form(user, queues):
    question, _ = question_create(owner=user, text="Stop from the page?")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    page = client.get(question.get_absolute_url())
    html = page.content.decode()
    assert f'action="/questions/{question.pk}/cancel/"' in html
    assert 'http-equiv="refresh"' in html

    # Without the CSRF token the form is refused.
    assert client.post(f"/questions/{question.pk}/cancel/").status_code == 403
    assert reloaded(question).status == "queued"

    token = page.context["csrf_token"]
    response = client.post(
        f"/questions/{question.pk}/cancel/", {"csrfmiddlewaretoken": str(token)}, follow=True
    )
    assert response.redirect_chain[-1][0] == question.get_absolute_url()
    assert reloaded(question).status == "cancelled"
    html = response.content.decode()
    assert "Stopped" in html and 'http-equiv="refresh"' not in html
    assert "data-stop" not in html
    # A finished job's Stop says so, and changes nothing.
    again = client.post(
        f"/questions/{question.pk}/cancel/", {"csrfmiddlewaretoken": str(token)}, follow=True
    )
    assert "already Cancelled" in again.content.decode()


def test_stop_is_404_for_someone_elses_job_on_the_page(user, other_user, queues):
    theirs = QuestionFactory(owner=other_user)
    client = Client()
    client.force_login(user)
    assert client.post(f"/questions/{theirs.pk}/cancel/").status_code == 404
    assert client.get(f"/questions/{theirs.pk}/cancel/").status_code == 405
    assert reloaded(theirs).status == "queued"


def test_admin_stops_selected_jobs_and_skips_finished_ones(staff_user, user, queues):
    staff_user.is_superuser = True
    staff_user.save()
    queued = QuestionFactory(owner=user, status="queued")
    running = QuestionFactory(owner=user, status="running", attempts=1)
    done = QuestionFactory(owner=user, status="succeeded", answer="42")
    client = Client()
    client.force_login(staff_user)

    response = client.post(
        "/admin/questions/question/",
        {"action": "stop_jobs", "_selected_action": [queued.pk, running.pk, done.pk]},
        follow=True,
    )

    html = response.content.decode()
    assert "2 jobs stopped." in html
    assert "1 selected job was already finished" in html
    statuses = dict(Question.objects.values_list("pk", "status"))
    assert statuses == {queued.pk: "cancelled", running.pk: "cancelled", done.pk: "succeeded"}
    filtered = client.get("/admin/questions/question/?status__exact=cancelled")
    assert filtered.context["cl"].result_count == 2


def test_a_job_stopped_while_running_refreshes_its_page_until_the_partial_answer_is_stored(
    user, queues
):
    from django.utils import timezone

    client = Client()
    client.force_login(user)
    job = QuestionFactory(owner=user, status="running", attempts=1, started_at=timezone.now())
    question_cancel(question=job)
    html = client.get(job.get_absolute_url()).content.decode()
    assert "appears here in a moment" in html
    assert 'http-equiv="refresh"' in html  # the worker is storing what was written
    # Once stored (as the worker does), the page shows it and stops refreshing.
    Question.objects.filter(pk=job.pk).update(answer="Partial **answer**")
    from questions.cache import job_cache_delete

    job_cache_delete(job.pk)
    html = client.get(job.get_absolute_url()).content.decode()
    assert "<strong>answer</strong>" in html and "Answer so far" in html
    assert 'http-equiv="refresh"' not in html
    # The history page and the API filter by the new status.
    assert str(job.pk) in client.get("/questions/?status=cancelled").content.decode()
    assert str(job.pk) not in client.get("/questions/?status=running").content.decode()
