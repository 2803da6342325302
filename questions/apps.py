from __future__ import annotations

from django.apps import AppConfig


class QuestionsConfig(AppConfig):
    name = "questions"
    verbose_name = "Questions"

    def ready(self) -> None:
        from questions import (
            signals,  # noqa: F401 - connects the receivers
            tasks,  # noqa: F401 - registers the tasks (questions.jobqueue)
        )
