"""Server-rendered pages: ask, watch a job live, history, the API token. Thin: the work is done
by questions.services / questions.selectors; validation by the service, throttling by the same
AskRateThrottle the API uses."""

from __future__ import annotations

import math
import uuid
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from questions.accounts import api_token_get, api_token_regenerate
from questions.forms import AskForm, HistoryFilterForm
from questions.llm.client import llm_is_demo
from questions.models import Question
from questions.selectors import question_get, question_list
from questions.services import QuestionAlreadyFinished, question_cancel, question_create
from questions.templatetags.question_tags import status_label
from questions.throttling import AskRateThrottle

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


def _visible_question(request: HttpRequest, pk: Any) -> Question:
    """The question if this user may see it; 404 (not 403) otherwise, so ids leak nothing."""
    question = question_get(question_id=pk, user=request.user)
    if question is None:
        raise Http404("No such question.")
    return question


def _throttled_message(wait: float | None) -> str:
    seconds = math.ceil(wait) if wait else None
    when = f"in about {seconds} seconds" if seconds else "in a little while"
    return (
        "You have asked a lot of questions in a short time, and each one costs money. "
        f"Please try again {when}. Your question is kept below."
    )


@login_required
@require_http_methods(["GET", "POST"])
def ask(request: HttpRequest) -> HttpResponse:
    throttled = ""
    status = 200
    if request.method == "POST":
        form = AskForm(request.POST)
        throttle = AskRateThrottle()
        if not throttle.allow_request(request, None):
            throttled, status = _throttled_message(throttle.wait()), 429
        elif form.is_valid():
            request_id = form.cleaned_data.get("request_id")
            try:
                question, _ = question_create(
                    owner=request.user,
                    text=form.cleaned_data["question"],
                    idempotency_key=f"page:{request_id}" if request_id else None,
                )
            except ValidationError as exc:
                form.add_error("question", exc)
                status = 400
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
def detail(request: HttpRequest, pk: Any) -> HttpResponse:
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
def cancel(request: HttpRequest, pk: Any) -> HttpResponse:
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
def live(request: HttpRequest, pk: Any) -> JsonResponse:
    """The job's state and its panel rendered (and sanitised) on the server, for the live page."""
    if not request.user.is_authenticated:
        return JsonResponse(
            {"error": "not_authenticated", "detail": "Please log in again."}, status=401
        )
    question = question_get(question_id=pk, user=request.user)
    if question is None:
        return JsonResponse({"error": "not_found", "detail": "No such question."}, status=404)
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


@login_required
@require_http_methods(["GET", "POST"])
def token(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        api_token_regenerate(user=request.user)
        messages.success(request, "A new API token was made. The old one no longer works.")
        return redirect("questions:token")
    return _page(
        request, "questions/token.html", {"token": api_token_get(user=request.user)}, nav="token"
    )
