"""One trace per question: the POST's trace id is stored on the job, travels in the SQS message's
attributes (W3C traceparent) and is continued by the worker, whose process span, OpenAI call span
and PostgreSQL/Redis spans reach a real OTLP receiver; the worker's log lines carry it too."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from config.logging import ContextFilter, JsonFormatter, bind_job_id
from questions.models import Question
from questions.sqs.client import get_sqs_client
from tests.fakes.otlp_receiver import OTLPReceiver
from tests.support import api_ask, wait_until

QUESTION = "Which river runs through the secret valley of Zog?"


@pytest.fixture
def otlp() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def incoming_trace() -> Iterator[SpanContext]:
    """The context an instrumented server would set from a request's traceparent header."""
    parent = SpanContext(
        trace_id=int(secrets.token_hex(16), 16),
        span_id=int(secrets.token_hex(8), 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("questions", "test")]),
    )
    token = otel_context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    yield parent
    otel_context.detach(token)


def _json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.mark.django_db(transaction=True)
def test_the_worker_continues_the_trace_of_the_post(
    api, queues, fake_llm, worker_process, otlp, incoming_trace
):
    fake_llm.configure(answer="The Zog.", prompt_tokens=12, completion_tokens=7)
    trace_id = format(incoming_trace.trace_id, "032x")
    parent_span_id = format(incoming_trace.span_id, "016x")

    response = api_ask(api, QUESTION)
    assert response.status_code == 202
    job_id = response.json()["id"]
    assert Question.objects.get(pk=job_id).trace_id == trace_id

    # The enqueue put the W3C context into the message's attributes.
    message = get_sqs_client().receive_message(
        QueueUrl=queues.url, MessageAttributeNames=["All"], VisibilityTimeout=0
    )["Messages"][0]
    traceparent = message["MessageAttributes"]["traceparent"]["StringValue"]
    assert traceparent == f"00-{trace_id}-{parent_span_id}-01"
    assert message["MessageAttributes"]["tracestate"]["StringValue"] == "questions=test"
    assert QUESTION not in message["Body"]

    worker = worker_process(
        "--burst",
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_SERVICE_NAME": "questions-worker",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            "LOG_LEVEL": "INFO",
        },
    )
    assert worker.wait(timeout=60) == 0, worker.output
    assert Question.objects.get(pk=job_id).status == "succeeded"

    # The provider is shut down at exit, so every span is in by now.
    spans = otlp.trace(trace_id)
    assert {span.service for span in spans} == {"questions-worker"}
    process = [s for s in spans if s.name == f"{queues.name} process"]
    assert len(process) == 1
    assert process[0].kind == "SPAN_KIND_CONSUMER"
    assert process[0].parent_span_id == parent_span_id
    assert process[0].attributes["questions.job_id"] == job_id

    chat = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(chat) == 1
    assert chat[0].kind == "SPAN_KIND_CLIENT"
    assert chat[0].attributes["gen_ai.system"] == "openai"
    assert chat[0].attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert chat[0].attributes["gen_ai.usage.input_tokens"] == 12
    assert chat[0].attributes["gen_ai.usage.output_tokens"] == 7

    systems = {s.attributes.get("db.system") or s.attributes.get("db.system.name") for s in spans}
    assert {"postgresql", "redis"} <= systems, sorted(s.name for s in spans)
    by_id = {s.span_id: s for s in spans}
    for span in spans:  # all of them hang under the process span, itself under the POST
        node = span
        while node.parent_span_id in by_id:
            node = by_id[node.parent_span_id]
        assert node is process[0], span.name

    # The worker's log lines about this job carry its trace id; the question text is not logged.
    lines = [line for line in _json_lines(worker.output) if line.get("job_id") == job_id]
    assert lines, worker.output
    assert {line["trace_id"] for line in lines} == {trace_id}
    assert any(line["message"] == "job succeeded" for line in lines)
    assert QUESTION not in worker.output
    assert "sk-test-not-a-real-key" not in worker.output


def test_a_log_line_carries_timestamp_level_logger_trace_span_and_job():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.telemetry.json")
    logger.addHandler(handler)
    logger.propagate = False
    tracer = TracerProvider().get_tracer(__name__)
    try:
        with tracer.start_as_current_span("work") as span, bind_job_id("job-42"):
            logger.warning("hello %s", "world", extra={"attempt": 2})
        logger.warning("outside")
    finally:
        logger.removeHandler(handler)
    inside, outside = (json.loads(line) for line in stream.getvalue().splitlines())
    context = span.get_span_context()
    assert inside["message"] == "hello world"
    assert inside["level"] == "WARNING"
    assert inside["logger"] == "tests.telemetry.json"
    assert inside["timestamp"].endswith("+00:00")
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert inside["job_id"] == "job-42"
    assert inside["attempt"] == 2
    assert "trace_id" not in outside
    assert "job_id" not in outside


def test_the_receiver_decodes_what_the_sdk_exports(otlp):
    """The OTLP receiver the tests rely on decodes real exports (not a stand-in for the app)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "probe"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp.endpoint}/v1/traces"))
    )
    with provider.get_tracer(__name__).start_as_current_span("probe", attributes={"n": 3}) as span:
        pass
    provider.shutdown()
    received = wait_until(lambda: otlp.spans, timeout=5, what="the exported span")
    assert received[0].service == "probe"
    assert received[0].name == "probe"
    assert received[0].attributes == {"n": 3}
    assert received[0].trace_id == format(span.get_span_context().trace_id, "032x")
