from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from questions.models import Question
from questions.services import QUESTION_TEXT_PATTERN


@extend_schema_field(
    {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.QUESTIONS_MAX_LENGTH,
        "pattern": QUESTION_TEXT_PATTERN,
    }
)
class QuestionTextField(serializers.Field):
    """Takes the raw JSON value as it is: the service (validate_question_text) says what is
    wrong with it, so a number or a list is an error there, never silently a string."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class QuestionCreateInputSerializer(serializers.Serializer):
    question = QuestionTextField(
        help_text=(
            f"The question: up to {settings.QUESTIONS_MAX_LENGTH} characters, not only "
            "whitespace, no NUL; stored without its leading and trailing whitespace."
        )
    )


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class QuestionOutputSerializer(serializers.Serializer):
    """The job as the API shows it. Fields are declared, not derived from the model: a
    ModelSerializer introspects the model on every instantiation, which doubled the cost of a
    cached GET."""

    id = serializers.UUIDField(read_only=True)
    url = serializers.HyperlinkedIdentityField(view_name="api:question-detail")
    question = serializers.CharField(source="text", read_only=True)
    status = serializers.ChoiceField(choices=Question.Status.choices, read_only=True)
    answer = serializers.CharField(read_only=True)
    error = serializers.CharField(read_only=True)
    model = serializers.CharField(read_only=True)
    attempts = serializers.IntegerField(read_only=True)
    usage = serializers.SerializerMethodField()
    cost = serializers.DecimalField(
        max_digits=12,
        decimal_places=6,
        read_only=True,
        allow_null=True,
        help_text="What the job's LLM calls cost in US dollars (a decimal string), retries and "
        "partial answers included; null until a call is made.",
    )
    answered_by_fallback = serializers.BooleanField(
        read_only=True,
        help_text="True when the answer came from a fallback model (OPENAI_FALLBACK_MODELS), "
        "not the primary; `model` names it.",
    )
    created_at = serializers.DateTimeField(read_only=True)
    started_at = serializers.DateTimeField(read_only=True, allow_null=True)
    finished_at = serializers.DateTimeField(read_only=True, allow_null=True)

    @extend_schema_field(UsageSerializer(allow_null=True))
    def get_usage(self, question: Question) -> dict[str, int] | None:
        return question.usage


class QuestionPageSerializer(serializers.Serializer):
    """One page of jobs (the shape of DRF's PageNumberPagination)."""

    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = QuestionOutputSerializer(many=True)


class QuestionListFilterSerializer(serializers.Serializer):
    """The list's filters. Given a plain dict, not the QueryDict: DRF reads an empty value of a
    form (`?status=`) as absent, and the API refuses it as the schema says."""

    status = serializers.ChoiceField(choices=Question.Status.choices, required=False)
    page = serializers.IntegerField(
        min_value=1,
        required=False,
        help_text="A page number (1 is the newest jobs); a page past the last is a 404.",
    )
