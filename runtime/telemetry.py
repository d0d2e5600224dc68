"""OpenTelemetry: one trace from the HTTP request through Postgres and NATS to the consumer.

The trace context of the span that appends an event is stored with the event, so the relay,
which publishes later and in another task, sends the *original* context in the NATS headers.
"""

from collections.abc import Mapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)

tracer = trace.get_tracer("antechamber")


def configure_tracing(service: str, exporter: str) -> None:
    """Install a tracer provider for this process (``none`` still creates trace ids)."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"antechamber-{service}"}))
    span_exporter: SpanExporter | None = None
    if exporter == "console":
        span_exporter = ConsoleSpanExporter()
    elif exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter,
            )
        except ImportError as exc:  # pragma: no cover - depends on what the operator installed
            raise RuntimeError(
                "ANTECHAMBER_OTEL_EXPORTER=otlp needs: pip install opentelemetry-exporter-otlp"
            ) from exc
        span_exporter = OTLPSpanExporter()
    if span_exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)


def current_trace_context() -> dict[str, str]:
    """The W3C headers (``traceparent``, ``tracestate``) of the current span."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(carrier or {}))
