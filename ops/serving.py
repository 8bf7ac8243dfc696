"""The query API's configuration from the deployment settings, and its server.

``projections.api`` takes an ``ApiConfig``, never ``Settings`` (projections do not
import ``ops``); this is the one place that translates.  Optional ``Settings`` fields
``api_pool_size``, ``api_acquire_timeout_s``, ``api_query_timeout_s``,
``api_tenant_max_queries``, ``api_tenant_max_exports`` (``TAGUS_API_*``) are used when
the settings define them; otherwise ``ApiConfig``'s defaults hold.
"""

from __future__ import annotations

from projections.api import ApiConfig
from ops.settings import Settings

_OPTIONAL = ("pool_size", "acquire_timeout_s", "query_timeout_s", "readiness_timeout_s",
             "tenant_max_queries", "tenant_max_exports", "export_memory_bytes",
             "export_stall_timeout_s")


def api_config(settings: Settings, **overrides) -> ApiConfig:
    """The API's config from ``settings``; ``overrides`` (ApiConfig field names) win."""
    fields = dict(
        tokens_path=settings.tokens_path, host=settings.api_host, port=settings.api_port,
        log_level=settings.log_level, pg_host=settings.questdb_host,
        pg_port=settings.questdb_pg_port, pg_user=settings.questdb_user,
        pg_password=settings.questdb_password)
    for name in _OPTIONAL:
        value = getattr(settings, f"api_{name}", None)
        if value is not None:
            fields[name] = value
    return ApiConfig(**(fields | overrides))


def serve_api(settings: Settings, **overrides) -> None:
    """``tagus serve api``: run the query API until interrupted."""
    import asyncio

    from ops.logs import configure_logging

    configure_logging(settings.log_level)
    asyncio.run(_serve_api(settings, api_config(settings, **overrides)))


async def _serve_api(settings: Settings, config: ApiConfig) -> None:
    """One loop for uvicorn and the NATS connection: the token view follows the tenants'
    configuration, ``/v1/config`` reads and writes it."""
    import uvicorn

    from ops import telemetry, wiring
    from ops.config_service import ConfigStore
    from ops.task_service import TaskDesk
    from projections.api import create_app

    nc = await wiring.nats_connection(settings, "tagus-api")
    tokens = None
    try:
        tokens = await wiring.token_view(settings, nc)
        store = ConfigStore(nc.jetstream(), known_sensors=wiring.sensor_lister(settings))
        app = create_app(config, tokens=tokens, config_store=store,
                         tasks=TaskDesk(nc.jetstream()))
        telemetry.configure_metrics("tagus-api", settings.otlp_endpoint)
        telemetry.instrument_app(app, "api")  # GET /metrics; /healthz, /readyz are its own
        server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port,
                                               access_log=False,
                                               log_level=config.log_level.lower()))
        await server.serve()
    finally:
        if hasattr(tokens, "close"):
            await tokens.close()
        await nc.drain()
