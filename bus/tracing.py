"""OpenTelemetry trace context in message headers (W3C ``traceparent``/``tracestate``).

Publishing injects the current span's context; the runner extracts it and starts the
processor's span as its child, so one reading's path through the processors is one trace.
Which exporter receives the spans is wired by the process (``ops.logs.configure_tracing``).
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

TRACER_NAME = "tagus"


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to ``headers`` (in place) and return them."""
    propagate.inject(headers)
    return headers


def extract(headers: dict[str, str] | None) -> otel_context.Context:
    return propagate.extract(headers or {})
