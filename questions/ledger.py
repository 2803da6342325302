"""The spend ledger's writes: one `LLMCall` row per call made to the provider.

`llm_call_record` writes one call. In one transaction it inserts the row (once: the row's id
is chosen before the call, so writing it again is a no-op) and adds its cost to the job's
`cost`, which thus stays the sum of the job's rows; once committed it counts the cost in
`questions_llm_cost_usd_total`. The worker's answers are stored in batches
(`questions.services.questions_succeed`), whose one statement inserts the same rows
(`llm_call_row`) with the same effects (`llm_call_recorded`). Nothing else writes a cost.

What a call that did not finish used: the usage the provider reported if it got that far, else
the estimate of `Progress.partial` when some text came (the prompt was read and billed), else
nothing (an error before any content is not billed).
"""

from __future__ import annotations

import uuid
from decimal import Decimal
from functools import partial

from django.db import transaction
from django.db.models import F, Value
from django.db.models.functions import Coalesce

from questions import metrics
from questions.llm.client import Completion, Progress
from questions.models import LLMCall, Question
from questions.pricing import completion_cost

Outcome = LLMCall.Outcome


def call_usage(*, progress: Progress, question: str, model: str) -> Completion:
    """What a call cut off or failed used so far (see the module docstring)."""
    if not progress.parts and progress.prompt_tokens is None:
        return Completion(
            text="", model=progress.model or model, prompt_tokens=0, completion_tokens=0
        )
    return progress.partial(question, model)


def llm_call_row(
    *, call_id: uuid.UUID, question: Question, completion: Completion, outcome: str
) -> LLMCall:
    """The ledger row of one call, unsaved, its cost computed from the completion's usage."""
    max_model = LLMCall._meta.get_field("model").max_length or 200
    return LLMCall(
        id=call_id,
        question_id=question.pk,
        user_id=question.owner_id,
        model=completion.model.replace("\x00", "")[:max_model],
        fallback_level=question.fallback_level,
        attempt=question.attempts,
        outcome=outcome,
        prompt_tokens=max(completion.prompt_tokens, 0),
        completion_tokens=max(completion.completion_tokens, 0),
        cost=completion_cost(
            model=completion.model,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        ),
    )


def llm_call_recorded(*, question: Question, row: LLMCall) -> None:
    """A new ledger row's cost was added to its job's row in the current transaction: mirror
    the sum on `question` (for the caller, and the job cache) and count the cost on commit."""
    question.cost = (question.cost or Decimal(0)) + row.cost
    transaction.on_commit(partial(metrics.record_llm_cost, model=row.model, cost=row.cost))


def llm_call_record(
    *,
    call_id: uuid.UUID,
    question: Question,
    completion: Completion,
    outcome: str,
) -> Decimal | None:
    """Write the ledger row of one call and add its cost to the job. Returns the cost added,
    or None if the row was already written (nothing changes then). Joins the caller's
    transaction if there is one, so a job's outcome and its ledger row commit together."""
    row = llm_call_row(call_id=call_id, question=question, completion=completion, outcome=outcome)
    with transaction.atomic():
        _, created = LLMCall.objects.get_or_create(
            id=call_id,
            defaults={
                field.attname: getattr(row, field.attname)
                for field in LLMCall._meta.concrete_fields
                if field.attname != "id"
            },
        )
        if not created:
            return None
        Question.objects.filter(pk=question.pk).update(
            cost=Coalesce(F("cost"), Value(Decimal(0))) + row.cost
        )
        llm_call_recorded(question=question, row=row)
    return row.cost
