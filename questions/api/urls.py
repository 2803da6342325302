from __future__ import annotations

from django.urls import path

from questions.api.views import QuestionDetailApi, QuestionListCreateApi

app_name = "api"

urlpatterns = [
    path("questions/", QuestionListCreateApi.as_view(), name="question-list"),
    path("questions/<uuid:pk>/", QuestionDetailApi.as_view(), name="question-detail"),
]
