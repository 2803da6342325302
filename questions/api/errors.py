"""Every API error is JSON: {"error": code, "detail": message, "fields": {...}?}."""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import InterfaceError, OperationalError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from questions.limits import AskRefused

logger = logging.getLogger(__name__)

# What a client is told to wait when PostgreSQL cannot be reached (a restart, a failover).
DATABASE_RETRY_AFTER = 5


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = _as_api_exception(exc)
    if isinstance(exc, AskRefused):
        return Response(
            {"error": exc.code, "detail": exc.detail, "retry_after": exc.retry_after},
            status=status.HTTP_429_TOO_MANY_REQUESTS,
            headers={"Retry-After": str(exc.retry_after)},
        )
    if isinstance(exc, OperationalError | InterfaceError):
        # PostgreSQL down, restarting or refusing connections: not a bug, a 503 to retry.
        logger.warning("database unavailable", extra={"error": type(exc).__name__})
        return Response(
            {
                "error": "database_unavailable",
                "detail": "The database is unavailable right now; try again shortly.",
                "retry_after": DATABASE_RETRY_AFTER,
            },
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER)},
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


def _as_api_exception(exc: Exception) -> Exception:
    """Django's own exceptions as DRF's, so the services raise Django's and the views do not
    translate: a ValidationError from a service is a 400 with its fields, Http404 a 404."""
    if isinstance(exc, DjangoValidationError):
        return exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        return exceptions.NotFound(*exc.args)
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied(*exc.args)
    return exc
