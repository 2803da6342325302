from __future__ import annotations

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from questions.web import health
from questions.web.errors import api_not_found

urlpatterns = [
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("api/", include("questions.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves its start-up script as a file: the CSP allows no inline script.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="swagger-ui"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("", include("django_prometheus.urls")),
    path("", include("questions.web.urls")),
    # Last: any other path under /api/ is the API's JSON 404, DEBUG (make run) or not.
    re_path(r"^api/(?P<path>.*)$", api_not_found),
]

handler400 = "questions.web.errors.bad_request"
handler404 = "questions.web.errors.page_not_found"
handler500 = "questions.web.errors.server_error"
