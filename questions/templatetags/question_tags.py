"""Template helpers for the question pages."""

from __future__ import annotations

from datetime import datetime, timedelta

from django import template
from django.utils import timezone
from django.utils.safestring import SafeString

from questions.web.rendering import render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown_filter(text: str) -> SafeString:
    return render_markdown(text)


@register.filter
def seconds(value: timedelta | None) -> str:
    """A duration as a person reads it: "0.8 s", "12 s", "3 min 5 s"."""
    if value is None:
        return "—"
    total = max(value.total_seconds(), 0.0)
    if total < 10:
        return f"{total:.1f} s"
    if total < 60:
        return f"{total:.0f} s"
    minutes, secs = divmod(round(total), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


@register.filter
def elapsed_since(start: datetime | None, end: datetime | None = None) -> timedelta | None:
    """Time from `start` to `end` (or to now while the job is unfinished)."""
    if start is None:
        return None
    return (end or timezone.now()) - start


_STATUS_LABELS = {"succeeded": "Answered"}


@register.filter
def status_label(status: str) -> str:
    """The word a person sees for a job's status ("Answered" rather than "Succeeded")."""
    return _STATUS_LABELS.get(status, str(status).capitalize())
