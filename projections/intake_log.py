"""Projections of the intake accounting: one row per upload, one row per rejection.

``intake_log``: every upload's status and counts (received = accepted + rejected +
missing), so operators see what each file gave.  ``readings_rejected``: every rejected
or missing item with its reason.  Both tables are WAL with DEDUP keys that a replay
reproduces exactly (upload time, tenant, ids), so replaying changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from bus.components import Projection
from contracts.base import Event
from contracts.intake import COUNTERS, IntakeFailed, IntakeParsed
from contracts.readings import ReadingsRejected
from projections.questdb import QuestDB, TableWriter

LOG_TABLE = "intake_log"
REJECTED_TABLE = "readings_rejected"

LOG_DDL = f"""
CREATE TABLE IF NOT EXISTS {LOG_TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    intake_id VARCHAR,
    status SYMBOL,
    source SYMBOL,
    filename VARCHAR,
    mapping_version VARCHAR,
    rows_received LONG, rows_accepted LONG, rows_rejected LONG,
    values_received LONG, values_accepted LONG, values_rejected LONG, values_missing LONG,
    reasons VARCHAR,
    detail VARCHAR,
    first_ts TIMESTAMP, last_ts TIMESTAMP,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, intake_id)
"""

REJECTED_DDL = f"""
CREATE TABLE IF NOT EXISTS {REJECTED_TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    event_id VARCHAR,
    seq INT,
    intake_id VARCHAR,
    sensor SYMBOL CAPACITY 65536 CACHE,
    row LONG,
    reason SYMBOL,
    count LONG,
    raw VARCHAR,
    detail VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, event_id, seq)
"""


def log_frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        base = dict(ts=e.occurred_at, tenant=e.tenant, intake_id=e.intake_id,
                    source=e.source or "", filename=e.filename or "", event_id=e.event_id)
        if isinstance(e, IntakeParsed):
            rows.append(dict(base, status="parsed", mapping_version=e.mapping_version or "",
                             **{k: getattr(e, k) for k in COUNTERS},
                             reasons=json.dumps(e.reasons),
                             detail="",
                             first_ts=pd.Timestamp(e.first_ts_ns, tz="UTC")
                             if e.first_ts_ns is not None else pd.NaT,
                             last_ts=pd.Timestamp(e.last_ts_ns, tz="UTC")
                             if e.last_ts_ns is not None else pd.NaT))
        elif isinstance(e, IntakeFailed):
            rows.append(dict(base, status="failed", mapping_version="",
                             reasons=json.dumps({e.reason: 1}), detail=e.detail))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in COUNTERS:
        df[col] = df.get(col, pd.Series(dtype="float64")).astype("Int64")
    for col in ("first_ts", "last_ts"):
        # .as_unit("ns"): pandas 3 makes an all-NaT column datetime64[s], which the
        # questdb client refuses ("Unsupported pandas dtype datetime64[s, UTC]")
        df[col] = pd.to_datetime(df.get(col, pd.Series(pd.NaT, index=df.index)),
                                 utc=True).dt.as_unit("ns")
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    for col in ("tenant", "status", "source"):
        df[col] = df[col].astype(str)
    return df


def rejected_frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        if not isinstance(e, ReadingsRejected):
            continue
        for i, r in enumerate(e.rejected):
            rows.append(dict(ts=e.occurred_at, tenant=e.tenant, event_id=e.event_id, seq=i,
                             intake_id=e.causation_id or "", sensor=r.sensor_id or "",
                             row=r.row if r.row is not None else -1, reason=r.reason,
                             count=r.count, raw=r.raw, detail=r.detail))
    df = pd.DataFrame(rows)
    if not df.empty:
        df["ts"] = pd.to_datetime(df["ts"], utc=True)
        df["seq"] = df["seq"].astype("int32")
    return df


def projections(db: QuestDB) -> list[Projection]:
    log_w = TableWriter(db, LOG_TABLE, LOG_DDL, log_frame, ["tenant", "status", "source"])
    rej_w = TableWriter(db, REJECTED_TABLE, REJECTED_DDL, rejected_frame,
                        ["tenant", "sensor", "reason"])
    return [
        Projection(name="questdb-intake-log", accepts=(IntakeParsed, IntakeFailed),
                   write=log_w.write, prepare=log_w.prepare),
        Projection(name="questdb-rejected", accepts=(ReadingsRejected,),
                   write=rej_w.write, prepare=rej_w.prepare),
    ]
