from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from questions.models import LLMCall, Question
from questions.services import question_create
from tests.support import wait_until

PASSWORD = "correct horse battery"


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda user: f"{user.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def saved(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.save()


class QuestionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Question
        skip_postgeneration_save = True

    class Params:
        duration = 2  # seconds between started_at and finished_at of a finished job
        finished = factory.Trait(
            attempts=1,
            finished_at=factory.LazyFunction(timezone.now),
            started_at=factory.LazyAttribute(
                lambda job: job.finished_at - timedelta(seconds=job.duration)
            ),
        )
        succeeded = factory.Trait(finished=True, status=Question.Status.SUCCEEDED)
        failed = factory.Trait(
            finished=True,
            status=Question.Status.FAILED,
            error="The language model rejected the question as invalid.",
        )

    owner = factory.SubFactory(UserFactory)
    text = factory.Sequence(lambda n: f"Question number {n}?")

    @factory.post_generation
    def ledger(self, create: bool, extracted: object, **kwargs: object) -> None:
        """A job made with a `cost` paid it in one call: its ledger row (what spend reads)."""
        if create and self.cost is not None:
            LLMCall.objects.create(
                question=self,
                user_id=self.owner_id,
                model=self.model or "gpt-4o-mini",
                attempt=self.attempts,
                outcome=LLMCall.Outcome.SUCCEEDED,
                prompt_tokens=self.prompt_tokens or 0,
                completion_tokens=self.completion_tokens or 0,
                cost=self.cost,
                created_at=self.finished_at or self.created_at,
            )


def reloaded(question: Question) -> Question:
    """The job as stored now (what a worker or another process made of it)."""
    return Question.objects.get(pk=question.pk)


def wait_for_status(question: Question, status: str, *, timeout: float, what: str) -> Question:
    """Poll the stored job until it reaches `status` (another process moves it there)."""
    return wait_until(
        lambda: (job := reloaded(question)).status == status and job,
        timeout=timeout,
        what=what,
    )


def ask(owner: object, text: str = "What is the capital of France?") -> Question:
    """A question asked through the service: its job row, and its message sent to SQS."""
    question, _ = question_create(owner=owner, text=text)
    question.refresh_from_db()
    assert question.enqueued_at is not None, "the job was not sent to SQS"
    return question


def ask_many(owner: object, count: int, label: str = "Question") -> list[Question]:
    return [ask(owner, f"{label} {i}?") for i in range(count)]
