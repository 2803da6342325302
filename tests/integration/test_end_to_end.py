"""A question goes all the way: POST → SQS → run_sqs_worker → OpenAI-wire server → GET."""

from __future__ import annotations

import pytest

from questions.models import Question

pytestmark = pytest.mark.django_db(transaction=True)


def test_post_then_worker_then_get_returns_the_llm_answer(api, queues, fake_llm, run_worker):
    fake_llm.configure(
        answer="Paris is the capital of France.", prompt_tokens=12, completion_tokens=7
    )

    response = api.post(
        "/api/questions/", {"question": "What is the capital of France?"}, format="json"
    )
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert response.json()["status"] == "queued"
    assert queues.depth()["visible"] == 1

    run_worker("--concurrency=2")

    response = api.get(f"/api/questions/{job_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "succeeded"
    assert body["answer"] == "Paris is the capital of France."
    assert body["usage"] == {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    assert body["model"] == "gpt-4o-mini"
    assert body["attempts"] == 1
    assert fake_llm.calls == 1
    sent = fake_llm.requests[0]
    assert sent["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    assert queues.depth() == {"visible": 0, "in_flight": 0, "delayed": 0}
    job = Question.objects.get(pk=job_id)
    assert job.enqueued_at is not None
    assert job.started_at <= job.finished_at
