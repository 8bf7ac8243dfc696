"""Projection: normalised readings -> the QuestDB ``readings`` table.

The table is created explicitly (ILP auto-creation would take column types from the
first row it sees) as a WAL table with ``DEDUP UPSERT KEYS(ts, tenant, sensor)``: a
replayed or redelivered batch overwrites its own rows, so the projection is idempotent
without any bookkeeping of its own.  Rows go through the questdb client's dataframe path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from bus.components import Projection
from contracts.base import Event
from contracts.errors import ContractError
from contracts.readings import ReadingsNormalised
from projections.questdb import QuestDB, TableWriter

NAME = "questdb-readings"
ACCEPTS = (ReadingsNormalised,)
TABLE = "readings"
MAX_BATCH = 4  # messages per write: <= 400k readings, so memory does not follow the backlog

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    sensor SYMBOL CAPACITY 65536 CACHE,
    value DOUBLE,
    unit SYMBOL CAPACITY 64 CACHE,
    quality INT
) TIMESTAMP(ts) PARTITION BY DAY WAL
DEDUP UPSERT KEYS(ts, tenant, sensor)
"""


def frame(events: Sequence[Event]) -> pd.DataFrame:
    """One row per reading: ts (UTC), tenant, sensor, value (SI), unit, quality.

    Symbol columns are built as categoricals from one code per series (no per-reading
    Python strings): about 6x less CPU than object arrays on 2 M readings.
    """
    ts, value, quality, lengths = [], [], [], []
    codes: dict[str, list[int]] = {"tenant": [], "sensor": [], "unit": []}
    cats: dict[str, dict[str, int]] = {"tenant": {}, "sensor": {}, "unit": {}}
    for e in events:
        if not isinstance(e, ReadingsNormalised):
            continue
        for s in e.series:
            n = len(s.values)
            ts.append(np.asarray(s.timestamps_ns, dtype="int64"))
            value.append(np.asarray(s.values, dtype="float64"))
            quality.append(np.asarray(s.quality, dtype="int32") if s.quality
                           else np.zeros(n, dtype="int32"))
            lengths.append(n)
            for col, name in (("tenant", e.tenant), ("sensor", s.sensor_id), ("unit", s.unit)):
                codes[col].append(cats[col].setdefault(name, len(cats[col])))
    if not ts:
        return pd.DataFrame(columns=["ts", "tenant", "sensor", "value", "unit", "quality"])

    def symbol(col: str) -> pd.Categorical:  # one code per series, repeated per reading
        return pd.Categorical.from_codes(
            np.repeat(np.asarray(codes[col], dtype="int32"), lengths),
            categories=list(cats[col]))

    return pd.DataFrame({
        "ts": pd.to_datetime(np.concatenate(ts), unit="ns", utc=True),
        "tenant": symbol("tenant"), "sensor": symbol("sensor"),
        "value": np.concatenate(value), "unit": symbol("unit"),
        "quality": np.concatenate(quality),
    })


# QuestDB's designated timestamp: microseconds from 1970 to 294247 (the client refuses
# negative ones).  Normalisation keeps readings inside its window; this guards old events.
_STORABLE_NS = (0, 9_999 * 365 * 86_400 * 10**9)


class PartlyWritten(ContractError):
    """Some rows of an event cannot be stored; the others were written."""


class ReadingsWriter(TableWriter):
    def __init__(self, db: QuestDB) -> None:
        super().__init__(db, TABLE, DDL, frame, ["tenant", "sensor", "unit"])

    def write(self, events) -> None:
        """Write every storable row; a row the store cannot hold never takes the good rows
        of its batch down with it: they are written, then ``PartlyWritten`` names the
        others (the runner isolates the event and dead-letters it with that reason)."""
        df = self.frame(events)
        ns = df["ts"].astype("int64") if not df.empty else None
        bad = ((ns < _STORABLE_NS[0]) | (ns > _STORABLE_NS[1])) if ns is not None else None
        if bad is None or not bad.any():
            self.db.write_frame(self.table, df, symbols=self.symbols)
            return
        self.db.write_frame(self.table, df[~bad], symbols=self.symbols)
        shown = df[bad].head(3)
        examples = ", ".join(f"{r.sensor}@{r.ts.isoformat()}" for r in shown.itertuples())
        raise PartlyWritten(f"{int(bad.sum())} of {len(df)} readings have a time the store "
                            f"cannot hold (before 1970 or after 9999), e.g. {examples}; the "
                            f"other {int((~bad).sum())} were written")


def projection(db: QuestDB) -> Projection:
    writer = ReadingsWriter(db)
    return Projection(name=NAME, accepts=ACCEPTS, write=writer.write, prepare=writer.prepare,
                      max_batch=MAX_BATCH)
