"""Rules judged by the clock (pure), at the instant ``at`` of an ``alerts.evaluate`` task:
stale sensors, forecast deviation, dead letters, and the digest windows.

``inputs`` (loaded by the runner, bounded by ``at``):

- ``latest``: {sensor: epoch ns of its last reading at or before ``at``, or None};
- ``dead_letters``: [(epoch ns recorded, consumer)] of the tenant, at or before ``at``;
- ``forecast``: {series: {"hours": [epoch ns of each hour start], "actual": [...],
  "p10"/"p25"/"p75"/"p90": [...]}}: the complete hours before ``at``, the actual hourly
  mean and the band of the latest forecast issued before each hour (None where absent).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.alerts import AlertDigestDue, AlertsDoc
from contracts.base import derive_id
from processors.alerts.machine import Machine, Observation
from processors.alerts.readings import sensors_of


def stale_sensors(rule, assets) -> list[str]:
    """The sensors a stale rule watches (no sensors and no role: every bound sensor)."""
    if rule.sensors or rule.role:
        return sorted(sensors_of(rule, assets))
    return sorted({b.sensor for b in (assets.bindings if assets else ())})


def plan(doc: AlertsDoc, assets) -> dict:
    """What the evaluation needs loaded (``projections.alerts.EvaluationInputs``): the
    sensors stale rules watch, each forecast series with the sensors whose sum it is,
    how many hours back, the dead-letter window, and how far back to look for a last
    reading."""
    sensors: set[str] = set()
    minutes = [0.0]
    for rule in doc.active("stale"):
        sensors |= set(stale_sensors(rule, assets))
        minutes.append(rule.minutes)
    zones: dict[str, list[str]] = {}
    for b in assets.bindings if assets else ():
        if b.role == "zone_inflow":
            zones.setdefault(f"zone:{b.element}", []).append(b.sensor)
    series: dict[str, list[str]] = {}
    hours = 0
    for rule in doc.active("forecast_deviation"):
        for name in rule.series or sorted(zones):
            series[name] = sorted(zones.get(name, []))
        hours = max(hours, rule.hours)
    windows = [r.window_s for r in doc.active("dead_letters")]
    return {"sensors": sorted(sensors), "series": series, "hours": hours,
            "window_s": max(windows, default=0.0),
            "lookback_s": max(7 * 86400.0, 2 * 60 * max(minutes))}


def evaluate(doc: AlertsDoc, assets, inputs: dict, at: datetime, m: Machine) -> None:
    _stale(doc, assets, inputs.get("latest") or {}, at, m)
    _forecast(doc, inputs.get("forecast") or {}, at, m)
    _dead_letters(doc, inputs.get("dead_letters") or [], at, m)


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _stale(doc, assets, latest: dict, at: datetime, m: Machine) -> None:
    for rule in doc.active("stale"):
        allowance = timedelta(minutes=rule.minutes)
        for sensor in stale_sensors(rule, assets):
            ns = latest.get(sensor)
            last = _utc(ns) if ns is not None else None
            on = last is None or at - last > allowance
            since = last + allowance if last is not None else at
            age = (f"no reading for {(at - last).total_seconds() / 60:.0f} min (last "
                   f"{last:%Y-%m-%d %H:%M:%S} UTC)" if last else "no reading on record")
            m.observe(rule, sensor, at, on=on, off=not on, since=since, seen=Observation(
                f"{sensor}: {age}; expected one every {rule.minutes:g} min",
                value=(at - last).total_seconds() if last else None,
                limit=rule.minutes * 60, unit="s",
                detail={"last_reading": last.isoformat() if last else None}),
                cleared=f"{sensor}: readings again (last {last:%Y-%m-%d %H:%M:%S} UTC)"
                if last else "")


def forecast_series(rule, forecast: dict) -> list[str]:
    return sorted(rule.series) if rule.series else sorted(s for s in forecast
                                                          if s.startswith("zone:"))


def _forecast(doc, forecast: dict, at: datetime, m: Machine) -> None:
    for rule in doc.active("forecast_deviation"):
        for series in forecast_series(rule, forecast):
            f = forecast.get(series)
            if not f or len(f["hours"]) < rule.hours:
                continue
            recent = range(len(f["hours"]) - rule.hours, len(f["hours"]))
            outside, known = [], True
            for k in recent:
                a, lo, hi = f["actual"][k], f[rule.low][k], f[rule.high][k]
                if a is None or lo is None or hi is None:
                    known = False
                    continue
                outside.append(a < lo or a > hi)
            last = recent[-1]
            a, lo, hi = f["actual"][last], f[rule.low][last], f[rule.high][last]
            on = known and all(outside)
            off = None not in (a, lo, hi) and lo <= a <= hi
            start = _utc(f["hours"][recent[0]])
            m.observe(rule, series, at, on=on, off=off, since=start, seen=Observation(
                f"{series}: actual outside the forecast's {rule.low}-{rule.high} band for "
                f"{rule.hours} h since {start:%Y-%m-%d %H:%M} UTC (last hour {a:.4g}, band "
                f"{lo:.4g}..{hi:.4g})" if on else "",
                value=a, limit=hi if (a is not None and hi is not None and a > hi) else lo,
                detail={"hours": rule.hours}),
                cleared=f"{series}: back within the forecast band" if off else "")


def _dead_letters(doc, letters: list, at: datetime, m: Machine) -> None:
    at_ns = int(at.timestamp() * 1e9)
    for rule in doc.active("dead_letters"):
        lo = at_ns - int(rule.window_s * 1e9)
        counts: dict[str, int] = {}
        for ns, consumer in letters:
            if lo < ns <= at_ns:
                counts[consumer] = counts.get(consumer, 0) + 1
        held = {t.subject for t in m.book.of_rule(rule.name)}
        for consumer in sorted(set(counts) | held):
            n = counts.get(consumer, 0)
            m.observe(rule, consumer, at, on=n >= rule.min_count, off=n == 0,
                      seen=Observation(f"{consumer}: {n} messages dead-lettered in the last "
                                       f"{rule.window_s / 60:g} min (`tagus deadletters`)",
                                       value=n, limit=rule.min_count, unit="1"),
                      cleared=f"{consumer}: no dead letters in the last "
                              f"{rule.window_s / 60:g} min")


def digest_due(doc: AlertsDoc, at: datetime, ctx, m: Machine) -> None:
    """Announce the digest window that ended at or before ``at``, if not yet announced.
    Its id depends only on the tenant and the window, whoever asks."""
    minutes = doc.notify.digest_minutes
    if not minutes:
        return
    size = minutes * 60
    end = datetime.fromtimestamp(int(at.timestamp()) // size * size, UTC)
    if m.book.digest_until is not None and m.book.digest_until >= end:
        return
    start = m.book.digest_until or end - timedelta(seconds=size)
    event = AlertDigestDue(
        event_id=derive_id("alert.digest_due", ctx.input.tenant, end.isoformat()),
        tenant=ctx.input.tenant, occurred_at=end, recorded_at=ctx.now,
        causation_id=ctx.input.event_id,
        correlation_id=ctx.input.correlation_id or ctx.input.event_id,
        window_start=start, window_end=end, as_of=m.as_of)
    m.book.apply(event)
    m.out.append(event)
