"""The site-wide error pages (handler400/404/500 in config/urls.py): JSON under /api/, in the
API's shape {"error", "detail"}, and Django's HTML pages elsewhere."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt


def json_error(status: int, code: str, detail: str) -> JsonResponse:
    """An error in the API's shape, for the views outside DRF (its handler shapes the rest)."""
    return JsonResponse({"error": code, "detail": detail}, status=status)


def _wants_json(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """404 as JSON under /api/, Django's page elsewhere."""
    if _wants_json(request):
        return json_error(404, "not_found", "No such resource.")
    return defaults.page_not_found(request, exception or Http404())


@csrf_exempt  # a 404 for every method, as for a path that matches nothing
def api_not_found(request: HttpRequest, path: str = "") -> HttpResponse:
    """Any other path under /api/ (config/urls.py routes them here last): the JSON 404 with
    DEBUG on too, where Django would answer its HTML page, which no API client reads."""
    return json_error(404, "not_found", "No such resource.")


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _wants_json(request):
        return json_error(400, "bad_request", "The request could not be understood.")
    return defaults.bad_request(request, exception or Exception())


def server_error(request: HttpRequest) -> HttpResponse:
    if _wants_json(request):
        return json_error(500, "server_error", "Something went wrong on our side.")
    return defaults.server_error(request)
