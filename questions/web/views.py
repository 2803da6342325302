"""Server-rendered pages: ask, watch a job live, history, the API token. Thin: the work is done
by questions.services / questions.selectors; validation and the limits on asking by
the service, as for the API."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from questions.accounts import api_token_create, api_token_list, api_token_revoke
from questions.limits import AskRefused
from questions.llm.client import llm_is_demo
from questions.models import Question
from questions.selectors import question_get, question_list
from questions.services import (
    IdempotencyKeyReused,
    QuestionAlreadyFinished,
    question_cancel,
    question_create,
)
from questions.templatetags.question_tags import status_label
from questions.web.errors import json_error
from questions.web.forms import AskForm, HistoryFilterForm, TokenCreateForm, TokenRevokeForm

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    class AuthenticatedHttpRequest(HttpRequest):
        """The request of a @login_required view (django-stubs' recipe): its user is a User."""

        user: User


HISTORY_PAGE_SIZE = 20
RECENT_ON_ASK_PAGE = 5


def _page(
    request: HttpRequest,
    template: str,
    context: dict[str, Any],
    *,
    nav: str = "",
    status: int = 200,
) -> HttpResponse:
    """Render a page with what every page shows: the demo-model banner and the current nav item."""
    return render(
        request, template, {"demo_model": llm_is_demo(), "nav": nav, **context}, status=status
    )


def _visible_question(request: HttpRequest, pk: uuid.UUID) -> Question:
    """The question if this user may see it; 404 (not 403) otherwise, so ids leak nothing."""
    question = question_get(question_id=pk, user=request.user)
    if question is None:
        raise Http404("No such question.")
    return question


def _refused_message(refused: AskRefused) -> str:
    """The limit's own words (they say why and when to ask again), and that nothing is lost."""
    return f"{refused.detail} Your question is kept below."


@login_required
@require_http_methods(["GET", "POST"])
def ask(request: AuthenticatedHttpRequest) -> HttpResponse:
    throttled = ""
    status = 200
    if request.method == "POST":
        form = AskForm(request.POST)
        if form.is_valid():
            request_id = form.cleaned_data.get("request_id")
            try:
                question, _ = question_create(
                    owner=request.user,
                    text=form.cleaned_data["question"],
                    idempotency_key=f"page:{request_id}" if request_id else None,
                )
            except ValidationError as exc:
                form.add_error(None, exc)
                status = 400
            except IdempotencyKeyReused:
                # This form was sent before with another text (back button, edit, send): ask
                # with a fresh form rather than show the earlier question's answer.
                form = AskForm({"question": form.data["question"], "request_id": uuid.uuid4()})
                form.is_valid()
                form.add_error("question", "This form was already sent. Please send it again.")
                status = 409
            except AskRefused as exc:
                throttled, status = _refused_message(exc), 429
            else:
                messages.success(request, "Question received. The answer appears below.")
                return redirect(question)
        else:
            status = 400
    else:
        form = AskForm(initial=_ask_initial(request))
    recent = question_list(user=request.user, owner_id=request.user.pk)[:RECENT_ON_ASK_PAGE]
    return _page(
        request,
        "questions/ask.html",
        {"form": form, "throttled": throttled, "recent": recent},
        nav="ask",
        status=status,
    )


def _ask_initial(request: HttpRequest) -> dict[str, Any]:
    """A fresh request id; with ?again=<id>, the text of that earlier question to ask again."""
    initial: dict[str, Any] = {"request_id": uuid.uuid4()}
    try:
        again = uuid.UUID(request.GET.get("again", ""))
    except ValueError:
        return initial
    previous = question_get(question_id=again, user=request.user)
    if previous is not None:
        initial["question"] = previous.text
    return initial


@login_required
@require_GET
def history(request: HttpRequest) -> HttpResponse:
    staff = bool(request.user.is_staff)
    filters = HistoryFilterForm(request.GET, staff=staff)
    chosen: dict[str, Any] = filters.cleaned_data if filters.is_valid() else {}
    owner = chosen.get("owner")
    questions = question_list(
        user=request.user,
        status=chosen.get("status") or None,
        search=chosen.get("q") or None,
        owner_id=owner.pk if owner is not None else None,
    )
    page = Paginator(questions, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    filtered = any(chosen.get(name) for name in ("q", "status", "owner"))
    return _page(
        request,
        "questions/history.html",
        {"filters": filters, "page_obj": page, "show_owner": staff, "filtered": filtered},
        nav="history",
    )


def _refreshes(question: Question) -> bool:
    """Whether the page should refresh itself (without JavaScript) to show what comes next."""
    if not question.is_finished:
        return True
    # Stopped while running: its worker stores the partial answer within a second or two.
    return (
        question.status == Question.Status.CANCELLED
        and question.started_at is not None
        and not question.answer
        and question.finished_at is not None
        and (timezone.now() - question.finished_at).total_seconds()
        < settings.QUESTIONS_EVENTS_CANCEL_GRACE
    )


@login_required
@require_GET
def detail(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    question = _visible_question(request, pk)
    return _page(
        request,
        "questions/detail.html",
        {
            "question": question,
            "show_owner": bool(request.user.is_staff),
            "refreshes": _refreshes(question),
        },
        nav="history",
    )


@login_required
@require_POST
def cancel(request: HttpRequest, pk: uuid.UUID) -> HttpResponse:
    """The page's Stop button (a plain form: it works without JavaScript)."""
    question = _visible_question(request, pk)
    try:
        question_cancel(question=question)
    except QuestionAlreadyFinished as exc:
        messages.info(request, f"The question was already {status_label(exc.question.status)}.")
    else:
        messages.success(request, "Stopped. Whatever the model had written is kept below.")
    return redirect(question)


@require_GET
def live(request: HttpRequest, pk: uuid.UUID) -> JsonResponse:
    """The job's state and its panel rendered (and sanitised) on the server, for the live page."""
    if not request.user.is_authenticated:
        return json_error(401, "not_authenticated", "Please log in again.")
    question = question_get(question_id=pk, user=request.user)
    if question is None:
        return json_error(404, "not_found", "No such question.")
    html = render_to_string(
        "questions/_job.html",
        {"question": question, "show_owner": bool(request.user.is_staff)},
        request=request,
    )
    response = JsonResponse(
        {
            "status": question.status,
            "status_label": status_label(question.status),
            "finished": question.is_finished,
            "html": html,
        }
    )
    response["Cache-Control"] = "no-store"
    return response


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token(request: AuthenticatedHttpRequest) -> HttpResponse:
    """List the user's tokens; make one (its key shown in this response only) or revoke one."""
    create_form = TokenCreateForm()
    new_key = ""
    status = 200
    if request.method == "POST" and "revoke" in request.POST:
        revoke_form = TokenRevokeForm(request.POST)
        if revoke_form.is_valid() and api_token_revoke(
            user=request.user, token_id=revoke_form.cleaned_data["token_id"]
        ):
            messages.success(request, "The token was revoked. It no longer works.")
            return redirect("questions:token")
        status = 404
        messages.error(request, "No such token.")
    elif request.method == "POST":
        create_form = TokenCreateForm(request.POST)
        if create_form.is_valid():
            days = create_form.cleaned_data["expires_in_days"]
            new = api_token_create(
                user=request.user,
                name=create_form.cleaned_data["name"],
                expires_at=timezone.now() + timedelta(days=days) if days else None,
            )
            new_key, create_form = new.key, TokenCreateForm()
        else:
            status = 400
    return _page(
        request,
        "questions/token.html",
        {
            "create_form": create_form,
            "new_key": new_key,
            "tokens": api_token_list(user=request.user),
            "now": timezone.now(),
        },
        nav="token",
        status=status,
    )
