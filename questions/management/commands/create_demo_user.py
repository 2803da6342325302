from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from questions.accounts import api_token_create
from questions.models import ApiToken

DEMO_TOKEN_NAME = "demo (create_demo_user)"  # noqa: S105 - a label, not a secret


class Command(BaseCommand):
    help = "Create (or reset) a demo user for local runs and print a new API token for it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo", help="Username (default: %(default)s).")
        parser.add_argument(
            "--password", default="demo-password", help="Password (default: %(default)s)."
        )
        parser.add_argument("--staff", action="store_true", help="Make the user staff + admin.")

    def handle(self, *args: Any, **options: Any) -> None:
        user, created = get_user_model().objects.get_or_create(username=options["username"])
        user.set_password(options["password"])
        if options["staff"]:
            user.is_staff = user.is_superuser = True
        user.save()
        # Tokens are stored as digests and cannot be printed again: replace the last demo token.
        ApiToken.objects.filter(user=user, name=DEMO_TOKEN_NAME).delete()
        new = api_token_create(user=user, name=DEMO_TOKEN_NAME)
        verb = "Created" if created else "Reset"
        self.stdout.write(f"{verb} user {user.username!r} (password {options['password']!r}).")
        self.stdout.write(f"API token: {new.key}")
