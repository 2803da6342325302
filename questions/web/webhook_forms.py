from __future__ import annotations

from django import forms

from questions.models import WebhookEvent


class WebhookCreateForm(forms.Form):
    """Parses only: the URL's rules and the address checks are the service's."""

    url = forms.CharField(label="URL", max_length=2000, widget=forms.URLInput)
    events = forms.MultipleChoiceField(
        label="Events",
        choices=WebhookEvent.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=list(WebhookEvent.values),
    )


class WebhookActionForm(forms.Form):
    endpoint_id = forms.UUIDField(widget=forms.HiddenInput)
    action = forms.ChoiceField(
        choices=[("delete", "Delete"), ("rotate", "Rotate secret"), ("enable", "Enable")]
    )
