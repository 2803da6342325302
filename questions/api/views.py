from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from questions.api.schema import (
    RETRY_AFTER,
    WWW_AUTHENTICATE,
    errors,
    refused,
    response_header,
)
from questions.api.serializers import (
    QuestionCreateInputSerializer,
    QuestionListFilterSerializer,
    QuestionOutputSerializer,
    QuestionPageSerializer,
)
from questions.selectors import question_get, question_list
from questions.services import (
    IdempotencyKeyReused,
    QuestionAlreadyFinished,
    question_cancel,
    question_create,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    class AuthenticatedRequest(Request):
        """The request of a view behind IsAuthenticated (the default permission)."""

        user: User


IDEMPOTENCY_KEY_MAX_LENGTH = 255

_IDEMPOTENCY_KEY = OpenApiParameter(
    name="Idempotency-Key",
    location=OpenApiParameter.HEADER,
    type={"type": "string", "minLength": 1, "maxLength": 255, "pattern": r"^[!-~]([ -~]*[!-~])?$"},
    required=False,
    description="Retrying a POST with the same key returns the same job instead of a new one.",
)
_LOCATION = response_header(
    "Location", statuses=[202], type_=OpenApiTypes.URI, description="The job's URL."
)
_REPLAYED = OpenApiParameter(
    name="Idempotent-Replayed",
    type={"type": "string", "enum": ["true"]},
    location=OpenApiParameter.HEADER,
    required=False,
    response=[202],
    description="Present when the Idempotency-Key was seen before: the job is the one it made.",
)


class IdempotencyConflict(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_code = "idempotency_key_reused"
    default_detail = "This Idempotency-Key was already used for a different question."


def _idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    # As the schema's pattern says: printable ASCII (a header's bytes beyond it arrive as
    # Latin-1, which no two clients agree on).
    if (
        not key
        or len(key) > IDEMPOTENCY_KEY_MAX_LENGTH
        or not (key.isascii() and key.isprintable())
    ):
        raise ValidationError(
            {
                "Idempotency-Key": [
                    f"Must be 1..{IDEMPOTENCY_KEY_MAX_LENGTH} printable ASCII characters."
                ]
            }
        )
    return key


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's current state."
    default_code = "conflict"


class QuestionListCreateApi(APIView):
    """POST asks a question (202 + the job); GET lists your jobs, newest first."""

    @extend_schema(
        operation_id="questions_create",
        description=(
            "Ask a question: the job is recorded and queued, and comes back at once (202) with "
            "its URL in Location. A retry with the same Idempotency-Key gets the same job."
        ),
        request=QuestionCreateInputSerializer,
        parameters=[_IDEMPOTENCY_KEY, _LOCATION, _REPLAYED, WWW_AUTHENTICATE, RETRY_AFTER],
        responses={
            202: OpenApiResponse(QuestionOutputSerializer, description="Recorded and queued."),
            **errors(400, 401, 403, 406, 415, 422),
            **refused(),
        },
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        key = _idempotency_key(request)
        serializer = QuestionCreateInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            question, created = question_create(
                owner=request.user, text=serializer.validated_data["question"], idempotency_key=key
            )
        except IdempotencyKeyReused as exc:
            raise IdempotencyConflict(str(exc)) from exc
        data = QuestionOutputSerializer(question, context={"request": request}).data
        headers = {"Location": str(data["url"])}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return Response(data, status=status.HTTP_202_ACCEPTED, headers=headers)

    @extend_schema(
        operation_id="questions_list",
        description="Your jobs (staff: everyone's), newest first, 20 a page.",
        parameters=[QuestionListFilterSerializer, WWW_AUTHENTICATE],
        responses={200: QuestionPageSerializer, **errors(400, 401, 404, 406)},
    )
    def get(self, request: Request) -> Response:
        filters = QuestionListFilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        questions = question_list(user=request.user, status=filters.validated_data.get("status"))
        paginator = PageNumberPagination()
        page = paginator.paginate_queryset(questions, request, view=self)
        data = QuestionOutputSerializer(page, many=True, context={"request": request}).data
        return paginator.get_paginated_response(data)


class QuestionDetailApi(APIView):
    """One job by id: yours, or anyone's for staff."""

    @extend_schema(
        operation_id="questions_retrieve",
        parameters=[WWW_AUTHENTICATE],
        responses={200: QuestionOutputSerializer, **errors(401, 404, 406)},
    )
    def get(self, request: Request, pk: uuid.UUID) -> Response:
        question = question_get(question_id=pk, user=request.user)
        if question is None:
            raise NotFound("No question with this id.")
        return Response(QuestionOutputSerializer(question, context={"request": request}).data)


class QuestionCancelApi(APIView):
    """Stop: a queued or running job becomes cancelled (a running one keeps its partial answer)."""

    @extend_schema(
        operation_id="questions_cancel",
        request=None,
        parameters=[WWW_AUTHENTICATE],
        responses={
            202: OpenApiResponse(QuestionOutputSerializer, description="Cancelled."),
            **errors(401, 403, 404, 406, 409),
        },
    )
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        question = question_get(question_id=pk, user=request.user)
        if question is None:
            raise NotFound("No question with this id.")
        try:
            question = question_cancel(question=question)
        except QuestionAlreadyFinished as exc:
            raise Conflict(
                f"The job is already {exc.question.status}; only a queued or running job "
                "can be stopped.",
                code="already_finished",
            ) from exc
        data = QuestionOutputSerializer(question, context={"request": request}).data
        return Response(data, status=status.HTTP_202_ACCEPTED)
