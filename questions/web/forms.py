"""Forms of the question pages. They only parse: a question's text is validated by the service
(questions.services.validate_question_text), whose errors the view puts on the form."""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model

from questions.models import Question


class AskForm(forms.Form):
    question = forms.CharField(
        label="Your question",
        widget=forms.Textarea(attrs={"rows": 5}),
        error_messages={"required": "The question may not be blank."},
    )
    # A fresh id per rendered form: submitting the same form twice records one question.
    request_id = forms.UUIDField(widget=forms.HiddenInput, required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = settings.QUESTIONS_MAX_LENGTH
        self.fields["question"].help_text = f"Up to {limit:,} characters. Markdown is welcome."


class HistoryFilterForm(forms.Form):
    """The history page's filters, read from the query string; staff also filter by owner."""

    q = forms.CharField(label="Search", required=False, max_length=200)
    status = forms.ChoiceField(
        label="Status", required=False, choices=[("", "Any status"), *Question.Status.choices]
    )
    owner = forms.ModelChoiceField(
        label="Asked by", required=False, queryset=get_user_model().objects.none()
    )

    def __init__(self, *args: Any, staff: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if staff:
            owner = cast(forms.ModelChoiceField, self.fields["owner"])
            owner.queryset = (
                get_user_model()
                .objects.filter(questions__isnull=False)
                .distinct()
                .order_by("username")
            )
            owner.empty_label = "Anyone"
        else:
            del self.fields["owner"]


class TokenCreateForm(forms.Form):
    """A new API token: a name to tell it apart, and how long it lasts."""

    EXPIRY_CHOICES = [("", "Never"), ("30", "30 days"), ("90", "90 days"), ("365", "1 year")]

    name = forms.CharField(label="Name", max_length=100, initial="API token")
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        choices=EXPIRY_CHOICES,
        required=False,
        coerce=int,
        empty_value=None,
        initial="90",
    )


class TokenRevokeForm(forms.Form):
    token_id = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
