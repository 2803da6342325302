"""Small holes closed in the API: deep JSON, a reused Idempotency-Key, Swagger UI from the app."""

from __future__ import annotations

import pytest
from django.test import Client

from questions.models import Question

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "body",
    [
        "[" * 20_000 + "]" * 20_000,
        '{"question": ' + "[" * 20_000 + "]" * 20_000 + "}",
        '{"a":' * 20_000 + "1" + "}" * 20_000,
    ],
    ids=["array", "inside-the-object", "objects"],
)
def test_json_nested_too_deeply_is_a_400_not_a_500(api, body):
    response = api.post("/api/questions/", data=body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "error": "parse_error",
        "detail": "JSON parse error - nested too deeply.",
    }
    assert Question.objects.count() == 0


def test_an_idempotency_key_reused_for_another_question_is_a_422(api, queues):
    first = api.post(
        "/api/questions/", {"question": "First?"}, format="json", HTTP_IDEMPOTENCY_KEY="k-9"
    )
    assert first.status_code == 202
    reused = api.post(
        "/api/questions/", {"question": "Second?"}, format="json", HTTP_IDEMPOTENCY_KEY="k-9"
    )
    assert reused.status_code == 422
    assert reused.json()["error"] == "idempotency_key_reused"
    assert "different question" in reused.json()["detail"]
    assert list(Question.objects.values_list("text", flat=True)) == ["First?"]
    # The same question with the same key is still a replay (whitespace trimmed as stored).
    again = api.post(
        "/api/questions/", {"question": " First? "}, format="json", HTTP_IDEMPOTENCY_KEY="k-9"
    )
    assert again.status_code == 202 and again.json()["id"] == first.json()["id"]


def test_the_ask_form_sent_again_with_another_text_asks_to_send_again(user, queues):
    client = Client()
    client.force_login(user)
    data = {"request_id": "7d1f1c2e-0000-4000-8000-000000000001"}
    assert client.post("/", {**data, "question": "First?"}).status_code == 302
    response = client.post("/", {**data, "question": "Edited after going back?"})
    assert response.status_code == 409
    assert b"already sent. Please send it again" in response.content
    assert b"Edited after going back?" in response.content  # kept in the fresh form
    assert Question.objects.count() == 1


def test_swagger_ui_is_served_by_the_app_not_a_cdn(client):
    page = client.get("/api/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn." not in html and "https://" not in html
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "<script>" not in html and "<style>" not in html  # nothing inline, for the CSP
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()
