"""Every API error is JSON: {"error": code, "detail": message, "fields": {...}?}."""

from __future__ import annotations

import logging
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from questions.limits import AskRefused

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, AskRefused):
        return Response(
            {"error": exc.code, "detail": exc.detail, "retry_after": exc.retry_after},
            status=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        # Not an API error: log it with its traceback, tell the client nothing internal.
        logger.exception("unhandled error in API view", exc_info=exc)
        return Response(
            {"error": "server_error", "detail": "Something went wrong on our side."},
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    if isinstance(exc, exceptions.ValidationError):
        fields = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        messages = [
            f"{name}: {' '.join(str(m) for m in errors)}"
            if name != "non_field_errors"
            else " ".join(str(m) for m in errors)
            for name, errors in fields.items()
        ]
        response.data = {"error": "invalid", "detail": " ".join(messages), "fields": fields}
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        response.data = {
            "error": codes if isinstance(codes, str) else "error",
            "detail": str(exc.detail),
        }
        # Throttled always sets `wait`; djangorestframework-stubs 3.18.1 does not declare it.
        wait = getattr(exc, "wait", None) if isinstance(exc, exceptions.Throttled) else None
        if wait is not None:
            response.data["retry_after"] = int(wait)
    return response


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _json_error(status_code: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail}, status=status_code)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 as JSON under /api/, Django's page elsewhere."""
    if _wants_json(request):
        return _json_error(404, "not_found", "No such resource.")
    return defaults.page_not_found(request, exception or Http404())


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return _json_error(400, "bad_request", "The request could not be understood.")
    return defaults.bad_request(request, exception or Exception())


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return _json_error(500, "server_error", "Something went wrong on our side.")
    return defaults.server_error(request)
