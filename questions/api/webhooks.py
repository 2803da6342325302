"""/api/webhooks/: a user's completion webhook endpoints (create, list, get, delete, rotate
the secret, enable again). Another user's endpoint is a 404, staff included."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from django.urls import reverse
from drf_spectacular.utils import OpenApiCallback, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

# The one description of an error body, shared with the job endpoints.
from questions.api.schema import WWW_AUTHENTICATE, errors
from questions.api.webhook_serializers import (
    WebhookEndpointInputSerializer,
    WebhookEndpointOutputSerializer,
    WebhookEndpointWithSecretSerializer,
    WebhookEventSerializer,
)
from questions.models import WebhookEndpoint
from questions.webhooks.selectors import webhook_endpoint_get, webhook_endpoint_list
from questions.webhooks.services import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
)

if TYPE_CHECKING:
    from questions.api.views import AuthenticatedRequest

_EVENT_CALLBACK = OpenApiCallback(
    name="questionEvent",
    path="{$request.body#/url}",
    decorator=extend_schema(
        summary="A job of yours ended",
        description=(
            "POSTed to the endpoint's URL when one of your jobs reaches an event it asked for. "
            "Standard Webhooks headers: `webhook-id` (msg_…, the same on every retry of this "
            "event: drop duplicates), `webhook-timestamp` (Unix seconds of this attempt), "
            "`webhook-signature` (`v1,` + base64 HMAC-SHA256 of `id.timestamp.body` under the "
            "secret). Answer 2xx within 10 s; 410 stops all deliveries to the endpoint; "
            "anything else is retried with backoff for about 24 hours."
        ),
        request=WebhookEventSerializer,
        responses={
            200: OpenApiResponse(description="Received (any 2xx)."),
            410: OpenApiResponse(description="Gone: the endpoint is disabled."),
        },
    ),
)


def _endpoint(request: Request, pk: uuid.UUID) -> WebhookEndpoint:
    endpoint = webhook_endpoint_get(endpoint_id=pk, user=request.user)
    if endpoint is None:
        raise NotFound("No webhook endpoint with this id.")
    return endpoint


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> dict[str, object]:
    data = dict(WebhookEndpointOutputSerializer(endpoint).data)
    data["secret"] = secret
    return data


class WebhookListCreateApi(APIView):
    """POST registers an endpoint (201, its secret shown once); GET lists yours."""

    @extend_schema(
        operation_id="webhooks_create",
        request=WebhookEndpointInputSerializer,
        responses={201: WebhookEndpointWithSecretSerializer, **errors(400, 401, 403, 406, 415)},
        parameters=[WWW_AUTHENTICATE],
        callbacks=[_EVENT_CALLBACK],
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        serializer = WebhookEndpointInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(
            owner=request.user,
            url=serializer.validated_data["url"],
            events=serializer.validated_data["events"],
        )
        location = reverse("api:webhook-detail", kwargs={"pk": endpoint.pk})
        return Response(
            _with_secret(endpoint, secret),
            status=status.HTTP_201_CREATED,
            headers={"Location": request.build_absolute_uri(location)},
        )

    @extend_schema(
        operation_id="webhooks_list",
        responses={200: WebhookEndpointOutputSerializer(many=True), **errors(401, 406)},
        parameters=[WWW_AUTHENTICATE],
    )
    def get(self, request: Request) -> Response:
        endpoints = webhook_endpoint_list(user=request.user)
        return Response(WebhookEndpointOutputSerializer(endpoints, many=True).data)


class WebhookDetailApi(APIView):
    """One of your endpoints; DELETE removes it (pending deliveries with it)."""

    @extend_schema(
        operation_id="webhooks_retrieve",
        responses={200: WebhookEndpointOutputSerializer, **errors(401, 404, 406)},
        parameters=[WWW_AUTHENTICATE],
    )
    def get(self, request: Request, pk: uuid.UUID) -> Response:
        return Response(WebhookEndpointOutputSerializer(_endpoint(request, pk)).data)

    @extend_schema(
        operation_id="webhooks_destroy",
        responses={204: None, **errors(401, 403, 404, 406)},
        parameters=[WWW_AUTHENTICATE],
    )
    def delete(self, request: Request, pk: uuid.UUID) -> Response:
        webhook_endpoint_delete(endpoint=_endpoint(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookRotateSecretApi(APIView):
    """A new signing secret, shown in this response only; the old one stops signing at once."""

    @extend_schema(
        operation_id="webhooks_rotate_secret",
        request=None,
        responses={200: WebhookEndpointWithSecretSerializer, **errors(401, 403, 404, 406)},
        parameters=[WWW_AUTHENTICATE],
    )
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        endpoint = _endpoint(request, pk)
        secret = webhook_endpoint_rotate_secret(endpoint=endpoint)
        return Response(_with_secret(endpoint, secret))


class WebhookEnableApi(APIView):
    """Turn a disabled endpoint back on (its URL is checked again); events missed meanwhile
    are not resent."""

    @extend_schema(
        operation_id="webhooks_enable",
        request=None,
        responses={200: WebhookEndpointOutputSerializer, **errors(400, 401, 403, 404, 406)},
        parameters=[WWW_AUTHENTICATE],
    )
    def post(self, request: Request, pk: uuid.UUID) -> Response:
        endpoint = webhook_endpoint_enable(endpoint=_endpoint(request, pk))
        return Response(WebhookEndpointOutputSerializer(endpoint).data)
