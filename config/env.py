"""The helpers through which the project reads its configuration from the environment
(12-factor): config/settings/*, config/gunicorn.conf.py and config/telemetry.py call them, and
every variable they are asked for is listed in `.env.example` (tests/unit/test_env_example.py).

What is not read through here, on purpose: variables that a library reads by its own
conventions (boto3's `AWS_*`, the OTLP exporter's `OTEL_EXPORTER_OTLP_*` endpoint and headers,
the SDK's `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*`), and process plumbing that the code sets
rather than reads as a setting: `PROMETHEUS_MULTIPROC_DIR` (gunicorn.conf.py and the worker
supervisor make it for their children) and `DJANGO_SETTINGS_MODULE`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from dj_database_url import DBConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"Set the {name} environment variable.")
        return default
    return value


def env_optional(name: str) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or None


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (true/false), not {value!r}.")


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, not {value!r}.") from None


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_networks(name: str) -> list[IPv4Network | IPv6Network]:
    """A comma-separated list of IP addresses or CIDR networks."""
    networks = []
    for item in env_list(name, default=[]):
        try:
            networks.append(ip_network(item, strict=False))
        except ValueError:
            raise ImproperlyConfigured(
                f"{name} must list IP addresses or networks (CIDR), not {item!r}."
            ) from None
    return networks


def env_decimal(name: str, default: str, *, minimum: Decimal | None = None) -> Decimal:
    value = os.environ.get(name, "").strip() or default
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise ImproperlyConfigured(f"{name} must be a decimal number, not {value!r}.") from None
    if not number.is_finite() or (minimum is not None and number < minimum):
        raise ImproperlyConfigured(f"{name} must be a number >= {minimum}, not {value!r}.")
    return number


def env_json(name: str, default: object) -> object:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        return json.loads(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be valid JSON ({exc}).") from None


def require_min(name: str, value: int | float, minimum: int | float) -> None:
    """Stop start-up when a number read from `name` is below `minimum`."""
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, not {value!r}.")


_RATE_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_RATE_PERIODS |= {"h": 3600, "hour": 3600, "d": 86400, "day": 86400}


def parse_rate(value: str, *, name: str = "rate") -> tuple[int, int]:
    """ "30/hour" → (30, 3600): that many events per window of that many seconds."""
    count, _, period = value.strip().partition("/")
    try:
        number = int(count)
    except ValueError:
        number = 0
    seconds = _RATE_PERIODS.get(period.strip().lower())
    if number < 1 or seconds is None:
        raise ImproperlyConfigured(
            f"{name} must look like 30/hour (a positive count per second, minute, hour or day), "
            f"not {value!r}."
        )
    return number, seconds


def parse_price_table(raw: object, *, name: str) -> dict[str, dict[str, Decimal]]:
    """{"model": {"input": USD per 1M tokens, "output": USD per 1M tokens}} with numbers >= 0."""
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f"{name} must be a JSON object like "
            '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}} (USD per 1M tokens).'
        )
    return {
        str(model): parse_price(entry, name=f"{name}[{model!r}]") for model, entry in raw.items()
    }


def parse_price(entry: object, *, name: str) -> dict[str, Decimal]:
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise ImproperlyConfigured(
            f'{name} must be an object with exactly "input" and "output" (USD per 1M tokens).'
        )
    price: dict[str, Decimal] = {}
    for kind in ("input", "output"):
        value = entry[kind]
        try:
            if isinstance(value, bool):
                raise InvalidOperation
            number = Decimal(str(value))
        except InvalidOperation:
            number = Decimal("NaN")
        if not number.is_finite() or number < 0:
            raise ImproperlyConfigured(f"{name}.{kind} must be a number >= 0, not {value!r}.")
        price[kind] = number
    return price


def parse_rate_limits(raw: object, *, name: str) -> dict[str, dict[str, int]]:
    """{"model": {"rpm": requests per minute, "tpm": tokens per minute}} (0: no limit)."""
    if not isinstance(raw, dict):
        raise ImproperlyConfigured(
            f'{name} must be a JSON object like {{"gpt-4o": {{"rpm": 500, "tpm": 30000}}}}.'
        )
    limits: dict[str, dict[str, int]] = {}
    for model, entry in raw.items():
        if not isinstance(entry, dict) or not set(entry) <= {"rpm", "tpm"}:
            raise ImproperlyConfigured(f'{name}[{model!r}] may only set "rpm" and "tpm".')
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ImproperlyConfigured(
                    f"{name}[{model!r}].{key} must be an integer >= 0, not {value!r}."
                )
        limits[str(model)] = dict(entry)
    return limits


def postgres_timeouts(
    database: DBConfig, *, connect_timeout: int, statement_timeout: int
) -> DBConfig:
    """`database` (a DATABASES entry) with libpq's connect timeout, TCP keepalives and a
    statement timeout (seconds; 0: none) added to its OPTIONS; anything else unchanged. The
    statement timeout goes in libpq's `options` after any the URL already gives."""
    if not str(database.get("ENGINE", "")).endswith("postgresql"):
        return database
    options: dict[str, Any] = dict(database.get("OPTIONS") or {})
    options.setdefault("connect_timeout", connect_timeout)
    # A peer that vanished (a failover, a cut network) is noticed in about a minute, not hours.
    options.setdefault("keepalives", 1)
    options.setdefault("keepalives_idle", 30)
    options.setdefault("keepalives_interval", 10)
    options.setdefault("keepalives_count", 3)
    if statement_timeout:
        given = str(options.get("options", "")).strip()
        options["options"] = f"{given} -c statement_timeout={statement_timeout * 1000}".strip()
    result = database.copy()
    result["OPTIONS"] = options
    return result


@dataclass(frozen=True, slots=True)
class FallbackModel:
    """One entry of OPENAI_FALLBACK_MODELS. `base_url` None: the primary model's server and
    key. `api_key` is read from the variable the entry names, never written inline."""

    model: str
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)


def parse_fallback_models(raw: str, *, name: str) -> list[FallbackModel]:
    """The model fallback chain, in order: a JSON list of {"model", "base_url", "api_key_env"}
    (base URL and key variable optional), or the compact "model[@base_url],model[@base_url]".

    An entry without a base URL is asked where the primary model is, with its key; one with a
    base URL is another server, with the key in the variable `api_key_env` names (so no secret
    is written inline), or none."""
    text = raw.strip()
    if not text:
        return []
    if text.startswith("["):
        try:
            entries = json.loads(text)
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name} is not valid JSON: {exc}") from None
    else:
        entries = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            compact_model, _, compact_url = part.partition("@")
            entries.append(
                {"model": compact_model, **({"base_url": compact_url} if compact_url else {})}
            )
    chain: list[FallbackModel] = []
    for index, entry in enumerate(entries):
        where = f"{name}[{index}]"
        if not isinstance(entry, dict) or not set(entry) <= {"model", "base_url", "api_key_env"}:
            raise ImproperlyConfigured(
                f'{where} must be an object with "model" and optionally "base_url" and '
                '"api_key_env".'
            )
        model = entry.get("model")
        if not isinstance(model, str) or not model.strip():
            raise ImproperlyConfigured(f"{where} names no model.")
        base_url = entry.get("base_url")
        if base_url is not None and (
            not isinstance(base_url, str) or not base_url.startswith(("http://", "https://"))
        ):
            raise ImproperlyConfigured(
                f"{where}.base_url must be an http(s) URL, not {base_url!r}."
            )
        key_env = entry.get("api_key_env")
        api_key = None
        if key_env is not None:
            if not isinstance(key_env, str) or not key_env:
                raise ImproperlyConfigured(f"{where}.api_key_env must name a variable.")
            api_key = os.environ.get(key_env, "").strip()
            if not api_key:
                raise ImproperlyConfigured(
                    f"{where}.api_key_env names {key_env}, which is not set (or empty)."
                )
        chain.append(FallbackModel(model=model.strip(), base_url=base_url, api_key=api_key))
    return chain
