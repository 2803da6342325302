"""questions.pricing: the cost of a call from the price table in settings."""

from __future__ import annotations

from decimal import Decimal

from questions.llm.client import DEMO_MODEL
from questions.pricing import (
    call_tokens_bound,
    completion_cost,
    priced_model_name,
    prompt_tokens_bound,
)


def test_a_known_model_is_priced_per_million_tokens():
    cost = completion_cost(model="gpt-4o-mini", prompt_tokens=1_000_000, completion_tokens=500_000)
    assert cost == Decimal("0.15") + Decimal("0.30")


def test_a_dated_model_name_takes_the_price_of_its_longest_entry():
    dated = completion_cost(
        model="gpt-4o-mini-2024-07-18", prompt_tokens=1_000_000, completion_tokens=0
    )
    assert dated == Decimal("0.15")  # gpt-4o-mini's, not gpt-4o's
    assert priced_model_name("gpt-4o-mini-2024-07-18") == "gpt-4o-mini"
    assert priced_model_name("gpt-4o-2024-08-06") == "gpt-4o"


def test_an_unknown_model_costs_the_default_price_never_nothing(settings):
    settings.QUESTIONS_DEFAULT_PRICE = {"input": Decimal(10), "output": Decimal(30)}
    cost = completion_cost(model="someone/llama-70b", prompt_tokens=1000, completion_tokens=1000)
    assert cost == Decimal("0.040000")
    assert priced_model_name("someone/llama-70b") == "other"
    assert priced_model_name("gpt-4oo") == "other"  # a prefix must end at a dash


def test_the_table_in_settings_overrides_and_extends(settings):
    settings.QUESTIONS_PRICES = {
        **settings.QUESTIONS_PRICES,
        "local": {"input": Decimal(0), "output": Decimal(0)},
    }
    assert completion_cost(model="local", prompt_tokens=10**9, completion_tokens=10**9) == 0


def test_cost_is_rounded_up_to_the_micro_dollar():
    # 1 token of gpt-4o-mini input is $0.00000015: never stored as free.
    assert completion_cost(model="gpt-4o-mini", prompt_tokens=1, completion_tokens=0) == Decimal(
        "0.000001"
    )
    assert completion_cost(model="gpt-4o-mini", prompt_tokens=0, completion_tokens=0) == 0


def test_the_prompt_bound_counts_bytes_not_characters(settings):
    settings.OPENAI_SYSTEM_PROMPT = "sys"
    assert prompt_tokens_bound(len("héllo".encode())) == 3 + 6 + 16


def test_a_calls_token_bound_is_its_prompt_bound_plus_the_longest_answer(settings):
    settings.OPENAI_SYSTEM_PROMPT = "sys"
    settings.OPENAI_MAX_COMPLETION_TOKENS = 100
    assert call_tokens_bound(question="héllo") == 3 + 6 + 16 + 100


def test_the_offline_demo_model_is_free() -> None:
    assert completion_cost(model=DEMO_MODEL, prompt_tokens=1000, completion_tokens=1000) == 0
