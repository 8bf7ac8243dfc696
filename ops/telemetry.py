"""Metrics export and the health/metrics listener of a Tagus process.

``configure_metrics`` installs the process's meter provider once: a Prometheus reader
(the ``/metrics`` text every service serves) and, when ``TAGUS_OTLP_ENDPOINT`` is set,
an OTLP/HTTP exporter every 15 s to the same collector (``.../v1/metrics``).  The
instruments themselves are ``bus.metrics``'.

- the query API (``tagus serve api``) and the intake (``tagus serve intake``) serve
  ``GET /metrics`` on their own port (``instrument_app``), with request counts and
  durations per route; the intake also gets ``/healthz`` and ``/readyz`` (NATS).
- ``tagus run`` with ``TAGUS_METRICS_PORT`` serves ``/healthz``, ``/readyz`` and
  ``/metrics`` (``serve_runner_health``) and polls its consumers' info every
  ``TAGUS_METRICS_POLL_S`` for the lag gauge (one request per consumer per poll).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from bus import metrics

log = structlog.get_logger("tagus.telemetry")

_configured: str | None = None
OTLP_EXPORT_INTERVAL_MS = 15_000


def configure_metrics(service: str, otlp_endpoint: str | None = None) -> bool:
    """Install the meter provider (first call wins; later calls return False)."""
    global _configured
    if _configured is not None:
        return False
    from opentelemetry import metrics as otel_metrics
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    readers = [PrometheusMetricReader()]
    if otlp_endpoint:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )
        except ImportError as e:
            raise SystemExit("TAGUS_OTLP_ENDPOINT is set but the OTLP exporter is not "
                             "installed: pip install 'tagus[otlp]'") from e
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        readers.append(PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=otlp_metrics_endpoint(otlp_endpoint)),
            export_interval_millis=OTLP_EXPORT_INTERVAL_MS))
    otel_metrics.set_meter_provider(MeterProvider(
        metric_readers=readers, resource=Resource.create({"service.name": service})))
    _configured = service
    return True


def otlp_metrics_endpoint(endpoint: str) -> str:
    """The collector's metrics URL from the traces endpoint setting: ``.../v1/traces`` ->
    ``.../v1/metrics``; a bare collector URL gets ``/v1/metrics``."""
    base = endpoint.rstrip("/")
    if base.endswith("/v1/traces"):
        base = base.removesuffix("/v1/traces")
    return base + "/v1/metrics"


def prometheus_text() -> tuple[bytes, str]:
    """The Prometheus exposition of this process's metrics and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


# ---------------------------------------------------------------- HTTP services


class HttpMetrics:
    """ASGI middleware: ``tagus.http.requests`` and ``tagus.http.request.duration`` per
    route template (``/v1/sensors/{sensor}/readings``, never the raw path) and status
    class; unmatched paths count as ``other``."""

    def __init__(self, app, service: str) -> None:
        self.app, self.service = app, service

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        t0, status = time.perf_counter(), 500

        async def _send(msg):
            nonlocal status
            if msg["type"] == "http.response.start":
                status = msg["status"]
            await send(msg)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "other"
            attrs = {"service": self.service, "route": path, "method": scope["method"]}
            metrics.add("tagus.http.requests", 1, status=f"{status // 100}xx", **attrs)
            metrics.record("tagus.http.request.duration", time.perf_counter() - t0, **attrs)


def instrument_app(app, service: str, *, ready: Callable[[], tuple[bool, str]] | None = None
                   ) -> None:
    """Add ``GET /metrics`` (and, with ``ready``, ``/healthz`` and ``/readyz``) and the
    request metrics to a FastAPI app.  ``ready()`` -> (ready, why)."""
    from fastapi import Response
    from fastapi.responses import JSONResponse

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        body, content_type = prometheus_text()
        return Response(body, media_type=content_type)

    if ready is not None:
        @app.get("/healthz", include_in_schema=False)
        async def healthz() -> JSONResponse:
            return JSONResponse({"status": "ok", "service": service})

        @app.get("/readyz", include_in_schema=False)
        async def readyz() -> JSONResponse:
            ok, why = ready()
            return JSONResponse({"status": "ready" if ok else "unavailable", "detail": why},
                                status_code=200 if ok else 503)

    app.add_middleware(HttpMetrics, service=service)


def nats_ready(nc) -> Callable[[], tuple[bool, str]]:
    def ready() -> tuple[bool, str]:
        if nc.is_connected:
            return True, "NATS connected"
        return False, ("NATS reconnecting" if nc.is_reconnecting else "NATS not connected")
    return ready


# ---------------------------------------------------------------- tagus run


class ConsumerWatch:
    """The runners' consumers, read every ``poll_s`` for the lag gauges (cached: the
    gauge callback never does I/O)."""

    def __init__(self, nc, consumers, poll_s: float) -> None:
        self.nc, self.consumers, self.poll_s = nc, list(consumers), poll_s
        self.lag: dict[str, tuple[float, dict]] = {}
        self.redelivered: dict[str, tuple[float, dict]] = {}
        self.errors: dict[str, str] = {}
        self.last_poll = 0.0

    def register(self) -> None:
        metrics.observe_gauges("tagus.consumer.lag", lambda: list(self.lag.values()))
        metrics.observe_gauges("tagus.consumer.redelivered",
                               lambda: list(self.redelivered.values()))

    async def poll_once(self) -> None:
        js = self.nc.jetstream()
        for spec in self.consumers:
            attrs = {"component": spec.durable, "stream": spec.stream}
            try:
                info = await js.consumer_info(spec.stream, spec.durable, timeout=2.0)
            except Exception as e:  # noqa: BLE001 - shown by /readyz, retried next poll
                self.errors[spec.durable] = f"{type(e).__name__}: {e}"
                continue
            self.errors.pop(spec.durable, None)
            self.lag[spec.durable] = ((info.num_pending or 0) + (info.num_ack_pending or 0),
                                      attrs)
            self.redelivered[spec.durable] = (info.num_redelivered or 0, attrs)
        self.last_poll = time.monotonic()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.poll_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.poll_s)


def runner_readiness(nc, tasks: dict[str, asyncio.Task], watch: ConsumerWatch
                     ) -> Callable[[], tuple[bool, str]]:
    """Ready: NATS connected, every runner running, every consumer read at the last poll."""
    def ready() -> tuple[bool, str]:
        if not nc.is_connected:
            return False, "NATS reconnecting" if nc.is_reconnecting else "NATS not connected"
        dead = [n for n, t in tasks.items() if t.done()]
        if dead:
            return False, f"runner(s) stopped: {dead}"
        if not watch.last_poll:
            return False, "consumers not read yet"
        if watch.errors:
            return False, "; ".join(f"{n}: {e}" for n, e in watch.errors.items())
        return True, f"{len(tasks)} runner(s) pulling: {sorted(tasks)}"
    return ready


class _Server:
    """uvicorn in this loop without its own signal handlers (the process's stop event
    rules); ``port`` is the bound port (useful with port 0)."""

    def __init__(self, app, host: str, port: int) -> None:
        import uvicorn

        class _NoSignals(uvicorn.Server):
            def capture_signals(self):  # noqa: D102 - the caller handles SIGTERM/SIGINT
                return contextlib.nullcontext()

        self.server = _NoSignals(uvicorn.Config(app, host=host, port=port, log_config=None,
                                                access_log=False, lifespan="off"))
        self.task: asyncio.Task | None = None

    async def start(self) -> int:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()  # raises why it could not start (port in use...)
                raise RuntimeError("the metrics listener stopped before it started")
            await asyncio.sleep(0.02)
        return self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task


@contextlib.asynccontextmanager
async def runner_health(settings, nc, consumers, tasks: dict[str, asyncio.Task],
                        service: str):
    """While the body runs: the lag poll and, with ``TAGUS_METRICS_PORT``, the listener
    serving ``/healthz``, ``/readyz`` and ``/metrics``.  Nothing at all when neither the
    port nor ``TAGUS_OTLP_ENDPOINT`` is set.  Yields the bound port (or None)."""
    if settings.metrics_port is None and not settings.otlp_endpoint:
        yield None
        return
    configure_metrics(service, settings.otlp_endpoint)
    watch = ConsumerWatch(nc, consumers, settings.metrics_poll_s)
    watch.register()
    stop = asyncio.Event()
    poller = asyncio.create_task(watch.run(stop))
    server = None
    try:
        port = None
        if settings.metrics_port is not None:
            from fastapi import FastAPI

            app = FastAPI(title=f"{service} health and metrics", openapi_url=None)
            instrument_app(app, service, ready=runner_readiness(nc, tasks, watch))
            server = _Server(app, settings.metrics_host, settings.metrics_port)
            port = await server.start()
            log.info("metrics listening", service=service,
                     url=f"http://{settings.metrics_host}:{port}/metrics")
        yield port
    finally:
        stop.set()
        if server is not None:
            await server.stop()
        await poller
