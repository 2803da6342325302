from __future__ import annotations

from django.urls import path

from questions.api.events import QuestionEventsApi
from questions.api.views import QuestionCancelApi, QuestionDetailApi, QuestionListCreateApi
from questions.api.webhooks import (
    WebhookDetailApi,
    WebhookEnableApi,
    WebhookListCreateApi,
    WebhookRotateSecretApi,
)

app_name = "api"

urlpatterns = [
    path("questions/", QuestionListCreateApi.as_view(), name="question-list"),
    path("questions/<uuid:pk>/", QuestionDetailApi.as_view(), name="question-detail"),
    path("questions/<uuid:pk>/events", QuestionEventsApi.as_view(), name="question-events"),
    path("questions/<uuid:pk>/cancel", QuestionCancelApi.as_view(), name="question-cancel"),
    path("webhooks/", WebhookListCreateApi.as_view(), name="webhook-list"),
    path("webhooks/<uuid:pk>/", WebhookDetailApi.as_view(), name="webhook-detail"),
    path(
        "webhooks/<uuid:pk>/rotate-secret",
        WebhookRotateSecretApi.as_view(),
        name="webhook-rotate-secret",
    ),
    path("webhooks/<uuid:pk>/enable", WebhookEnableApi.as_view(), name="webhook-enable"),
]
