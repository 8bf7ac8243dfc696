"""Projections of forecasts: every forecast's quantiles per valid hour, and the models.

``forecasts``: one row per (series, issue time, valid time) with p10..p90 in the series'
unit; DEDUP keys (ts = valid time, tenant, series, issued_at): a replay changes nothing,
and "the forecast as of an issue time" is a bound query.  ``forecast_models``: one row per
trained model with its backtest skill (what the console shows as "model in use").
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd

from bus.components import Projection
from contracts.base import Event
from contracts.forecasts import ForecastIssued, ForecastModelTrained
from projections.questdb import QuestDB, TableWriter

TABLE = "forecasts"
MODELS_TABLE = "forecast_models"
QUANTILES = ("p10", "p25", "p50", "p75", "p90")

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    issued_at TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    series SYMBOL CAPACITY 4096 CACHE,
    p10 DOUBLE, p25 DOUBLE, p50 DOUBLE, p75 DOUBLE, p90 DOUBLE,
    unit SYMBOL CAPACITY 16 CACHE,
    method SYMBOL CAPACITY 64 CACHE,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, series, issued_at)
"""

MODELS_DDL = f"""
CREATE TABLE IF NOT EXISTS {MODELS_TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    series SYMBOL CAPACITY 4096 CACHE,
    chosen SYMBOL CAPACITY 64 CACHE,
    model_sha256 VARCHAR,
    origin TIMESTAMP,
    pi1 DOUBLE, pi3 DOUBLE, naive_pi1 DOUBLE, naive_pi3 DOUBLE,
    metrics VARCHAR,
    excluded_hours LONG,
    training_s DOUBLE,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY YEAR WAL
DEDUP UPSERT KEYS(ts, tenant, series, event_id)
"""


def frame(events: Sequence[Event]) -> pd.DataFrame:
    parts = []
    for e in events:
        if not isinstance(e, ForecastIssued):
            continue
        n = len(e.p50)
        valid = pd.date_range(pd.Timestamp(e.valid_from), periods=n,
                              freq=pd.Timedelta(seconds=e.step_s))
        part = pd.DataFrame({"ts": valid, "issued_at": pd.Timestamp(e.issued_at)})
        for q in QUANTILES:
            part[q] = e.quantiles.get(q, e.p50)
        part = part.assign(tenant=e.tenant, series=e.series, unit=e.unit,
                           method=e.method[:60], event_id=e.event_id)
        parts.append(part)
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    df["issued_at"] = pd.to_datetime(df["issued_at"], utc=True).dt.as_unit("ns")
    return df


def models_frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        if not isinstance(e, ForecastModelTrained):
            continue
        chosen = e.metrics.get(e.chosen, {})
        naive = e.metrics.get("seasonal_naive", {})
        hours = sum(int((pd.Timestamp(x["end"]) - pd.Timestamp(x["start"])) /
                        pd.Timedelta(hours=1)) for x in e.excluded)
        rows.append(dict(ts=e.recorded_at, tenant=e.tenant, series=e.series, chosen=e.chosen,
                         model_sha256=e.model_sha256, origin=e.origin,
                         pi1=chosen.get("PI1"), pi3=chosen.get("PI3"),
                         naive_pi1=naive.get("PI1"), naive_pi3=naive.get("PI3"),
                         metrics=json.dumps(e.metrics, sort_keys=True)[:20000],
                         excluded_hours=hours, training_s=e.training_s, event_id=e.event_id))
    df = pd.DataFrame(rows)
    if not df.empty:
        for col in ("ts", "origin"):
            df[col] = pd.to_datetime(df[col], utc=True).dt.as_unit("ns")
        for col in ("pi1", "pi3", "naive_pi1", "naive_pi3"):
            df[col] = df[col].astype("float64")
    return df


def projections(db: QuestDB) -> list[Projection]:
    f = TableWriter(db, TABLE, DDL, frame, ["tenant", "series", "unit", "method"])
    m = TableWriter(db, MODELS_TABLE, MODELS_DDL, models_frame, ["tenant", "series", "chosen"])
    return [Projection(name="questdb-forecasts", accepts=(ForecastIssued,), write=f.write,
                       prepare=f.prepare),
            Projection(name="questdb-forecast-models", accepts=(ForecastModelTrained,),
                       write=m.write, prepare=m.prepare)]
