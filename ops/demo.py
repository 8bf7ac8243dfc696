"""`tagus demo`: the whole backbone once, on the local stack.

Starts the stack, ensures the topology, publishes a month of L-Town SCADA flows
(BattLeDIM, 5-minute, m³/h) as ``ReadingsReported`` batches, runs the unit-normalising
processor and the QuestDB projection until they have caught up, and prints what QuestDB
now holds next to what was published.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pandas as pd

from bus.publish import publish
from bus.runner import Runner
from bus.topology import ensure_topology
from contracts.base import derive_id, utc_now
from contracts.readings import ReadingsReported, Series
from ops import stack, wiring
from ops.service import wait_caught_up
from ops.settings import Settings
from projections import readings

TENANT = "ltown"
FLOWS = Path("battledim") / "2019-01_SCADA_Flows.csv"


def load_flows(data_dir: Path) -> pd.DataFrame:
    """The BattLeDIM flows file as published: ';' separated, decimal comma, naive UTC-less."""
    path = data_dir / FLOWS
    if not path.is_file():
        raise SystemExit(f"demo data not found at {path}; set TAGUS_SHARED_DATA to the "
                         "folder holding battledim/")
    df = pd.read_csv(path, sep=";", decimal=",")
    # BattLeDIM timestamps carry no zone and no DST: they are treated as UTC.
    df["Timestamp"] = pd.to_datetime(df["Timestamp"], format="%Y-%m-%d %H:%M:%S", utc=True)
    return df


def daily_batches(df: pd.DataFrame, source: str) -> list[ReadingsReported]:
    """One event per day holding every sensor's series for that day (ids from content)."""
    events = []
    now = utc_now()
    for day, part in df.groupby(df["Timestamp"].dt.floor("D")):
        ts_ns = part["Timestamp"].dt.as_unit("ns").astype("int64").tolist()
        series = [Series(sensor_id=col, unit="m3/h", timestamps_ns=ts_ns,
                         values=part[col].astype(float).tolist())
                  for col in df.columns if col != "Timestamp"]
        events.append(ReadingsReported(
            event_id=derive_id("demo", TENANT, source, day.isoformat()), tenant=TENANT,
            occurred_at=day.to_pydatetime(), recorded_at=now, source=source, series=series))
    return events


def _progress(positions) -> None:
    lag = sum(p.lag for p in positions)
    sys.stdout.write(f"\r  processing... {lag:6d} events behind   ")
    sys.stdout.flush()


async def run_demo(settings: Settings, data_dir: Path) -> None:
    print("1. local stack")
    for line in stack.up(settings):
        print("  ", line)
    topo = wiring.topology(settings)
    nc = await wiring.nats_connection(settings, name="tagus-demo")
    js = nc.jetstream()
    try:
        print("2. topology:", "; ".join(await ensure_topology(js, topo)) or "unchanged")
        df = load_flows(data_dir)
        events = daily_batches(df, source=str(FLOWS))
        dup = 0
        for e in events:
            dup += bool((await publish(js, e)).duplicate)
        n = sum(len(s.values) for e in events for s in e.series)
        print(f"3. published {len(events)} ReadingsReported events ({n} readings, "
              f"{dup} already stored: same ids, dropped by JetStream)")
        comps = wiring.components(settings)
        stop = asyncio.Event()
        runners = [Runner(nc, comps[name], topo.consumer(name), batch=50) for name in comps]
        tasks = [asyncio.create_task(r.run(stop)) for r in runners]
        await wait_caught_up(nc, topo, on_progress=_progress)
        stop.set()
        await asyncio.gather(*tasks)
        print("\n4. processors caught up:",
              ", ".join(f"{r.component.name} handled {r.stats.handled}" for r in runners))
    finally:
        await nc.drain()
    db = stack.questdb(settings)
    db.wait_for_wal(readings.TABLE)
    rows = db.rows(
        f"select sensor, unit, count(), min(value), max(value), sum(value), min(ts), max(ts) "
        f"from {readings.TABLE} where tenant = '{TENANT}' order by sensor")
    print(f"5. QuestDB table {readings.TABLE!r} ({settings.questdb_http_url}), tenant {TENANT}:")
    print(f"   {'sensor':8} {'unit':5} {'rows':>6} {'min':>10} {'max':>10} {'source sum m3/h':>16}"
          f" {'stored sum·3600':>16}  first .. last")
    for sensor, unit, cnt, vmin, vmax, vsum, t0, t1 in rows:
        src_sum = df[sensor].sum() if sensor in df else float("nan")
        print(f"   {sensor:8} {unit:5} {cnt:6d} {vmin:10.6f} {vmax:10.6f} {src_sum:16.2f}"
              f" {vsum * 3600:16.2f}  {t0[:16]} .. {t1[:16]}")
    print(f"   open {settings.questdb_http_url} and run: select * from {readings.TABLE} "
          f"where sensor = 'PUMP_1' sample by 1h")
