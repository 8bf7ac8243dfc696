"""Bootstrap: the one place that turns settings into components, topology and connections."""

from __future__ import annotations

import asyncio
import contextlib

from bus.connect import connect
from bus.components import Component, Processor, TaskWorker
from bus.subjects import stream_name, subject
from bus.storage import default_buckets
from bus.topology import ConsumerSpec, Topology, consumer_for, family_streams
from contracts.tasks import kind_token
from ops import loaders
from ops.settings import Settings
from processors.normalise import handler as normalise, reported
from projections import (
    config_view, forecasts, intake_log, kpis, readings, schedules, simulations, tasks,
    weather,
)
from projections.questdb import QuestDB


def components(settings: Settings) -> dict[str, Component]:
    """Every processor, projection and task worker this deployment runs, by consumer name."""
    from processors.chain import handler as chain
    from processors.deviation import handler as deviation
    from processors.forecast import tasks as forecast
    from processors.kpi import handler as kpi
    from processors.optimise import task as twin
    from processors.simulate import task as simulate
    from processors.alerts import handler as alerts
    from projections import alerts as alert_views
    from ops import notifier

    db = questdb(settings)
    load = loaders.loaders(settings)
    comps: list[Component] = [
        Processor.from_module(normalise, loaders=load,
                              concurrency=settings.processor_concurrency),
        Processor.from_module(reported, concurrency=settings.processor_concurrency),
        Processor.from_module(deviation, loaders=load),
        readings.projection(db),
        weather.projection(db),
        *intake_log.projections(db),
        config_view.projection(),
        tasks.projection(db),
        *forecasts.projections(db),
        kpis.projection(db),
        *(Processor(name=name, accepts=accepts, handle=chain.handle, needs=chain.NEEDS,
                    loaders={"config": load["config"]})
          for name, accepts in chain.CHAINS.items()),
        TaskWorker(name="worker-kpi", handlers=kpi.HANDLERS, needs=kpi.NEEDS,
                   loaders={n: load[n] for n in kpi.NEEDS}, time_limit_s=600,
                   preload=("processors.kpi.handler",)),
        TaskWorker(name="worker-forecast", handlers=forecast.HANDLERS, needs=forecast.NEEDS,
                   loaders={n: load[n] for n in forecast.NEEDS}, time_limit_s=1800,
                   preload=("processors.forecast.tasks",)),
        TaskWorker(name="worker-twin", handlers={"optimise": twin.handle_optimise,
                                                 **simulate.HANDLERS},
                   needs=simulate.NEEDS, loaders={n: load[n] for n in simulate.NEEDS},
                   time_limit_s=900,
                   preload=("processors.optimise.task", "processors.simulate.task")),
        # releases never wait behind an optimisation
        TaskWorker(name="worker-release", handlers={"schedule.release": twin.handle_release},
                   needs=twin.NEEDS, loaders={n: load[n] for n in twin.NEEDS},
                   time_limit_s=120, preload=("processors.optimise.task",)),
        schedules.projection(db),
        simulations.projection(db),
        *alerts.components(alert_views.loaders(db, lambda: pg_connection(settings),
                                               load["config"], alerts.PLANS)),
        alert_views.projection(db),
        notifier.component(settings),
    ]
    return {c.name: c for c in comps}


def backoff_s(settings: Settings) -> tuple[float, ...]:
    """Redelivery schedule: ack_wait, doubling, capped at 10 min; max_deliver - 1 steps."""
    return tuple(min(settings.consumer_ack_wait_s * 2**i, 600.0)
                 for i in range(settings.consumer_max_deliver - 1))


def topology(settings: Settings) -> Topology:
    consumer_opts = dict(
        ack_wait_s=settings.consumer_ack_wait_s,
        max_deliver=settings.consumer_max_deliver,
        backoff_s=backoff_s(settings),
    )
    consumers = []
    for c in components(settings).values():
        if isinstance(c, TaskWorker):
            # requests of its kinds only; deliveries unlimited: a request it defers (fair
            # share) comes back, and the task runner counts attempts itself
            consumers.append(ConsumerSpec(
                stream=stream_name("task"), durable=c.name,
                filter_subjects=tuple(sorted(subject("task", "*", kind_token(k))
                                             for k in c.kinds)),
                ack_wait_s=settings.consumer_ack_wait_s, max_deliver=-1,
                backoff_s=(), description=f"task worker for {', '.join(c.kinds)}"))
        else:
            consumers.append(consumer_for(c.name, c.accepts, **consumer_opts))
    return Topology(
        streams=family_streams(replicas=settings.stream_replicas),
        consumers=tuple(consumers),
        buckets=default_buckets(settings.stream_replicas),
    )


async def nats_connection(settings: Settings, name: str, *,
                          first_connect_timeout_s: float | None = None):
    """A connection for a long-running component: reconnects forever, waits at start.
    Authenticates as ``settings.nats_auth()`` says (the embedded stack's service user
    unless ``TAGUS_NATS_USER``/``_CREDS`` name another)."""
    user, password = settings.nats_auth()
    return await connect(
        settings.nats_servers, name=name, user=user, password=password,
        creds=str(settings.nats_creds) if settings.nats_creds else None,
        first_connect_timeout_s=first_connect_timeout_s,
    )


@contextlib.asynccontextmanager
async def nats(settings: Settings, name: str):
    """A connection for a command an operator waits on: fails within
    ``settings.cli_timeout_s`` with one line when NATS is unreachable; drained on exit."""
    nc = await nats_connection(settings, name, first_connect_timeout_s=settings.cli_timeout_s)
    try:
        yield nc
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(nc.drain(), settings.cli_timeout_s)


def questdb(settings: Settings) -> QuestDB:
    auth = (settings.questdb_user, settings.questdb_password) if settings.questdb_external else None
    return QuestDB(settings.questdb_http_url, auth)


async def pg_connection(settings: Settings):
    """A PG-wire connection to QuestDB for queries with bound parameters (asyncpg)."""
    import asyncpg

    return await asyncpg.connect(
        host=settings.questdb_host, port=settings.questdb_pg_port,
        user=settings.questdb_user, password=settings.questdb_password, database="qdb")


def sensor_lister(settings: Settings):
    """``async (tenant) -> set of sensor ids`` the tenant has readings for (QuestDB);
    an unreachable QuestDB lists none (configuration checks then rely on mappings)."""

    async def sensors(tenant: str) -> set[str]:
        try:
            conn = await pg_connection(settings)
        except (OSError, Exception):  # noqa: BLE001 - QuestDB down: nothing known from it
            return set()
        try:
            rows = await conn.fetch("SELECT DISTINCT sensor FROM readings WHERE tenant = $1",
                                    tenant)
            return {r["sensor"] for r in rows}
        except Exception:  # noqa: BLE001 - no readings table yet
            return set()
        finally:
            await conn.close()

    return sensors


async def token_view(settings: Settings, nc):
    """Who tokens are, for a serving process: the tenants' configuration (``TokenView``,
    followed live), or a token file when ``TAGUS_TOKENS_FILE`` names one (single-host
    development setups and tests)."""
    from bus.tokens import TokenFile, TokenView

    if settings.tokens_file is not None:
        return TokenFile(settings.tokens_file)
    view = TokenView()
    await view.start(nc.jetstream())
    return view
