"""The metrics of Tagus' runners and intake, through the OpenTelemetry metrics API.

Instruments are made on first use from the global meter provider: until a process
installs one (``ops.telemetry.configure_metrics``) every recording is a no-op, so the
runner, the task runner and the intake record unconditionally and tests without a
provider pay nothing.  Which exporter reads them (Prometheus ``/metrics``, OTLP) is the
process's choice, never this module's.

Attributes are bounded: the component (a consumer's durable name), the stream, the
door, an outcome or error kind, a task kind.  Never a tenant or an event id: a service
for a thousand utilities would otherwise export a thousand series per metric.

OpenTelemetry name -> Prometheus name (counters get ``_total``, unit ``s`` gets
``_seconds``; ``PROMETHEUS_NAMES`` lists them, the dashboards are checked against it).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from opentelemetry import metrics

METER_NAME = "tagus"

# seconds: from a 1-ms handle to a long task
DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                      5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

# (OpenTelemetry name, kind, unit, description)
INSTRUMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("tagus.runner.handled", "counter", "{message}",
     "messages a component handled and acknowledged (a projection counts each event of "
     "a written batch)"),
    ("tagus.runner.published", "counter", "{event}",
     "output events a processor published"),
    ("tagus.runner.failures", "counter", "{message}",
     "handler or write failures, each naked for a retry or dead-lettered on its last "
     "delivery (attribute error: the exception class)"),
    ("tagus.runner.dead_letters", "counter", "{message}",
     "messages parked in the DEADLETTER stream (attribute error_kind: malformed, invalid, "
     "unroutable, max_deliveries)"),
    ("tagus.runner.handle.duration", "histogram", "s",
     "time to handle one message (processor) or write one batch (projection), publishing "
     "included"),
    ("tagus.runner.batch.size", "histogram", "{message}",
     "messages per fetched batch"),
    ("tagus.consumer.lag", "gauge", "{message}",
     "messages of the component's durable consumer not yet acknowledged (pending + "
     "acknowledgement pending), from the consumer's info polled every few seconds"),
    ("tagus.consumer.redelivered", "gauge", "{message}",
     "messages of the consumer delivered more than once and not yet acknowledged"),
    ("tagus.task.duration", "histogram", "s",
     "a task's run time, from start to outcome (attributes kind, outcome)"),
    ("tagus.task.queued", "histogram", "s",
     "a task's queueing time: from its request to its start"),
    ("tagus.task.outcomes", "counter", "{task}",
     "tasks ended, by kind and outcome (completed, failed, cancelled, retried)"),
    ("tagus.intake.requests", "counter", "{request}",
     "push requests answered by the intake HTTP service, by door and outcome (accepted, "
     "refused) with the HTTP status"),
    ("tagus.intake.uploads", "counter", "{upload}",
     "uploads submitted to the intake store, by source and outcome (received, "
     "duplicate: seen before and not stored again)"),
    ("tagus.intake.bytes", "counter", "By", "bytes of the uploads received"),
    ("tagus.intake.values", "counter", "{value}",
     "the intake's accounting of parsed uploads (intake.parsed): values by outcome "
     "(accepted, rejected, missing)"),
    ("tagus.http.requests", "counter", "{request}",
     "HTTP requests answered by a service, by route and status class"),
    ("tagus.http.request.duration", "histogram", "s", "HTTP request duration by route"),
)


def prometheus_name(name: str, kind: str, unit: str) -> str:
    """The name the Prometheus exporter gives an instrument (without histogram suffixes)."""
    base = name.replace(".", "_")
    suffix = {"s": "_seconds", "By": "_bytes"}.get(unit, "")
    if not base.endswith(suffix):  # the exporter does not repeat a unit the name has
        base += suffix
    return base + "_total" if kind == "counter" else base


PROMETHEUS_NAMES: dict[str, str] = {
    prometheus_name(n, k, u): k for n, k, u, _ in INSTRUMENTS}


class _Instruments:
    def __init__(self, meter: metrics.Meter) -> None:
        self.meter = meter
        self.by_name = {}
        for name, kind, unit, description in INSTRUMENTS:
            if kind == "counter":
                inst = meter.create_counter(name, unit=unit, description=description)
            elif kind == "histogram":
                inst = meter.create_histogram(
                    name, unit=unit, description=description,
                    explicit_bucket_boundaries_advisory=(
                        list(DURATION_BUCKETS_S) if unit == "s"
                        else [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000]))
            else:
                continue  # observable gauges: registered with their callback (observe_gauges)
            self.by_name[name] = inst


@functools.cache
def _instruments() -> _Instruments:
    return _Instruments(metrics.get_meter(METER_NAME))


def add(name: str, value: int | float = 1, **attributes: str | int) -> None:
    """Add to the counter ``name`` (one of ``INSTRUMENTS``)."""
    _instruments().by_name[name].add(value, attributes)


def record(name: str, value: float, **attributes: str | int) -> None:
    """Record ``value`` in the histogram ``name``."""
    _instruments().by_name[name].record(value, attributes)


def observe_gauges(name: str,
                   read: Callable[[], Iterable[tuple[float, dict[str, str]]]]) -> None:
    """Register the observable gauge ``name``: ``read()`` -> (value, attributes) pairs,
    called at each collection (it must not block: return cached figures)."""
    spec = next((i for i in INSTRUMENTS if i[0] == name and i[1] == "gauge"), None)
    if spec is None:
        raise KeyError(f"{name!r} is not a gauge of bus.metrics.INSTRUMENTS")

    def callback(_options):
        return [metrics.Observation(v, a) for v, a in read()]

    _instruments().meter.create_observable_gauge(
        name, callbacks=[callback], unit=spec[2], description=spec[3])


def account_outputs(event) -> None:
    """The intake's accounting, counted where it is decided: an ``intake.parsed`` a
    processor published adds its values by outcome."""
    from contracts.intake import IntakeParsed

    if isinstance(event, IntakeParsed):
        src = event.source or "unknown"
        for outcome in ("accepted", "rejected", "missing"):
            n = getattr(event, f"values_{outcome}")
            if n:
                add("tagus.intake.values", n, source=src, outcome=outcome)
