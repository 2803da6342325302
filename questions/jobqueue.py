"""The project's tasks, as the writes that enqueue them see them.

`questions.services` enqueues the answer task and `questions.webhooks.services` the webhook task,
but neither may import the code that runs them (`questions.tasks` → `questions.answering` →
`questions.services` → `questions.tasks` was an import circle): the task module registers its
tasks here when it is imported — the app's `ready()` imports it — and the services look them up
by name. One way: tasks → answering → services → jobqueue ← tasks.
"""

from __future__ import annotations

from django.tasks import Task

ANSWER_QUESTION = "answer_question"
DELIVER_WEBHOOK = "deliver_webhook"

_tasks: dict[str, Task] = {}


def task_register(name: str, task: Task) -> None:
    _tasks[name] = task


def task_get(name: str) -> Task:
    """The task registered under `name` by `questions.tasks`."""
    try:
        return _tasks[name]
    except KeyError:
        raise RuntimeError(
            f"no task {name!r} registered: questions.tasks registers them, imported by the "
            "questions app's ready(); is 'questions' in INSTALLED_APPS?"
        ) from None
