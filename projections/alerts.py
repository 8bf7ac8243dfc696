"""Alerts for people and for the alert processors: the QuestDB ``alerts`` table, the
tenant's alert state read from the ALERT stream, what the rules need from storage, and
acknowledging.

- ``alerts`` (QuestDB, one row per transition: pending, raised, cleared, acknowledged;
  DEDUP keys (ts, tenant, event_id), so replays change nothing); ``list_alerts`` folds
  the rows into alerts, open ones and recent ones.
- ``AlertStream``: each tenant's ``alert.*`` events read from the stream itself (not a
  view that lags): a processor's next input sees what its previous input published.
  As a loader it hands over the ``AlertBook`` as of the input (``as_of`` before the
  input's instant; at the same instant, other inputs' events only).
- ``RecentReadings``: the stored readings before a batch that rate rules compare with.
- ``EvaluationInputs``: what the periodic evaluation judges at its instant: the last
  reading per watched sensor, hourly actuals against forecast bands, dead letters.

Which sensors and series to load is the processor's decision (``plans``, pure functions
of the configuration handed over by the bootstrap); this module only fetches.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta

import pandas as pd
from nats.js.errors import NotFoundError as JsNotFound

from bus import config_view
from bus.components import Projection
from bus.publish import publish
from bus.subjects import stream_name, tenant_subjects
from bus.tail import TenantTail
from contracts.alerts import (
    AlertAcknowledged, AlertBook, AlertCleared, AlertPending, AlertRaised, evaluation_instant,
)
from contracts.base import Event, derive_id, utc_now
from contracts.errors import ContractError, NotFoundError
from contracts.readings import ReadingsNormalised
from contracts.registry import decode
from contracts.tasks import TaskRequested
from projections.api.queries import fetch_or_empty as _rows, iso_utc as _iso, naive_utc as _naive
from projections.questdb import QuestDB, TableWriter

NAME = "questdb-alerts"
TABLE = "alerts"
ACCEPTS = (AlertPending, AlertRaised, AlertCleared, AlertAcknowledged)
STATES = {AlertPending: "pending", AlertRaised: "raised", AlertCleared: "cleared",
          AlertAcknowledged: "acknowledged"}

DDL = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    ts TIMESTAMP,
    tenant SYMBOL CAPACITY 1024 CACHE,
    alert_id SYMBOL CAPACITY 4096 NOCACHE,
    state SYMBOL CAPACITY 8 CACHE,
    rule SYMBOL CAPACITY 1024 CACHE,
    kind SYMBOL CAPACITY 16 CACHE,
    subject VARCHAR,
    severity SYMBOL CAPACITY 8 CACHE,
    message VARCHAR,
    value DOUBLE,
    limit_value DOUBLE,
    unit VARCHAR,
    since TIMESTAMP,
    as_of TIMESTAMP,
    by VARCHAR,
    detail VARCHAR,
    event_id VARCHAR
) TIMESTAMP(ts) PARTITION BY MONTH WAL
DEDUP UPSERT KEYS(ts, tenant, event_id)
"""


def frame(events: Sequence[Event]) -> pd.DataFrame:
    rows = []
    for e in events:
        state = STATES.get(type(e))
        if state is None:
            continue
        rows.append(dict(
            ts=e.recorded_at, tenant=e.tenant, alert_id=e.alert_id, state=state,
            rule=e.rule, kind=e.kind, subject=e.subject,
            severity=getattr(e, "severity", ""), message=getattr(e, "message", "")
            or getattr(e, "comment", ""), value=getattr(e, "value", None),
            limit_value=getattr(e, "limit", None), unit=getattr(e, "unit", ""),
            since=getattr(e, "since", None), as_of=e.as_of, by=getattr(e, "by", ""),
            detail=json.dumps(getattr(e, "detail", {}), sort_keys=True, default=str)[:4000],
            event_id=e.event_id))
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    for col in ("ts", "since", "as_of"):
        df[col] = pd.to_datetime(df[col], utc=True).dt.as_unit("ns")
    for col in ("value", "limit_value"):
        df[col] = df[col].astype("float64")
    return df


def projection(db: QuestDB) -> Projection:
    writer = TableWriter(db, TABLE, DDL, frame,
                         ["tenant", "alert_id", "state", "rule", "kind", "severity"])
    return Projection(name=NAME, accepts=ACCEPTS, write=writer.write, prepare=writer.prepare)


# ---------------------------------------------------------------- the stream as state


class AlertStream(TenantTail):
    """Each tenant's alert events in stream order (``events``), read from the ALERT
    stream and kept (alerts are few)."""

    def __init__(self) -> None:
        super().__init__("alert")

    async def __call__(self, js, event: Event) -> AlertBook:
        """The loader ``alert_book``: the tenant's alerts as of ``event``."""
        at = evaluation_instant(event) if isinstance(event, TaskRequested) else event.recorded_at
        return AlertBook.fold(e for e in await self.events(js, event.tenant)
                              if e.as_of < at or e.as_of == at
                              and e.causation_id != event.event_id)

    async def book(self, js, tenant: str) -> tuple[AlertBook, list[Event]]:
        events = await self.events(js, tenant)
        return AlertBook.fold(events), events


async def acknowledge(js, stream: AlertStream, tenant: str, alert_id: str, *, by: str,
                      comment: str = "") -> tuple[str, AlertAcknowledged | None]:
    """Acknowledge an open alert: ("acknowledged", the event), or ("already", None) when
    somebody did.  NotFoundError for an unknown alert; ContractError when it is
    pending or cleared.  The event's id depends on the alert only: two operators
    acknowledging at once publish one event."""
    book, events = await stream.book(js, tenant)
    track = book.find(alert_id)
    if track is None or track.status != "open":
        if not any(getattr(e, "alert_id", None) == alert_id for e in events):
            raise NotFoundError(f"no alert {alert_id} for tenant {tenant!r}")
        state = "pending (not raised yet)" if track else "cleared"
        raise ContractError(f"alert {alert_id} is {state}: only open alerts are "
                            f"acknowledged")
    if track.acknowledged_by:
        return "already", None
    now = utc_now()
    event = AlertAcknowledged(
        event_id=derive_id("alert.acknowledged", tenant, alert_id), tenant=tenant,
        occurred_at=now, recorded_at=now, causation_id=alert_id, correlation_id=alert_id,
        alert_id=alert_id, rule=track.rule, kind=track.kind, subject=track.subject,
        as_of=now, by=by, comment=comment[:500])
    await publish(js, event)
    return "acknowledged", event


# ---------------------------------------------------------------- what rules need

Connect = Callable[[], Awaitable]  # -> an asyncpg connection to QuestDB
_EPOCH = datetime(1970, 1, 1)


def _ns(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(microseconds=1) * 1000


def _in(first: int, n: int) -> str:
    """``($4::string, $5::string)``: the cast keeps QuestDB from guessing a single id's
    type (a lone UUID-like value breaks ``IN``)."""
    return "(" + ", ".join(f"${first + i}::string" for i in range(n)) + ")"


class RecentReadings:
    """Loader ``recent_readings``: {sensor: (epoch ns, values)} stored before the batch's
    first reading, for the sensors and look-backs ``select(alerts_doc, assets,
    sensors_in_batch) -> {sensor: seconds}`` names (the rate rules')."""

    def __init__(self, connect: Connect, config, select, wait_visible) -> None:
        self.connect, self.config, self.select = connect, config, select
        self.wait_visible = wait_visible

    async def __call__(self, js, event: Event) -> dict:
        if not isinstance(event, ReadingsNormalised) or not event.series:
            return {}
        current = await config_view.current(js, event.tenant, "alerts")  # one round trip
        if current is None or not any(r.get("kind") == "rate_of_change" for r in
                                      (current.document or {}).get("rules", ())):
            return {}  # no rate rules now: none to judge (the usual case)
        cfg = await self.config(js, event)
        wanted = self.select(cfg.get("alerts"), cfg.get("assets"),
                             [s.sensor_id for s in event.series])
        if not wanted:
            return {}
        first = min((min(s.timestamps_ns) for s in event.series if s.timestamps_ns),
                    default=None)
        if first is None:
            return {}
        start = first - int(max(wanted.values()) * 1e9)
        sensors = sorted(wanted)
        await self.wait_visible("readings")
        conn = await self.connect()
        try:
            rows = await _rows(conn, (
                f"SELECT sensor, ts, value FROM readings WHERE tenant = $1 AND ts >= $2 "
                f"AND ts < $3 AND sensor IN {_in(4, len(sensors))} ORDER BY ts"),
                event.tenant, _utc_naive(start), _utc_naive(first), *sensors)
        finally:
            await conn.close()
        out: dict[str, tuple[list[int], list[float]]] = {}
        for r in rows:
            ts, vs = out.setdefault(r["sensor"], ([], []))
            if _ns(r["ts"]) >= first - int(wanted[r["sensor"]] * 1e9):
                ts.append(_ns(r["ts"]))
                vs.append(r["value"])
        return out


def _utc_naive(ns: int) -> datetime:
    return _EPOCH + timedelta(microseconds=ns // 1000)


class DeadLetterTail:
    """Each tenant's dead letters as (epoch ns recorded, consumer), read from the
    DEADLETTER stream (payloads are not kept)."""

    STREAM = stream_name("deadletter")

    def __init__(self) -> None:
        self._seen: dict[str, list[tuple[int, str]]] = {}
        self._next: dict[str, int] = {}

    async def __call__(self, js, tenant: str) -> list[tuple[int, str]]:
        seen = self._seen.setdefault(tenant, [])
        seq = self._next.get(tenant, 1)
        while True:
            try:
                raw = await js.get_msg(self.STREAM, seq=seq,
                                       subject=tenant_subjects("deadletter", tenant), next=True)
            except JsNotFound:
                break
            letter = decode("deadletter", raw.data)
            seen.append((int(letter.recorded_at.timestamp() * 1e9), letter.consumer))
            seq = raw.seq + 1
        self._next[tenant] = seq
        return seen


class EvaluationInputs:
    """Loader ``alert_inputs`` of task ``alerts.evaluate`` (``processors.alerts.periodic``
    says what it holds).  ``plan(alerts_doc, assets) -> {"sensors": [...], "series":
    {series: [sensors]}, "hours": n, "window_s": s, "lookback_s": s}``."""

    def __init__(self, connect: Connect, config, plan, wait_visible) -> None:
        self.connect, self.config, self.plan = connect, config, plan
        self.wait_visible = wait_visible
        self.letters = DeadLetterTail()

    async def __call__(self, js, event: Event) -> dict:
        cfg = await self.config(js, event)
        if cfg.get("alerts") is None:
            return {}
        at = evaluation_instant(event)
        plan = self.plan(cfg["alerts"], cfg.get("assets"))
        out: dict = {"latest": {}, "forecast": {}, "dead_letters": []}
        if plan["window_s"]:
            at_ns = int(at.timestamp() * 1e9)
            lo = at_ns - int(plan["window_s"] * 1e9)
            out["dead_letters"] = [(ns, c) for ns, c in await self.letters(js, event.tenant)
                                   if lo < ns <= at_ns]
        if not plan["sensors"] and not plan["series"]:
            return out
        await self.wait_visible("readings")
        conn = await self.connect()
        try:
            if plan["sensors"]:
                out["latest"] = await self._latest(conn, event.tenant, plan["sensors"], at,
                                                   plan["lookback_s"])
            for series, sensors in plan["series"].items():
                out["forecast"][series] = await self._bands(conn, event.tenant, series,
                                                            sensors, at, plan["hours"])
        finally:
            await conn.close()
        return out

    async def _latest(self, conn, tenant: str, sensors: list[str], at: datetime,
                      lookback_s: float) -> dict:
        rows = await _rows(conn, (
            f"SELECT sensor, ts FROM readings WHERE tenant = $1 AND ts <= $2 AND ts > $3 "
            f"AND sensor IN {_in(4, len(sensors))} LATEST ON ts PARTITION BY sensor"),
            tenant, _naive(at), _naive(at - timedelta(seconds=lookback_s)), *sensors)
        latest = {r["sensor"]: _ns(r["ts"]) for r in rows}
        return {s: latest.get(s) for s in sensors}

    async def _bands(self, conn, tenant: str, series: str, sensors: list[str],
                     at: datetime, hours: int) -> dict:
        end = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        start = end - timedelta(hours=hours)
        grid = [start + timedelta(hours=k) for k in range(hours)]
        actual: list[float | None] = [0.0] * hours
        for sensor in sensors:
            rows = await _rows(conn, (
                "SELECT ts, avg(value) AS value FROM readings WHERE tenant = $1 AND "
                "sensor = $2 AND ts >= $3 AND ts < $4 SAMPLE BY 1h ALIGN TO CALENDAR"),
                tenant, sensor, _naive(start), _naive(end))
            means = {r["ts"]: r["value"] for r in rows}
            for k, hour in enumerate(grid):
                v = means.get(_naive(hour))
                actual[k] = None if v is None or actual[k] is None else actual[k] + v
        if not sensors:
            actual = [None] * hours
        rows = await _rows(conn, (
            "SELECT ts, issued_at, p10, p25, p75, p90 FROM forecasts WHERE tenant = $1 AND "
            "series = $2 AND ts >= $3 AND ts < $4 AND issued_at <= $5 ORDER BY issued_at"),
            tenant, series, _naive(start), _naive(end), _naive(at))
        band: dict[datetime, dict] = {}
        for r in rows:  # per hour, the latest forecast issued before the hour began
            if r["issued_at"] <= r["ts"]:
                band[r["ts"]] = dict(r)
        out = {"hours": [int(h.timestamp() * 1e9) for h in grid], "actual": actual}
        for q in ("p10", "p25", "p75", "p90"):
            out[q] = [band.get(_naive(h), {}).get(q) for h in grid]
        return out


def loaders(db: QuestDB, connect: Connect, config, plans) -> dict:
    """The loaders the alert processors need (``plans``: ``select`` for rates, ``plan``
    for the periodic evaluation, from ``processors.alerts``).  Before reading readings
    they wait (bounded) for QuestDB to apply what it accepted."""

    async def wait_visible(table: str) -> None:
        from contracts.errors import TransientError

        try:
            await asyncio.to_thread(db.wait_for_wal, table, 30.0)
        except TransientError:
            pass  # a lagging WAL: judge what is visible

    async def config_if_alerts(js, event: Event) -> dict:
        """The configuration as of the event, for a tenant with an ``alerts`` document
        (one round trip, not one per kind, for the others: every readings batch of every
        tenant passes the alert processors).  Documents are versioned, never removed:
        no document now means none at any earlier time."""
        if await config_view.current(js, event.tenant, "alerts") is None:
            return {"versions": {}, "tenant": None, "alerts": None}
        return await config(js, event)

    return {"config": config_if_alerts, "alert_book": AlertStream(),
            "recent_readings": RecentReadings(connect, config, plans["select"], wait_visible),
            "alert_inputs": EvaluationInputs(connect, config, plans["plan"], wait_visible)}


# ---------------------------------------------------------------- listing


async def list_alerts(conn, tenant: str, *, since: datetime, open_only: bool = False,
                      limit: int = 200) -> list[dict]:
    """Alerts of ``tenant``, newest first: every open one, and those with a transition
    since ``since`` (unless ``open_only``).  Pending conditions are not listed."""
    # open: raised and not cleared (one input may raise and clear at one ``ts``, so not
    # LATEST ON ts)
    ends = await _rows(conn, f"SELECT alert_id, sum(CASE WHEN state = 'cleared' THEN 1 "
                             f"ELSE 0 END) AS cleared FROM {TABLE} WHERE tenant = $1 AND "
                             f"state IN ('raised', 'cleared') GROUP BY alert_id", tenant)
    open_ids = sorted(r["alert_id"] for r in ends if not r["cleared"])
    rows = []
    if open_ids:
        rows += await _rows(conn, f"SELECT * FROM {TABLE} WHERE tenant = $1 AND alert_id IN "
                                  f"{_in(2, len(open_ids))} ORDER BY ts", tenant, *open_ids)
    if not open_only:
        rows += await _rows(conn, f"SELECT * FROM {TABLE} WHERE tenant = $1 AND ts >= $2 "
                                  f"ORDER BY ts", tenant, _naive(since))
    alerts: dict[str, dict] = {}
    rank = {"pending": 0, "raised": 1, "acknowledged": 2, "cleared": 3}
    for r in sorted(rows, key=lambda r: (r["ts"], rank[r["state"]])):
        a = alerts.setdefault(r["alert_id"], {
            "alert_id": r["alert_id"], "rule": r["rule"], "kind": r["kind"],
            "subject": r["subject"], "state": "pending", "severity": None, "message": "",
            "since": None, "raised_at": None, "cleared_at": None,
            "acknowledged_at": None, "acknowledged_by": None, "value": None, "unit": ""})
        when = _iso(r["ts"])
        if r["state"] == "raised":
            a.update(state="open", severity=r["severity"], message=r["message"],
                     since=_iso(r["since"]), raised_at=when, value=r["value"],
                     unit=r["unit"])
        elif r["state"] == "cleared":
            a.update(state="cleared", cleared_at=when, clear_message=r["message"])
        elif r["state"] == "acknowledged":
            a.update(acknowledged_at=when, acknowledged_by=r["by"])
    out = [a for a in alerts.values() if a["raised_at"] is not None]
    if open_only:
        out = [a for a in out if a["state"] == "open"]
    opened = [a for a in out if a["state"] == "open"]
    closed = [a for a in out if a["state"] != "open"]
    opened.sort(key=lambda a: a["raised_at"], reverse=True)
    closed.sort(key=lambda a: a["cleared_at"] or "", reverse=True)
    return (opened + closed)[:limit]


__all__ = ["AlertStream", "DeadLetterTail", "EvaluationInputs", "RecentReadings",
           "acknowledge", "list_alerts", "loaders", "projection"]
