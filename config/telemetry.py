"""OpenTelemetry set-up from the standard OTEL_* variables, once per process.

- `OTEL_SDK_DISABLED=true` turns it off; with no exporter configured (neither
  `OTEL_TRACES_EXPORTER` nor `OTEL_EXPORTER_OTLP_*ENDPOINT`) only the context propagates
  (Django's instrumentation; psycopg, redis and botocore are then left alone).
- `OTEL_TRACES_EXPORTER`: `otlp` (default when an endpoint is set), `console` or `none`;
  `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` (default) or `grpc`.
- `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_BSP_*` (batching) and
  `OTEL_PYTHON_DJANGO_EXCLUDED_URLS` are read by the SDK and the instrumentations themselves.

The provider is shut down at interpreter exit, so the spans of a worker's last jobs are
exported before the process ends (the batch processor would otherwise drop them).
"""

from __future__ import annotations

import atexit
import threading

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

from config.env import env_optional

_lock = threading.Lock()
_configured = False


def _exporter() -> SpanExporter | None:
    name = (env_optional("OTEL_TRACES_EXPORTER") or "").lower()
    has_endpoint = bool(
        env_optional("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env_optional("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )
    if not name:
        name = "otlp" if has_endpoint else "none"
    if name == "none":
        return None
    if name == "console":
        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console, none)")
    protocol = (env_optional("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    return HTTPSpanExporter()


def configure_telemetry(service_name: str, *, instrument_django: bool = False) -> None:
    """Install the tracer provider and instrument psycopg, redis, botocore (and Django)."""
    global _configured
    with _lock:
        if _configured or (env_optional("OTEL_SDK_DISABLED") or "").lower() == "true":
            return
        _configured = True
        exporter = _exporter()
        if exporter is not None:
            # OTEL_SERVICE_NAME, when set, names the service; the caller's name is the default.
            named = env_optional("OTEL_SERVICE_NAME")
            resource = Resource.create({} if named else {"service.name": service_name})
            provider = TracerProvider(resource=resource)
            provider.add_span_processor(BatchSpanProcessor(exporter))
            trace.set_tracer_provider(provider)
            atexit.register(provider.shutdown)

        if instrument_django:
            # Even with no exporter this carries an incoming trace context to the job (its
            # trace_id, the SQS message) and to the log lines.
            from opentelemetry.instrumentation.django import DjangoInstrumentor

            DjangoInstrumentor().instrument()
        if exporter is None:
            # Spans of the clients would go nowhere: instrumenting them would only cost CPU on
            # every query and call, and ~10 MB of memory in the worker.
            return

        from opentelemetry.instrumentation.botocore import BotocoreInstrumentor
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        PsycopgInstrumentor().instrument()
        RedisInstrumentor().instrument()
        BotocoreInstrumentor().instrument()
