"""The ASGI app: routers, error handlers, health probes, one log line per request."""

from __future__ import annotations

import time
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request

from bus.tokens import TokenFile
from projections.api import (
    errors, routes_alerts, routes_config, routes_forecasts, routes_intakes, routes_kpis,
    routes_readings, routes_schedules, routes_simulations, routes_tasks,
)
from projections.api.config import ApiConfig
from projections.api.db import Database
from projections.api.errors import json_response
from projections.api.limits import TenantLimits
from projections.api.models import HealthOut, ReadyOut

log = structlog.get_logger("tagus.api")


def create_app(config: ApiConfig, *, tokens=None, config_store=None, tasks=None) -> FastAPI:
    """The ASGI app.  No I/O here: the pool opens (empty) when the app starts.

    ``tokens``: the token view (``authenticate(token, scope)``); default the token file
    at ``config.tokens_path``, re-read whenever it changes.  ``config_store``: the
    tenants' configuration (``/v1/config``); without it those routes answer 500 saying so.
    """
    from projections.api import __doc__ as description
    from projections.console import mount as mount_console  # it imports this package

    limits = TenantLimits(max_queries=config.tenant_max_queries,
                          max_exports=config.tenant_max_exports,
                          wait_s=config.acquire_timeout_s)
    db = Database(config, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await db.open()
        try:
            yield
        finally:
            await db.close()

    app = FastAPI(title="Tagus query API", version="1", description=description,
                  lifespan=lifespan)
    app.state.config = config
    app.state.limits = limits
    app.state.db = db
    app.state.tokens = tokens if tokens is not None else TokenFile(config.tokens_path)
    app.state.units = routes_readings.UnitCache()
    app.state.config_store = config_store
    app.state.tasks = tasks
    app.include_router(routes_readings.router)
    app.include_router(routes_intakes.router)
    app.include_router(routes_config.router)
    app.include_router(routes_tasks.router)
    app.include_router(routes_forecasts.router)
    app.include_router(routes_kpis.router)
    app.include_router(routes_alerts.router)
    app.include_router(routes_schedules.router)
    app.include_router(routes_simulations.router)
    mount_console(app)  # the operators' web pages at / (projections/console)
    errors.install(app, config.retry_after_s)
    _add_probes(app, db, limits, config)
    app.add_middleware(_RequestLog)
    return app


def _add_probes(app: FastAPI, db: Database, limits: TenantLimits, config: ApiConfig) -> None:
    @app.get("/healthz", response_model=HealthOut,
             summary="Liveness: the process answers (no auth, no QuestDB round trip)")
    async def healthz():
        return json_response({"status": "ok", "pool": db.pool_counts()})

    @app.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
             summary="Readiness: QuestDB answers and a pooled connection is free (no auth)")
    async def readyz(request: Request):
        questdb = await db.probe()
        pool = db.pool_counts()
        if not questdb["reachable"]:
            status, code = "unavailable", 503
            detail = f"QuestDB does not answer: {questdb['error']}"
        elif pool["in_use"] >= pool["size"]:
            status, code = "busy", 503
            detail = (f"QuestDB answers, but all {pool['size']} pooled connections are in "
                      f"use ({pool['waiting']} requests waiting)")
        else:
            status, code, detail = "ready", 200, "QuestDB answers and connections are free"
        headers = {"Retry-After": str(config.retry_after_s)} if code != 200 else None
        return json_response({"status": status, "detail": detail, "questdb": questdb,
                              "pool": pool, "tenants": limits.counts()}, code, headers)


class _RequestLog:
    """ASGI middleware: one log line per request (method, path, status, ms, tenant)."""

    def __init__(self, app) -> None:
        self.app = app

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
            log.info("request", method=scope["method"], path=scope["path"], status=status,
                     ms=round((time.perf_counter() - t0) * 1e3, 2),
                     tenant=scope.get("state", {}).get("tenant"))


def serve(config: ApiConfig, *, tokens=None) -> None:
    """Run the API under uvicorn at ``config.host:config.port`` until interrupted.
    Logging is the caller's to configure."""
    import uvicorn

    uvicorn.run(create_app(config, tokens=tokens), host=config.host, port=config.port,
                access_log=False, log_level=config.log_level.lower())
