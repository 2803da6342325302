"""Bad values of the spend settings stop start-up with a message that names the variable."""

from __future__ import annotations

import pytest

from tests.integration.test_settings import PRODUCTION_ENV, manage


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("QUESTIONS_PRICES", "{not json", "QUESTIONS_PRICES must be valid JSON"),
        ("QUESTIONS_PRICES", '["gpt-4o"]', "QUESTIONS_PRICES must be a JSON object"),
        (
            "QUESTIONS_PRICES",
            '{"m": {"input": -1, "output": 2}}',
            "QUESTIONS_PRICES['m'].input must be a number >= 0",
        ),
        (
            "QUESTIONS_PRICES",
            '{"m": {"input": 1}}',
            """QUESTIONS_PRICES['m'] must be an object with exactly "input" and "output\"""",
        ),
        ("QUESTIONS_DEFAULT_PRICE", '{"input": 0, "output": 0}', "QUESTIONS_DEFAULT_PRICE"),
        ("QUESTIONS_DAILY_BUDGET_USD", "-1", "QUESTIONS_DAILY_BUDGET_USD must be a number >= 0"),
        ("QUESTIONS_DAILY_BUDGET_USD", "lots", "QUESTIONS_DAILY_BUDGET_USD must be a decimal"),
        ("OPENAI_RPM", "-5", "OPENAI_RPM must be >= 0"),
        ("OPENAI_TPM", "-1", "OPENAI_TPM must be >= 0"),
        ("OPENAI_RATE_LIMITS", '{"m": {"rpm": -1}}', "OPENAI_RATE_LIMITS['m'].rpm must be"),
        ("OPENAI_MAX_COMPLETION_TOKENS", "0", "OPENAI_MAX_COMPLETION_TOKENS must be >= 1"),
        ("QUESTIONS_MAX_OPEN_PER_USER", "0", "QUESTIONS_MAX_OPEN_PER_USER must be >= 1"),
        ("QUESTIONS_THROTTLE_RATE", "lots/hour", "QUESTIONS_THROTTLE_RATE must look like 30/hour"),
        ("QUESTIONS_THROTTLE_RATE", "5/fortnight", "QUESTIONS_THROTTLE_RATE must look like"),
    ],
)
def test_a_bad_spend_setting_stops_start_up_naming_it(variable, value, message):
    result = manage("check", env={**PRODUCTION_ENV, variable: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_good_spend_settings_start():
    env = {
        **PRODUCTION_ENV,
        "QUESTIONS_PRICES": '{"my-model": {"input": 1.5, "output": 2}}',
        "QUESTIONS_DAILY_BUDGET_USD": "0",
        "OPENAI_RATE_LIMITS": '{"gpt-4o": {"rpm": 500, "tpm": 30000}}',
        "OPENAI_RPM": "60",
    }
    result = manage("check", env=env)
    assert result.returncode == 0, result.stderr
