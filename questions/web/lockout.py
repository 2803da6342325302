"""The answer to a login refused by django-axes: 429, a page that says when to try again, and
Retry-After."""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from questions.llm.client import llm_is_demo


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: Any = None
) -> HttpResponse:
    cool_off = get_cool_off(request)
    seconds = math.ceil(cool_off.total_seconds()) if cool_off else None
    response = render(
        request,
        "registration/locked_out.html",
        {
            "minutes": math.ceil(seconds / 60) if seconds else None,
            "demo_model": llm_is_demo(),
        },
        status=429,
    )
    if seconds:
        response["Retry-After"] = str(seconds)
    return response
