"""The webhook settings page: the user's endpoints, why one was disabled, a form to add one
(its signing secret shown in that response only), and delete / rotate / enable buttons."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from questions.web.views import _page
from questions.web.webhook_forms import WebhookActionForm, WebhookCreateForm
from questions.webhooks.selectors import webhook_endpoint_get, webhook_endpoint_list
from questions.webhooks.services import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_enable,
    webhook_endpoint_rotate_secret,
)

if TYPE_CHECKING:
    from questions.web.views import AuthenticatedHttpRequest


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def webhooks(request: AuthenticatedHttpRequest) -> HttpResponse:
    create_form = WebhookCreateForm()
    new_secret = ""
    status = 200
    if request.method == "POST" and "action" in request.POST:
        action_form = WebhookActionForm(request.POST)
        endpoint = (
            webhook_endpoint_get(
                endpoint_id=action_form.cleaned_data["endpoint_id"], user=request.user
            )
            if action_form.is_valid()
            else None
        )
        if endpoint is None:
            messages.error(request, "No such webhook endpoint.")
            status = 404
        elif action_form.cleaned_data["action"] == "delete":
            webhook_endpoint_delete(endpoint=endpoint)
            messages.success(request, "The endpoint was deleted. Nothing more is sent to it.")
            return redirect("questions:webhooks")
        elif action_form.cleaned_data["action"] == "rotate":
            new_secret = webhook_endpoint_rotate_secret(endpoint=endpoint)
            messages.success(request, "A new signing secret: the old one no longer signs.")
        else:
            try:
                webhook_endpoint_enable(endpoint=endpoint)
            except ValidationError as exc:
                messages.error(request, " ".join(exc.messages))
                status = 400
            else:
                messages.success(request, "The endpoint is enabled again.")
                return redirect("questions:webhooks")
    elif request.method == "POST":
        create_form = WebhookCreateForm(request.POST)
        if create_form.is_valid():
            try:
                _, new_secret = webhook_endpoint_create(
                    owner=request.user,
                    url=create_form.cleaned_data["url"],
                    events=create_form.cleaned_data["events"],
                )
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    create_form.add_error(field if field in create_form.fields else None, errors)
                status = 400
            else:
                create_form = WebhookCreateForm()
        else:
            status = 400
    return _page(
        request,
        "questions/webhooks.html",
        {
            "create_form": create_form,
            "new_secret": new_secret,
            "endpoints": webhook_endpoint_list(user=request.user),
        },
        nav="webhooks",
        status=status,
    )
