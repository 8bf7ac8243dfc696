"""A console to look at: the API (with its web console) served by uvicorn on a free port,
every Tagus component running, and an L-Town tenant whose data sits around *now*.

The L-Town SCADA files are of January 2019; a schedule can only be approved while its
horizon has not ended, so the harness re-dates eight hours of them: 2019-01-15 00:00 UTC
becomes ``start`` = four hours before the current hour, and the rows from an hour before
that to the end of a six-hour horizon are written as new CSV files (same columns, same
mapping) and ingested through the intake.  The flows therefore reach up to two hours
ahead of now (the intake accepts a week ahead): ``optimise`` plans ``start`` .. +6 h on
the demand measured then and proposes a schedule EPANET verifies, which an operator can
approve while its last two hours lie ahead.

What the tasks here do not make is published as events of their kind, through the same
projections: a demand forecast for the zone (around the measured inflow) and today's
cost KPIs.  A threshold rule on T1 raises a real alert from the readings.  A second
tenant with a sensor of its own (``zz_other_level``) is there to never show up.

Everything runs on one asyncio loop in a background thread (NATS connections, the
components, uvicorn), so a synchronous Selenium driver can use the browser meanwhile.
Used by the browser tests (``tests/browser/``) and ``tagus screenshots`` (which can also
just serve it: ``tagus screenshots --serve``).
"""

from __future__ import annotations

import asyncio
import csv
import io
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
MAPPINGS = REPO / "tests" / "mappings"
ORIGIN_2019 = datetime(2019, 1, 15, tzinfo=UTC)
HORIZON_H = 6
OTHER_SENSOR = "zz_other_level"
OTHER_NAME = "Other Utility"
OTHER_MAPPING = """\
description: the other tenant's level sensor
format: csv
delimiter: ";"
decimal: ","
header_row: 0
layout: wide
timestamp: {column: Timestamp, format: "%Y-%m-%d %H:%M:%S", timezone: UTC}
unknown_columns: reject
sensors:
  T1: {id: zz_other_level, unit: m, range: [0, 10]}
"""


ALERT_RULE = {"name": "t1-high", "kind": "threshold", "sensors": ["T1"], "above": 1.0,
              "severity": "warning", "notify": False, "max_age_s": 1e9}
OVERFLOW_RULE = {"name": "t1-overflow", "kind": "threshold", "sensors": ["T1"],
                 "above": "3.95 m", "severity": "critical", "notify": False}


@dataclass
class Seeded:
    tenant: str
    other: str
    start: datetime
    tokens: dict[str, str] = field(default_factory=dict)
    schedule_id: str = ""
    intakes: list[str] = field(default_factory=list)
    optimise_s: float = 0.0
    seed_s: float = 0.0


def redated_csv(source: Path, start: datetime, first: datetime, last: datetime,
                keep=None) -> bytes:
    """Rows of ``source`` (BattLeDIM, ``;`` and decimal commas) in [first, last) of 2019,
    re-dated so 2019-01-15 00:00 becomes ``start``; ``keep(column)`` picks columns."""
    shift = start - ORIGIN_2019
    out = io.StringIO()
    with open(source, newline="") as f:
        rows = csv.reader(f, delimiter=";")
        header = next(rows)
        cols = [i for i, c in enumerate(header) if i == 0 or keep is None or keep(c)]
        w = csv.writer(out, delimiter=";", lineterminator="\n")
        w.writerow([header[i] for i in cols])
        for row in rows:
            t = datetime.strptime(row[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            if first <= t < last:
                w.writerow([(t + shift).strftime("%Y-%m-%d %H:%M:%S")]
                           + [row[i] for i in cols[1:]])
    return out.getvalue().encode()


def _hourly_inflow(flows_csv: bytes) -> dict[datetime, float]:
    """Hour -> mean of p227 + p235 in m3/s (the files are in m3/h)."""
    sums: dict[datetime, list[float]] = {}
    rows = list(csv.reader(io.StringIO(flows_csv.decode()), delimiter=";"))
    head = rows[0]
    a, b = head.index("p227"), head.index("p235")
    for r in rows[1:]:
        t = datetime.strptime(r[0], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        hour = t.replace(minute=0, second=0)
        v = (float(r[a].replace(",", ".")) + float(r[b].replace(",", "."))) / 3600.0
        sums.setdefault(hour, []).append(v)
    return {h: sum(v) / len(v) for h, v in sorted(sums.items())}


async def seed(settings, nc, shared_data: Path, workdir: Path) -> Seeded:
    """Tenants, configuration, data, a verified schedule, a forecast, KPIs, an alert."""
    import time

    from bus.publish import publish
    from contracts.base import new_id, utc_now
    from contracts.forecasts import ForecastIssued
    from contracts.kpis import Kpi, KpiComputed
    from contracts.tasks import TaskCompleted
    from ops import wiring
    from ops.config_service import ConfigStore
    from ops.dev.demo import LTOWN_ASSETS, LTOWN_RULES, LTOWN_TARIFF
    from ops.ingest import ingest
    from ops.task_service import request_task, wait

    t0 = time.monotonic()
    js = nc.jetstream()
    now = utc_now()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
    tenant, other = f"ltown-{uuid.uuid4().hex[:6]}", f"other-{uuid.uuid4().hex[:6]}"
    s = Seeded(tenant=tenant, other=other, start=start)
    store = ConfigStore(js)
    await store.create_tenant(tenant, display_name="L-Town", timezone="UTC", country="CY",
                              author="harness")
    await store.create_tenant(other, display_name=OTHER_NAME, timezone="UTC",
                              author="harness")
    for kind, body in (("network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes()),
                       ("tariff", LTOWN_TARIFF), ("rules", LTOWN_RULES),
                       ("alerts", {"rules": [ALERT_RULE]})):
        await store.put(tenant, kind, body, author="harness", reason="harness")
    for name, scopes in (("ada-admin", ["admin"]), ("olga", ["operate", "write"]),
                         ("viewer", ["read"])):
        s.tokens[name] = (await store.issue_token(tenant, name, scopes, author="harness"))[0]
    s.tokens["other"] = (await store.issue_token(other, "bo", ["admin"], author="harness"))[0]

    # eight hours of 2019-01-15 (from 22:00 the day before), re-dated around now
    first, last = ORIGIN_2019 - timedelta(hours=2), ORIGIN_2019 + timedelta(hours=HORIZON_H)
    bd = shared_data / "battledim"
    now_2019 = ORIGIN_2019 + (now - start)
    levels = redated_csv(bd / "2019-01_SCADA_Levels.csv", start, first, now_2019)
    flows = redated_csv(bd / "2019-01_SCADA_Flows.csv", start, first, last)
    stamp = start.strftime("%Y%m%dT%H")
    files = [(workdir / f"levels_{stamp}.csv", levels, MAPPINGS / "battledim_levels.yaml",
              tenant),
             (workdir / f"flows_{stamp}.csv", flows, MAPPINGS / "battledim_flows.yaml", tenant)]
    other_map = workdir / "other_level.yaml"
    other_map.write_text(OTHER_MAPPING)
    files.append((workdir / f"other_{stamp}.csv", levels, other_map, other))
    for path, body, mapping, who in files:
        path.write_bytes(body)
        result = await ingest(settings, path, who, mapping, process="no", progress=False,
                              timeout_s=120)
        if type(result.outcome).__name__ != "IntakeParsed":
            raise RuntimeError(f"seeding {path.name}: expected it parsed, got {result.outcome}")
        if who == tenant:
            s.intakes.append(result.intake.event_id)
    await store.put(tenant, "assets", LTOWN_ASSETS, author="harness", reason="harness")

    # the schedule: planned on the demand measured over the horizon, verified in EPANET
    t1 = time.monotonic()
    task = await request_task(js, tenant, "optimise",
                              {"start": start.isoformat(), "horizon_h": HORIZON_H,
                               "demand": "actual", "time_limit_s": 20},
                              requested_by="olga")
    done = await wait(js, tenant, task.event_id, timeout_s=240)
    if not isinstance(done, TaskCompleted):
        raise RuntimeError(f"seeding: the optimise task did not complete: {done}")
    s.optimise_s = time.monotonic() - t1
    proposed = [o for o in done.outputs if o]
    s.schedule_id = proposed[0] if proposed else ""

    # a forecast of the zone around what was measured, issued before the horizon
    hourly = _hourly_inflow(flows)
    hours = [h for h in hourly if h >= start - timedelta(hours=1)]
    p50 = [hourly[h] * 1.04 for h in hours]
    issued = start - timedelta(hours=2)
    q = {"p10": [v * 0.88 for v in p50], "p25": [v * 0.94 for v in p50], "p50": p50,
         "p75": [v * 1.06 for v in p50], "p90": [v * 1.12 for v in p50]}
    await publish(js, ForecastIssued(
        event_id=new_id(), tenant=tenant, occurred_at=issued, recorded_at=issued,
        task_id=new_id(), series="zone:town", unit="m3/s", issued_at=issued,
        valid_from=hours[0], quantiles=q, method="ensemble (harness)"))
    day = now.date().isoformat()
    await publish(js, KpiComputed(
        event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now, day=day,
        task_id=new_id(), kpis=[
            Kpi(name="cost", subject="network", value=41.25, unit="EUR"),
            Kpi(name="counterfactual_cost", subject="network", value=47.5, unit="EUR"),
            Kpi(name="saving", subject="network", value=6.25, unit="EUR"),
            Kpi(name="forecast_skill", subject="zone:town", value=0.21, unit="1")]))
    db = wiring.questdb(settings)
    for table in ("readings", "intake_log", "schedules", "forecasts", "kpis", "alerts",
                  "tasks"):
        await asyncio.to_thread(db.wait_for_wal, table, 60.0)
    s.seed_s = time.monotonic() - t0
    return s


async def raise_overflow_alert(nc, s: Seeded, level_m: float = 4.2) -> None:
    """A rule above anything in the files (T1 over 3.95 m), then T1 reported at
    ``level_m`` now, as a tenant's own NATS user would publish it: the alerts processor
    raises a new alert."""
    from bus.publish import publish
    from contracts.base import new_id, utc_now
    from contracts.readings import ReadingsReported, Series
    from ops.config_service import ConfigStore

    js = nc.jetstream()
    await ConfigStore(js).put(s.tenant, "alerts", {"rules": [ALERT_RULE, OVERFLOW_RULE]},
                              author="harness", reason="a rule for the live test")
    now = utc_now()
    await publish(js, ReadingsReported(
        event_id=new_id(), tenant=s.tenant, occurred_at=now, recorded_at=now,
        source="harness", series=[Series(sensor_id="T1", unit="m",
                                         timestamps_ns=[int(now.timestamp() * 1e9)],
                                         values=[level_m])]))


async def request_proposal(nc, s: Seeded, hours: int = 4) -> str:
    """An ``optimise`` task over ``hours`` from two hours after the start (a new
    proposal that overlaps the seeded one and ends with it, ahead of now, so it can be
    released after it; from three hours, the optimiser falls back, unverified, on this
    day); returns the task id."""
    from ops.task_service import request_task

    task = await request_task(nc.jetstream(), s.tenant, "optimise",
                              {"start": (s.start + timedelta(hours=2)).isoformat(),
                               "horizon_h": hours, "demand": "actual", "time_limit_s": 20},
                              requested_by="harness")
    return task.event_id


class ConsoleServer:
    """The API and console on a free port, components running, in a thread of its own."""

    def __init__(self, settings, shared_data: Path, workdir: Path, *,
                 reset: Callable[[object], Awaitable[None]] | None = None,
                 live_every_s: float = 10.0) -> None:
        self.settings, self.shared_data, self.workdir = settings, shared_data, workdir
        self.reset = reset  # reset(nc) first (tests: empty JetStream, no other test's backlog)
        self.live_every_s = live_every_s  # how often pages poll /console/live
        self.nc = None
        self.seeded: Seeded | None = None
        self.url = ""
        self.app = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="console-server", daemon=True)

    def start(self, timeout_s: float = 420.0) -> ConsoleServer:
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise TimeoutError(f"the console was not up within {timeout_s:g} s")
        if self._error is not None:
            raise RuntimeError("the console harness failed") from self._error
        return self

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(120)

    def call(self, coro, timeout_s: float = 120.0):
        """Run ``coro`` on the server's loop (where its NATS connection lives)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def api(self, path: str, token: str, **params) -> httpx.Response:
        return httpx.get(self.url + path, params=params, timeout=30,
                         headers={"Authorization": f"Bearer {token}"})

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - handed to start()
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        import uvicorn

        from bus.tokens import TokenView
        from bus.topology import ensure_topology
        from ops import wiring
        from ops.config_service import ConfigStore
        from ops.dev.stack import free_port
        from ops.service import components_running
        from ops.serving import api_config
        from ops.task_service import TaskDesk
        from producers.intake import Intake
        from projections.api import create_app

        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        nc = await wiring.nats_connection(self.settings, "tagus-console-harness")
        view = TokenView()
        try:
            js = nc.jetstream()
            topo = wiring.topology(self.settings)
            if self.reset is not None:
                await self.reset(nc)
            await ensure_topology(js, topo)
            self.nc = nc
            async with components_running(nc, self.settings, topo, timeout_s=120):
                self.seeded = await seed(self.settings, nc, self.shared_data, self.workdir)
                await view.start(js)
                port = free_port()
                store = ConfigStore(js, known_sensors=wiring.sensor_lister(self.settings))
                self.app = app = create_app(api_config(self.settings, port=port), tokens=view,
                                            config_store=store, tasks=TaskDesk(js))
                app.state.intake = Intake(js, nc=nc)
                app.state.console_live_every_s = self.live_every_s
                server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                       log_level="warning",
                                                       access_log=False))
                serving = asyncio.create_task(server.serve())
                while not server.started:
                    if serving.done():
                        await serving  # raises why
                    await asyncio.sleep(0.05)
                self.url = f"http://127.0.0.1:{port}"
                self._ready.set()
                await self._stop.wait()
                server.should_exit = True
                await serving
        finally:
            await view.close()
            await nc.drain()
