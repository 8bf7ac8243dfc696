"""The operators' console: web pages served by the query API at ``/`` (the JSON API stays
under ``/v1``), one tenant per session.

Pages (server-rendered with Jinja2; charts drawn by plotly.js from figures built here):
``/`` overview, ``/schedule`` (Gantt of pumps x periods over the price bands, tank
trajectories with their bounds, reasons on hover, approval, releases and their
differences), ``/forecasts``, ``/data`` (sensor explorer, export, uploads and their
accounting, a file dropped onto the page is ingested), ``/tasks``, ``/alerts``
(acknowledge), ``/config`` (documents, history, diffs; edits with admin scope),
``/whatif`` (pumps out of service, a demand multiplier: an ``optimise`` run against the
baseline), ``/simulations`` (runs of the twin: pumps, tank levels, warnings,
calibration).  ``/login`` once with a token, then a session (``session.py``); every form
carries a CSRF token.  ``/console/live`` is what pages poll to announce a new schedule
or alert.

Data comes through the same functions as the ``/v1`` routes (``projections.api.queries``,
``projections.schedules``, ``projections.alerts``) within ``app.state.db.session(tenant)``
with the session's tenant; writes go through the services the serving process injects
(``app.state.tasks``, ``app.state.config_store``, ``app.state.intake``).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from projections.console import (
    live, login, page_alerts, page_config, page_data, page_forecasts, page_overview,
    page_schedule, page_simulations, page_tasks, page_whatif,
)
from projections.console.session import Sessions
from projections.console.web import HERE

ROUTERS = (login.router, live.router, page_overview.router, page_schedule.router,
           page_forecasts.router, page_data.router, page_tasks.router, page_alerts.router,
           page_config.router, page_whatif.router, page_simulations.router)


def mount(app: FastAPI, *, sessions: Sessions | None = None,
          live_every_s: float = 10.0) -> None:
    """Add the console's pages and static files to the API's ``app``; pages poll
    ``/console/live`` every ``live_every_s`` (``app.state.console_live_every_s``)."""
    app.state.console_sessions = sessions or Sessions()
    app.state.console_live_every_s = live_every_s
    app.state.console_plotly_url = live.plotly_url()
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console-static")


__all__ = ["Sessions", "mount"]
