"""Projection: ``kpi.computed`` -> QuestDB ``kpis`` (one row per KPI, subject and day).

``ts`` is the local day's start (UTC); DEDUP keys (ts, tenant, name, subject): a KPI
computed again for the same day (a re-run, a replay) replaces the earlier figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd

from bus.components import Projection
from contracts.base import Event
from contracts.kpis import KpiComputed
from projections.questdb import QuestDB, TableWriter

TABLE = "kpis"

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    day VARCHAR,
    tenant SYMBOL CAPACITY 1024 CACHE,
    name SYMBOL CAPACITY 256 CACHE,
    subject SYMBOL CAPACITY 65536 CACHE,
    value DOUBLE,
    unit SYMBOL CAPACITY 64 CACHE,
    detail VARCHAR,
    task_id VARCHAR,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY YEAR WAL
DEDUP UPSERT KEYS(ts, tenant, name, subject)
"""


def frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        if not isinstance(e, KpiComputed):
            continue
        day = pd.Timestamp(date.fromisoformat(e.day), tz="UTC")
        for k in e.kpis:
            rows.append(dict(ts=day, day=e.day, tenant=e.tenant, name=k.name,
                             subject=k.subject, value=float(k.value), unit=k.unit,
                             detail=k.detail[:2000], task_id=e.task_id, event_id=e.event_id))
    df = pd.DataFrame(rows)
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True).dt.as_unit("ns")
    return df


def projection(db: QuestDB) -> Projection:
    writer = TableWriter(db, TABLE, DDL, frame, ["tenant", "name", "subject", "unit"])
    return Projection(name="questdb-kpis", accepts=(KpiComputed,), write=writer.write,
                      prepare=writer.prepare)
