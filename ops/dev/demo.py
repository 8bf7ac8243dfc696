"""`tagus demo`: Tagus once, on the local stack, with real utilities' files.

1. starts the stack and ensures the topology;
2. creates two tenants (L-Town, the BWDF utility) as configuration events;
3. ingests four real files through the whole pipeline (raw intake -> normalise ->
   QuestDB): L-Town SCADA flows and tank level (BattLeDIM, ';' and decimal comma) and the
   BWDF DMA inflows and weather (Excel, Europe/Rome time with DST);
4. configures L-Town for real: its EPANET network, sensor bindings, a two-rate tariff and
   tank rules; changes the tariff and shows the history and the diff;
5. runs tasks through the task workers: the data completeness KPI of L-Town, demand
   models trained and a week's forecast issued for two BWDF districts, and L-Town's pump
   schedule for 15 January 2019 optimised on the demand it measured (a what-if on
   history), verified in EPANET against the network's own controls; the same day in the
   twin under its own controls, with the twin checked against the day before's readings;
6. prints what QuestDB holds, asks the operators' API (a token, read scope) for a
   downsampled range and a forecast joined with actuals;
7. draws pictures: L-Town's schedule (price, pump, tank level within bounds), a week of
   L-Town, the BWDF autumn DST night, a forecast vs actual.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from bus.tokens import TokenStore
from ops import wiring
from ops.dev import plots, stack
from ops.dev.stack import free_port
from ops.ingest import format_report, ingest
from ops.settings import Settings
from projections import readings, schedules, simulations

UPLOADS = [  # (tenant, file under shared data, mapping under tests/mappings)
    ("ltown", "battledim/2019-01_SCADA_Flows.csv", "battledim_flows.yaml"),
    ("ltown", "battledim/2019-01_SCADA_Levels.csv", "battledim_levels.yaml"),
    ("bwdf", "bwdf/InflowData_1.xlsx", "bwdf_inflow.yaml"),
    ("bwdf", "bwdf/WeatherData_1.xlsx", "bwdf_weather.yaml"),
]
MAPPINGS = Path(__file__).resolve().parents[2] / "tests" / "mappings"
TENANTS = {  # the BattLeDIM files are written in UTC (no DST): L-Town's clock is UTC
    "ltown": dict(display_name="L-Town (BattLeDIM 2020)", timezone="UTC", country="CY"),
    "bwdf": dict(display_name="BWDF utility, north-east Italy", timezone="Europe/Rome",
                 country="IT"),
}
LTOWN_ASSETS = {"bindings": [
    {"sensor": "T1", "role": "tank_level", "element": "T1", "offset_m": 0.0},
    {"sensor": "PUMP_1", "role": "pump_flow", "element": "PUMP_1"},
    {"sensor": "p227", "role": "zone_inflow", "element": "town"},
    {"sensor": "p235", "role": "zone_inflow", "element": "town"}]}
LTOWN_TARIFF = {"currency": "EUR", "periods": [
    {"name": "night", "price": "0.10 EUR/kWh", "start": "00:00", "end": "08:00"},
    {"name": "day", "price": "0.25 EUR/kWh", "start": "08:00", "end": "24:00"}]}
LTOWN_RULES = {"tanks": {"T1": {"min_level_m": 0.5, "max_level_m": 3.9,
                                "final_level": "initial"}},
               "pumps": {"PUMP_1": {"min_on_s": 3600, "min_off_s": 1800,
                                    "max_starts_per_day": 6}}}
BWDF_ASSETS = {"bindings": [
    {"sensor": "dma_a", "role": "zone_inflow", "element": "dma_a"},
    {"sensor": "dma_e", "role": "zone_inflow", "element": "dma_e"},
    {"sensor": "air_temp", "role": "weather_temperature", "element": "station"},
    {"sensor": "rain_depth", "role": "weather_precipitation", "element": "station"}]}
FORECAST_AT = "2022-07-10T22:00:00Z"  # Monday 11 July 2022, 00:00 in Rome


async def run_demo(settings: Settings, data_dir: Path) -> None:
    from bus.topology import ensure_topology
    from ops.config_service import ConfigStore, format_change

    print("1. local stack")
    for line in stack.up(settings):
        print("  ", line)
    async with wiring.nats(settings, "tagus-demo") as nc:
        js = nc.jetstream()
        await ensure_topology(js, wiring.topology(settings))
        store = ConfigStore(js, known_sensors=wiring.sensor_lister(settings))
        print("2. tenants (configuration events on the CONFIG stream)")
        for tenant, doc in TENANTS.items():
            if await store.current(tenant, "tenant") is None:
                await store.create_tenant(tenant, author="demo", reason="demo", **doc)
            print(f"   {tenant}: {doc['display_name']}, {doc['timezone']}")
        print("3. ingest (raw intake -> normalise -> QuestDB)")
        for tenant, rel, mapping in UPLOADS:
            path = data_dir / rel
            if not path.is_file():
                raise SystemExit(f"demo data not found at {path}; set TAGUS_SHARED_DATA to "
                                 "the folder holding battledim/ and bwdf/")
            result = await ingest(settings, path, tenant, MAPPINGS / mapping, process="yes",
                                  progress=True)
            print(f"   [{tenant}] " + format_report(result, []).replace("\n", "\n   "))
        print("4. L-Town's configuration: network, bindings, tariff, operating rules")
        net = (data_dir / "battledim" / "L-TOWN.inp").read_bytes()
        for kind, body, why in (("network", net, "the utility's EPANET model"),
                                ("assets", LTOWN_ASSETS, "SCADA tags bound to the model"),
                                ("tariff", LTOWN_TARIFF, "two-rate contract"),
                                ("rules", LTOWN_RULES, "operators' rules")):
            change = await store.put("ltown", kind, body, author="demo", reason=why)
            print("   " + format_change(change).replace("\n", "\n   "))
        cheaper = {**LTOWN_TARIFF, "periods": [
            {**LTOWN_TARIFF["periods"][0], "price": "0.08 EUR/kWh"},
            LTOWN_TARIFF["periods"][1]]}
        await store.put("ltown", "tariff", cheaper, author="demo",
                        reason="night price renegotiated")
        history = await store.history("ltown", "tariff")
        print("   tariff history:")
        for s in history[-2:]:
            e = s.event
            print(f"     v{e.version} {e.recorded_at:%Y-%m-%d %H:%M}Z {e.author}: {e.reason}")
        diff = await store.diff("ltown", "tariff", history[-2].event.version,
                                history[-1].event.version)
        print("   " + "\n   ".join(line for line in diff.splitlines() if line.strip()))
        await store.put("ltown", "tariff", LTOWN_TARIFF, author="demo",
                        reason="back to the 2025 contract (demo reruns start the same)")
        await store.put("bwdf", "assets", BWDF_ASSETS, author="demo",
                        reason="two districts and the weather station")
        print("5. tasks (task workers: each task in its own process)")
        await _tasks(nc, settings)
        print(f"6. QuestDB table {readings.TABLE!r} at {settings.questdb_http_url}")
        await _summary(settings)
        print("   query API (read tokens): L-Town T1 level in 6-hour means, a BWDF forecast")
        lines, forecast_points = await _query_api(settings, store)
        for line in lines:
            print("  ", line)
    print("7. pictures")
    await _pictures(settings, forecast_points)


async def _tasks(nc, settings: Settings) -> None:
    from contracts.tasks import TaskCompleted
    from ops.service import components_running
    from ops.task_service import request_task, wait

    js = nc.jetstream()
    jobs = [("ltown", "data.completeness", {"day": "2019-01-15"}),
            ("bwdf", "forecast.train", {"origin": FORECAST_AT}),
            ("bwdf", "forecast.run", {"issued_at": FORECAST_AT}),
            # a what-if on history: L-Town's day planned on the demand it measured
            ("ltown", "optimise", {"start": "2019-01-15T00:00Z", "demand": "actual",
                                   "time_limit_s": 60}),
            # the twin on its own: the same day under the network's own controls, and
            # how far the twin was from the readings the day before
            ("ltown", "simulate", {"start": "2019-01-15T00:00Z", "demand": "actual",
                                   "schedule": "own-controls", "calibrate_days": 1})]
    async with components_running(nc, settings, wiring.topology(settings), timeout_s=900):
        for tenant, kind, params in jobs:
            t0 = time.monotonic()
            event = await request_task(js, tenant, kind, params, requested_by="demo")
            outcome = await wait(js, tenant, event.event_id, timeout_s=900)
            took = time.monotonic() - t0
            if isinstance(outcome, TaskCompleted):
                print(f"   {tenant} {kind}: completed in {took:.1f} s, "
                      f"{len(outcome.outputs)} outputs")
            else:
                print(f"   {tenant} {kind}: {type(outcome).__name__}: "
                      f"{getattr(outcome, 'detail', '')}")
    for table in ("kpis", "forecast_models", "schedules", "simulations"):  # applied
        await asyncio.to_thread(wiring.questdb(settings).wait_for_wal, table, 60.0)
    conn = await wiring.pg_connection(settings)
    try:
        from projections.api import queries

        for k in await queries.kpis(conn, "ltown", *(2 * [queries.check_day("2019-01-15")])):
            print(f"   KPI ltown 2019-01-15 {k['name']} {k['subject']}: {k['value']:.3f} "
                  f"({k['detail']})")
        rows = await conn.fetch(
            "SELECT series, chosen, pi1, naive_pi1, pi3, naive_pi3 FROM forecast_models "
            "WHERE tenant = $1 ORDER BY ts", "bwdf")
        for r in rows[-2:]:
            print(f"   model {r['series']}: {r['chosen']}, backtest PI1 {r['pi1'] * 1000:.2f} "
                  f"L/s (naive {r['naive_pi1'] * 1000:.2f}), PI3 {r['pi3'] * 1000:.2f} "
                  f"(naive {r['naive_pi3'] * 1000:.2f})")
        for s in (await schedules.list_schedules(conn, "ltown", since=datetime(2000, 1, 1,
                                                                            tzinfo=UTC)))[:1]:
            print(f"   schedule ltown {s['start'][:16]}: "
                  f"{'verified in EPANET' if s['verified'] else 'NOT verified'}, cost "
                  f"{s['cost']:.2f} {s['currency']} vs the network's own controls "
                  f"{s['baseline_cost']:.2f} ({s['status']}); "
                  f"`tagus schedules show {s['schedule_id']} --tenant ltown`")
        if (sim_id := await simulations.latest_id(conn, "ltown")) is not None:
            d = await simulations.simulation_detail(conn, "ltown", sim_id)
            fits = (d.get("calibration") or {}).get("tanks") or []
            fit = ", ".join(f"{f['tank']} RMSE {f['rmse_m']:.2f} m, bias {f['bias_m']:+.2f} m"
                            for f in fits if f.get("rmse_m") is not None) or "no tank compared"
            print(f"   twin ltown {d['start'][:16]} ({d['schedule']}): {d['energy_kwh']:.0f} kWh, "
                  f"{d['cost']:.2f} {d['currency']}, {d['warnings']} warning(s); "
                  f"against the readings of the day before: {fit}")
    finally:
        await conn.close()


async def _summary(settings: Settings) -> None:
    conn = await wiring.pg_connection(settings)
    try:
        rows = await conn.fetch(
            f"SELECT tenant, sensor, unit, count() AS n, min(value) AS lo, max(value) AS hi, "
            f"min(ts) AS first, max(ts) AS last FROM {readings.TABLE} "
            f"WHERE tenant IN ($1, $2) ORDER BY tenant, sensor", "ltown", "bwdf")
    finally:
        await conn.close()
    print(f"   {'tenant':6} {'sensor':12} {'unit':5} {'rows':>6} {'min':>10} {'max':>10}"
          "  first .. last (UTC)")
    for r in rows:
        print(f"   {r['tenant']:6} {r['sensor']:12} {r['unit']:5} {r['n']:6d} {r['lo']:10.5f} "
              f"{r['hi']:10.5f}  {r['first']:%Y-%m-%d %H:%M} .. {r['last']:%Y-%m-%d %H:%M}")


async def _query_api(settings: Settings, store) -> tuple[list[str], list[dict]]:
    """Serve the API on a free port in this process and loop, ask it two questions, stop."""
    import httpx
    import uvicorn

    from ops.serving import api_config
    from projections.api import create_app

    tokens = TokenStore([])
    ltown = tokens.issue("ltown", "demo-operator", ("read",))
    bwdf = tokens.issue("bwdf", "demo-operator", ("read",))
    port = free_port()
    app = create_app(api_config(settings, port=port), tokens=tokens, config_store=store)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    serving = asyncio.create_task(server.serve())
    lines: list[str] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for _ in range(100):
                if server.started:
                    break
                await asyncio.sleep(0.1)
            path = ("/v1/sensors/T1/readings?start=2019-01-01T00:00Z&end=2019-01-02T00:00Z"
                    "&bucket=6h&agg=avg")
            body = (await http.get(path, headers={"Authorization": f"Bearer {ltown}"})).json()
            lines += [f"GET {path}"] + [f"  {p}" for p in body.get("points", [])]
            if not body.get("points"):
                lines.append(f"  {json.dumps(body)[:300]}")
            path = "/v1/forecasts/zone:dma_a?as_of=2022-07-11T00:00Z"
            body = (await http.get(path, headers={"Authorization": f"Bearer {bwdf}"})).json()
            points = body.get("points", [])
            measured = [p for p in points if p.get("actual") is not None]
            if measured:
                mae = sum(abs(p["actual"] - p["p50"]) for p in measured) / len(measured)
                inside = sum(p["p10"] <= p["actual"] <= p["p90"] for p in measured)
                lines.append(f"GET {path} (tenant bwdf): {len(points)} hours issued "
                             f"{body['issued_at']}, measured {len(measured)}, mean |error| "
                             f"{mae * 1000:.2f} L/s, {inside} of {len(measured)} inside P10-P90")
            else:
                lines.append(f"GET {path}: {json.dumps(body)[:300]}")
        return lines, points
    finally:
        server.should_exit = True
        await serving


async def _pictures(settings: Settings, forecast_points: list[dict]) -> None:
    out = Path(settings.data_dir) / "demo"
    conn = await wiring.pg_connection(settings)
    try:
        week = await plots.hourly(conn, "ltown", ["p227", "p235", "PUMP_1", "T1"],
                                  datetime(2019, 1, 7, tzinfo=UTC),
                                  datetime(2019, 1, 14, tzinfo=UTC))
        dst = await plots.hourly(conn, "bwdf", ["dma_e", "dma_h", "air_temp"],
                                 datetime(2021, 10, 29, 22, tzinfo=UTC),
                                 datetime(2021, 11, 1, 22, tzinfo=UTC))
        listed = await schedules.list_schedules(conn, "ltown",
                                                since=datetime(2000, 1, 1, tzinfo=UTC))
        plan = (await schedules.schedule_detail(conn, "ltown", listed[0]["schedule_id"])
                if listed else None)
    finally:
        await conn.close()
    if plan is not None:
        print("  ", plots.plot_schedule(plan, "L-Town, 15 Jan 2019: pump schedule verified "
                                        "in EPANET (price, PUMP_1, tank T1 within bounds)",
                                        out / "ltown_schedule.png"))
    print("  ", plots.plot(week, "L-Town, 7-13 Jan 2019: inflows, pump flow, tank T1 "
                           "(hourly means from QuestDB)", out / "ltown_week.png"))
    print("  ", plots.plot(dst, "BWDF, autumn DST weekend 2021: 25-hour Sunday in "
                           "Europe/Rome, no hour lost or doubled", out / "bwdf_dst.png",
                           tz="Europe/Rome"))
    if forecast_points:
        print("  ", plots.plot_forecast(forecast_points, "BWDF DMA A: week-ahead demand "
                                        "forecast issued Mon 11 Jul 2022 00:00 vs measured",
                                        out / "bwdf_forecast.png", tz="Europe/Rome"))


def main(settings: Settings) -> None:
    asyncio.run(run_demo(settings, settings.shared_data))
