"""What an LLM call costs, in US dollars, from the price table in settings.

Prices are USD per 1M tokens (QUESTIONS_PRICES, QUESTIONS_DEFAULT_PRICE). A model is priced by its
own entry, else by the longest entry its name starts with (providers answer with dated names,
"gpt-4o-mini-2024-07-18"), else at the default price: an unknown model is never free.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal

from django.conf import settings

_PER_TOKEN = Decimal(1_000_000)
# The cost column: DecimalField(max_digits=12, decimal_places=6).
_QUANTUM = Decimal("0.000001")
# Chat framing around the messages (role markers, priming of the reply): a generous bound.
_FRAMING_TOKENS = 16


def model_price(model: str) -> dict[str, Decimal]:
    """{"input": USD per 1M tokens, "output": USD per 1M tokens} for `model`."""
    prices: dict[str, dict[str, Decimal]] = settings.QUESTIONS_PRICES
    if model in prices:
        return prices[model]
    matches = [name for name in prices if model.startswith(f"{name}-")]
    if matches:
        return prices[max(matches, key=len)]
    return settings.QUESTIONS_DEFAULT_PRICE


def priced_model_name(model: str) -> str:
    """The price-table entry `model` is billed under, or "other" (bounded metric labels)."""
    prices = settings.QUESTIONS_PRICES
    if model in prices:
        return model
    matches = [name for name in prices if model.startswith(f"{name}-")]
    return max(matches, key=len) if matches else "other"


def completion_cost(*, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """The cost of one call, rounded up to the micro-dollar of the job's `cost` column."""
    price = model_price(model)
    cost = (
        Decimal(max(prompt_tokens, 0)) * price["input"]
        + Decimal(max(completion_tokens, 0)) * price["output"]
    ) / _PER_TOKEN
    return cost.quantize(_QUANTUM, rounding=ROUND_CEILING)


def prompt_tokens_bound(question_bytes: int) -> int:
    """At most this many prompt tokens for a question of `question_bytes` UTF-8 bytes.

    A byte-level BPE token covers at least one byte, so bytes bound tokens from above, for any
    tokenizer of the GPT family, without loading one. The worker can pass it, plus
    OPENAI_MAX_COMPLETION_TOKENS, to the provider rate limiter."""
    system_bytes = len(settings.OPENAI_SYSTEM_PROMPT.encode())
    return system_bytes + question_bytes + _FRAMING_TOKENS


def worst_case_cost(*, questions: int = 1, question_bytes: int, model: str = "") -> Decimal:
    """The most `questions` questions of `question_bytes` UTF-8 bytes in all can cost: their
    prompt bound in and OPENAI_MAX_COMPLETION_TOKENS each out, at `model`'s (default: the
    configured model's) price."""
    if questions <= 0:
        return Decimal(0)
    return completion_cost(
        model=model or settings.OPENAI_MODEL,
        prompt_tokens=prompt_tokens_bound(0) * questions + question_bytes,
        completion_tokens=settings.OPENAI_MAX_COMPLETION_TOKENS * questions,
    )


def call_tokens_bound(*, question: str) -> int:
    """The most tokens one call for `question` can use, prompt and answer: what the worker
    reserves in the provider rate limiter (questions.llm.ratelimit.acquire)."""
    return prompt_tokens_bound(len(question.encode())) + settings.OPENAI_MAX_COMPLETION_TOKENS
