"""Projection: weather forecasts -> the QuestDB ``weather_forecasts`` table, and the as-of read.

One row per (issue time, valid time, location, variable): ``value`` in the SI ``unit``
(NULL where the source gave nothing), ``event_id`` of the forecast it came from.  The
table is created explicitly as a WAL table, designated timestamp ``issued_at`` (the
as-of read walks back from an issue time), with ``DEDUP UPSERT KEYS(issued_at, tenant,
location, variable, valid_at)``: a replay or a re-parse under a corrected mapping writes
the same keys, so it overwrites instead of adding rows.

``forecast_as_of`` gives a forecast run what it may know: the latest forecast issued at
or before its own issue time, never a later one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from bus.components import Projection
from contracts.base import Event
from contracts.weather import WeatherForecastReceived
from projections.questdb import QuestDB, TableWriter

NAME = "questdb-weather"
ACCEPTS = (WeatherForecastReceived,)
TABLE = "weather_forecasts"
SYMBOLS = ["tenant", "location", "variable", "unit"]

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    issued_at TIMESTAMP,
    valid_at TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    location SYMBOL CAPACITY 4096 CACHE,
    variable SYMBOL CAPACITY 64 CACHE,
    value DOUBLE,
    unit SYMBOL CAPACITY 64 CACHE,
    event_id VARCHAR
) TIMESTAMP(issued_at) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(issued_at, tenant, location, variable, valid_at)
"""


def frame(events: Sequence[Event]) -> pd.DataFrame:
    """One row per value of every series (NaN stays: it is NULL in QuestDB)."""
    parts = []
    for e in events:
        if not isinstance(e, WeatherForecastReceived) or not e.valid_times_ns:
            continue
        valid = np.asarray(e.valid_times_ns, dtype="int64")
        for s in e.series:
            parts.append(pd.DataFrame({
                "issued_at": pd.Timestamp(e.issued_at).tz_convert("UTC"),
                "valid_at": pd.to_datetime(valid, unit="ns", utc=True),
                "tenant": e.tenant, "location": e.location, "variable": s.variable,
                "value": np.asarray(s.values, dtype="float64"), "unit": s.unit,
                "event_id": e.event_id}))
    if not parts:
        return pd.DataFrame(columns=["issued_at", "valid_at", *SYMBOLS[:3], "value", "unit",
                                     "event_id"])
    df = pd.concat(parts, ignore_index=True)
    df["issued_at"] = df["issued_at"].dt.as_unit("ns")
    for col in SYMBOLS:
        df[col] = df[col].astype("category")
    return df


class WeatherWriter(TableWriter):
    def __init__(self, db: QuestDB) -> None:
        super().__init__(db, TABLE, DDL, frame, SYMBOLS)

    def write(self, events) -> None:
        self.db.write_frame(self.table, self.frame(events), symbols=self.symbols,
                            at="issued_at")


def projection(db: QuestDB) -> Projection:
    writer = WeatherWriter(db)
    return Projection(name=NAME, accepts=ACCEPTS, write=writer.write, prepare=writer.prepare)


# ---------------------------------------------------------------- the as-of read


@dataclass(frozen=True)
class ForecastAsOf:
    """The forecast a run as of some instant may use.  ``frame``: index = valid time (UTC,
    every whole hour from the first to the last valid time; NaN where the forecast has
    no value), one column per variable in its SI unit (``units``)."""

    issued_at: datetime  # aware UTC
    event_ids: tuple[str, ...]  # the forecast event(s) the rows came from
    units: dict[str, str]
    frame: pd.DataFrame


async def forecast_as_of(db, tenant: str, location: str, as_of: datetime
                         ) -> ForecastAsOf | None:
    """The latest forecast for ``tenant``/``location`` issued at or before ``as_of`` (aware),
    never a later one; None if there is none.  ``db``: an asyncpg connection or pool.

    Valid times off the whole hour (a sub-hourly source) are not in ``frame``."""
    from projections.api import queries

    got = await queries.weather_forecast_rows(db, tenant, location, as_of)
    if got is None:
        return None
    issued_at, rows = got
    df = pd.DataFrame([dict(r) for r in rows],
                      columns=["valid_at", "variable", "value", "unit", "event_id"])
    df["valid_at"] = pd.to_datetime(df["valid_at"], utc=True)
    wide = df.pivot(index="valid_at", columns="variable", values="value")  # keys: unique
    hours = pd.date_range(df["valid_at"].min().ceil("h"), df["valid_at"].max().floor("h"),
                          freq="h", name="valid_at")
    wide = wide.reindex(hours)
    wide.columns.name = None
    return ForecastAsOf(
        issued_at=pd.Timestamp(issued_at, tz="UTC").to_pydatetime(),
        event_ids=tuple(sorted(df["event_id"].unique())),
        units=dict(zip(df["variable"], df["unit"], strict=True)),
        frame=wide.astype("float64"))
