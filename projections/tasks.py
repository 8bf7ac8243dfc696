"""Projection: every task transition -> QuestDB ``tasks`` (one row per transition).

Operators see how long tasks wait and run, which fail and why: ``ts`` is when the
transition was recorded; ``state`` requested | started | progressed | completed | failed |
cancelled | cancel_requested.  DEDUP keys (ts, tenant, event_id): replays change nothing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from bus.components import Projection
from contracts.base import Event, event_type
from contracts.tasks import (
    TaskCancelled, TaskCancelRequested, TaskCompleted, TaskFailed, TaskProgressed,
    TaskRequested, TaskStarted,
)
from projections.questdb import QuestDB, TableWriter

NAME = "questdb-tasks"
TABLE = "tasks"
ACCEPTS = (TaskRequested, TaskStarted, TaskProgressed, TaskCompleted, TaskFailed,
           TaskCancelled, TaskCancelRequested)

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    task_id VARCHAR,
    kind SYMBOL CAPACITY 256 CACHE,
    state SYMBOL CAPACITY 16 CACHE,
    attempt INT,
    fraction DOUBLE,
    message VARCHAR,
    requested_by VARCHAR,
    schedule VARCHAR,
    slot TIMESTAMP,
    queued_s DOUBLE,
    duration_s DOUBLE,
    retryable BOOLEAN,
    outputs INT,
    params VARCHAR,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, event_id)
"""


def frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        row = dict(ts=e.recorded_at, tenant=e.tenant, event_id=e.event_id,
                   state=event_type(e).split(".", 1)[1], attempt=None, fraction=None,
                   message="", requested_by="", schedule="", slot=pd.NaT, queued_s=None,
                   duration_s=None, retryable=False, outputs=None, params="")
        if isinstance(e, TaskRequested):
            row.update(task_id=e.event_id, kind=e.kind, requested_by=e.requested_by,
                       schedule=e.schedule or "", slot=e.slot or pd.NaT,
                       params=json.dumps(e.params, sort_keys=True, default=str)[:2000])
        else:
            row.update(task_id=e.task_id, kind=e.kind)
        if isinstance(e, TaskStarted):
            row.update(attempt=e.attempt, queued_s=e.queued_s, message=e.worker)
        elif isinstance(e, TaskProgressed):
            row.update(fraction=e.fraction, message=e.message)
        elif isinstance(e, TaskCompleted):
            row.update(duration_s=e.duration_s, outputs=len(e.outputs), fraction=1.0)
        elif isinstance(e, TaskFailed):
            row.update(attempt=e.attempt, retryable=e.retryable,
                       message=f"{e.reason}: {e.detail}"[:2000])
        elif isinstance(e, TaskCancelled | TaskCancelRequested):
            row.update(message=f"by {e.by}: {e.reason}"[:2000])
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["slot"] = pd.to_datetime(df["slot"], utc=True).dt.as_unit("ns")
    for col in ("attempt", "outputs"):
        df[col] = df[col].astype("Int32")
    for col in ("fraction", "queued_s", "duration_s"):
        df[col] = df[col].astype("float64")
    df["retryable"] = df["retryable"].astype(bool)
    return df


def projection(db: QuestDB) -> Projection:
    writer = TableWriter(db, TABLE, DDL, frame, ["tenant", "kind", "state"])
    return Projection(name=NAME, accepts=ACCEPTS, write=writer.write, prepare=writer.prepare)
