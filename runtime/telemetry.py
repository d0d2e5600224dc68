"""OpenTelemetry: one trace from the HTTP request through Postgres and NATS to the consumer.

The trace context of the span that appends an event is stored with the event, so the relay,
which publishes later and in another task, sends the *original* context in the NATS headers.

Tracing costs nothing when it is off (``ANTECHAMBER_OTEL_EXPORTER=none``): no tracer provider
is installed, and the hot paths ask :func:`recording` before they build a span, its context or
its attributes. The relay then forwards each event's stored context as it is.
"""

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind

tracer = trace.get_tracer("antechamber")


def configure_tracing(service: str, exporter: str) -> None:
    """Install a tracer provider for this process, unless spans would go nowhere (``none``)."""
    span_exporter: SpanExporter
    if exporter == "none":
        return
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
    else:
        raise ValueError(f"unknown span exporter {exporter!r}")
    provider = TracerProvider(resource=Resource.create({"service.name": f"antechamber-{service}"}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    trace.set_tracer_provider(provider)


def recording() -> bool:
    """Whether spans are kept: a real tracer provider is installed (by us or by a test)."""
    return isinstance(trace.get_tracer_provider(), TracerProvider)


def current_trace_context() -> dict[str, str]:
    """The W3C headers (``traceparent``, ``tracestate``) of the current span."""
    if not recording():
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str] | None) -> otel_context.Context:
    return propagate.extract(dict(carrier or {}))


def span(name: str, **attributes: str) -> AbstractContextManager[Span | None]:
    """A span in the current trace, or nothing at all when tracing is off."""
    if not recording():
        return nullcontext()
    return tracer.start_as_current_span(name, attributes=attributes)


def consumer_span(
    event_type: str, consumer: str, headers: Mapping[str, str] | None
) -> AbstractContextManager[Span | None]:
    """The span of one consumed event, in its producer's trace; nothing when tracing is off."""
    if not recording():
        return nullcontext()
    return tracer.start_as_current_span(
        f"consume {event_type}",
        context=context_from(headers),
        kind=SpanKind.CONSUMER,
        attributes={"messaging.consumer.group.name": consumer},
    )


def producer_span(
    event_type: str, carrier: Mapping[str, str]
) -> AbstractContextManager[Span | None]:
    """The span of one published event, in the trace it was appended in; or nothing."""
    if not recording():
        return nullcontext()
    return tracer.start_as_current_span(
        f"publish {event_type}", context=context_from(carrier), kind=SpanKind.PRODUCER
    )


def server_span(
    name: str, raw_headers: list[tuple[bytes, bytes]]
) -> AbstractContextManager[Span | None]:
    """The span of one HTTP request, continuing the caller's trace; or nothing."""
    if not recording():
        return nullcontext()
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
    return tracer.start_as_current_span(name, context=context_from(headers), kind=SpanKind.SERVER)
