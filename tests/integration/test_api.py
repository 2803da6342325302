"""The REST API: status codes, JSON shapes, and every bad input of DESIGN §5."""

from __future__ import annotations

import uuid

import pytest
from django.test import Client
from rest_framework.test import APIClient

from questions.models import Question
from tests.factories import QuestionFactory
from tests.support import assert_json_error

pytestmark = pytest.mark.django_db

JOB_FIELDS = {
    "id",
    "url",
    "question",
    "status",
    "answer",
    "error",
    "model",
    "attempts",
    "usage",
    "cost",
    "answered_by_fallback",
    "created_at",
    "started_at",
    "finished_at",
}


class TestCreate:
    def test_accepts_a_question_with_202_location_and_the_job(self, api, user, queues):
        response = api.post(
            "/api/questions/", {"question": "  Why is the sky blue?  "}, format="json"
        )

        assert response.status_code == 202
        body = response.json()
        assert set(body) == JOB_FIELDS
        assert body["question"] == "Why is the sky blue?"
        assert body["status"] == "queued"
        assert body["answer"] == "" and body["error"] == ""
        assert body["usage"] is None and body["attempts"] == 0
        assert body["answered_by_fallback"] is False
        assert response["Location"] == body["url"]
        assert body["url"].endswith(f"/api/questions/{body['id']}/")
        job = Question.objects.get(pk=body["id"])
        assert job.owner == user and job.text == "Why is the sky blue?"

    def test_enqueues_after_commit_with_the_job_id_only(
        self, api, queues, django_capture_on_commit_callbacks
    ):
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post("/api/questions/", {"question": "secret plans?"}, format="json")
        job_id = response.json()["id"]
        from questions.sqs.client import get_sqs_client

        messages = get_sqs_client().receive_message(
            QueueUrl=queues.url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )["Messages"]
        assert len(messages) == 1
        body = messages[0]["Body"]
        assert job_id in body
        assert "secret plans" not in body
        assert Question.objects.get(pk=job_id).enqueued_at is not None

    def test_idempotency_key_returns_the_same_job(self, api, queues):
        first = api.post(
            "/api/questions/", {"question": "Once?"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
        )
        again = api.post(
            "/api/questions/", {"question": "Once?"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
        )
        other = api.post(
            "/api/questions/", {"question": "Once?"}, format="json", HTTP_IDEMPOTENCY_KEY="k-2"
        )

        assert first.status_code == again.status_code == other.status_code == 202
        assert again.json()["id"] == first.json()["id"]
        assert again["Idempotent-Replayed"] == "true"
        assert other.json()["id"] != first.json()["id"]
        assert Question.objects.count() == 2

    def test_idempotency_keys_are_per_user(self, api, api_for, other_user, queues):
        mine = api.post(
            "/api/questions/", {"question": "a"}, format="json", HTTP_IDEMPOTENCY_KEY="same"
        )
        theirs = api_for(other_user).post(
            "/api/questions/", {"question": "b"}, format="json", HTTP_IDEMPOTENCY_KEY="same"
        )
        assert mine.json()["id"] != theirs.json()["id"]
        assert theirs.json()["question"] == "b"

    @pytest.mark.parametrize(
        ("payload", "fragment"),
        [
            ({}, "question"),
            ({"question": ""}, "blank"),
            ({"question": "   \n\t "}, "blank"),
            ({"question": None}, "null"),
            ({"question": 42}, "string"),
            ({"question": ["a list"]}, "string"),
            ({"question": {"nested": "object"}}, "string"),
            ({"question": "nul\x00byte"}, "NUL"),
        ],
    )
    def test_rejects_bad_questions_with_400_saying_what_is_wrong(self, api, payload, fragment):
        response = api.post("/api/questions/", payload, format="json")

        body = assert_json_error(response, 400, "invalid")
        assert "question" in body["fields"]
        assert fragment.lower() in body["detail"].lower()
        assert Question.objects.count() == 0

    def test_rejects_a_question_over_the_length_limit(self, api, settings):
        settings.QUESTIONS_MAX_LENGTH = 50
        response = api.post("/api/questions/", {"question": "x" * 51}, format="json")

        body = assert_json_error(response, 400, "invalid")
        assert "limit is 50" in body["detail"]
        assert api.post("/api/questions/", {"question": "x" * 50}, format="json").status_code == 202

    def test_rejects_a_body_that_is_not_an_object(self, api):
        response = api.post("/api/questions/", ["What?"], format="json")
        assert_json_error(response, 400, "invalid")

    def test_rejects_malformed_json(self, api):
        response = api.post(
            "/api/questions/", data='{"question": "unterminated', content_type="application/json"
        )
        body = assert_json_error(response, 400, "parse_error")
        assert "JSON" in body["detail"]

    def test_rejects_a_wrong_content_type_with_415(self, api):
        response = api.post(
            "/api/questions/",
            data="question=hello",
            content_type="application/x-www-form-urlencoded",
        )
        assert_json_error(response, 415, "unsupported_media_type")
        assert Question.objects.count() == 0

    def test_rejects_a_bad_idempotency_key(self, api):
        response = api.post(
            "/api/questions/", {"question": "q"}, format="json", HTTP_IDEMPOTENCY_KEY="k" * 256
        )
        body = assert_json_error(response, 400, "invalid")
        assert "Idempotency-Key" in body["fields"]

    def test_requires_authentication(self, db):
        response = APIClient().post("/api/questions/", {"question": "Hi?"}, format="json")
        assert_json_error(response, 401, "not_authenticated")
        assert response["WWW-Authenticate"].startswith("Token")

    def test_rejects_a_wrong_token(self, db):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")
        assert_json_error(client.post("/api/questions/", {"question": "Hi?"}, format="json"), 401)

    def test_session_auth_needs_csrf(self, user, queues):
        client = Client(enforce_csrf_checks=True)
        client.force_login(user)
        response = client.post(
            "/api/questions/", data={"question": "Hi?"}, content_type="application/json"
        )
        body = assert_json_error(response, 403)
        assert "CSRF" in body["detail"]


class TestRetrieve:
    def test_returns_own_job(self, api, user):
        job = QuestionFactory(owner=user)
        response = api.get(f"/api/questions/{job.pk}/")
        assert response.status_code == 200
        assert set(response.json()) == JOB_FIELDS
        assert response.json()["id"] == str(job.pk)

    def test_another_users_job_is_404_not_403(self, api, other_user):
        job = QuestionFactory(owner=other_user)
        assert_json_error(api.get(f"/api/questions/{job.pk}/"), 404, "not_found")

    def test_staff_see_anyones_job(self, api_for, staff_user, user):
        job = QuestionFactory(owner=user)
        assert api_for(staff_user).get(f"/api/questions/{job.pk}/").status_code == 200

    def test_unknown_id_is_404(self, api):
        assert_json_error(api.get(f"/api/questions/{uuid.uuid4()}/"), 404, "not_found")

    def test_malformed_id_is_json_404(self, api):
        assert_json_error(api.get("/api/questions/not-a-uuid/"), 404, "not_found")

    def test_requires_authentication(self, user):
        job = QuestionFactory(owner=user)
        assert_json_error(APIClient().get(f"/api/questions/{job.pk}/"), 401)

    def test_usage_is_reported_once_known(self, api, user):
        job = QuestionFactory(
            owner=user, status="succeeded", answer="42", prompt_tokens=3, completion_tokens=4
        )
        usage = api.get(f"/api/questions/{job.pk}/").json()["usage"]
        assert usage == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


class TestList:
    def test_lists_own_jobs_newest_first_paginated(self, api, user, other_user, settings):
        mine = [QuestionFactory(owner=user) for _ in range(3)]
        QuestionFactory(owner=other_user)

        body = api.get("/api/questions/").json()

        assert body["count"] == 3
        assert [item["id"] for item in body["results"]] == [str(q.pk) for q in reversed(mine)]
        assert {"next", "previous"} <= set(body)

    def test_paginates(self, api, user):
        for _ in range(25):
            QuestionFactory(owner=user)
        first = api.get("/api/questions/").json()
        assert len(first["results"]) == 20 and first["next"]
        second = api.get(first["next"]).json()
        assert len(second["results"]) == 5 and second["next"] is None

    def test_filters_by_status(self, api, user):
        QuestionFactory(owner=user, status="succeeded")
        QuestionFactory(owner=user, status="failed")
        body = api.get("/api/questions/?status=failed").json()
        assert body["count"] == 1 and body["results"][0]["status"] == "failed"

    def test_unknown_status_filter_is_400(self, api):
        body = assert_json_error(api.get("/api/questions/?status=bogus"), 400, "invalid")
        assert "status" in body["fields"]

    def test_out_of_range_page_is_404_json(self, api, user):
        QuestionFactory(owner=user)
        assert_json_error(api.get("/api/questions/?page=9"), 404)

    def test_staff_list_everyone(self, api_for, staff_user, user, other_user):
        QuestionFactory(owner=user)
        QuestionFactory(owner=other_user)
        assert api_for(staff_user).get("/api/questions/").json()["count"] == 2

    def test_requires_authentication(self, db):
        assert_json_error(APIClient().get("/api/questions/"), 401)


class TestSchema:
    def test_schema_and_docs_are_served(self, client):
        schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        assert schema.status_code == 200
        paths = schema.json()["paths"]
        assert {"/api/questions/", "/api/questions/{id}/"} <= set(paths)
        assert client.get("/api/docs/").status_code == 200

    def test_unknown_api_path_is_json_404(self, client):
        assert_json_error(client.get("/api/nothing-here/"), 404, "not_found")
