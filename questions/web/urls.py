from __future__ import annotations

from django.urls import path

from questions.web import views, webhooks

app_name = "questions"

urlpatterns = [
    path("", views.ask, name="ask"),
    path("questions/", views.history, name="history"),
    path("questions/<uuid:pk>/", views.detail, name="detail"),
    path("questions/<uuid:pk>/live/", views.live, name="live"),
    path("questions/<uuid:pk>/cancel/", views.cancel, name="cancel"),
    path("account/token/", views.token, name="token"),
    path("account/webhooks/", webhooks.webhooks, name="webhooks"),
]
