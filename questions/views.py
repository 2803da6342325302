"""Server-rendered pages. (Placeholder until the web page issue lands.)"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from questions.llm.client import llm_is_demo
from questions.selectors import question_get, question_list


@login_required
def ask(request: HttpRequest) -> HttpResponse:
    questions = question_list(user=request.user)[:20]
    return render(
        request, "questions/ask.html", {"questions": questions, "demo_model": llm_is_demo()}
    )


@login_required
def detail(request: HttpRequest, pk: str) -> HttpResponse:
    question = question_get(question_id=pk, user=request.user)
    if question is None:
        raise Http404("No such question.")
    return render(request, "questions/detail.html", {"question": question})
