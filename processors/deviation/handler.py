"""Processor ``deviation``: normalised readings of pump-bound sensors against the released
schedule in force -> ``schedule.deviated`` ("pump P1 should have been on from 03:00 and
was off").

Resources (loaded by the runner): ``config`` (the tenant's zone and asset bindings, as of
the batch) and ``schedules`` (the tenant's released schedules known when the batch was
recorded, ``ops/schedule_loader.py``).  One event per pump and period that deviated in
this batch; its id is a function of (tenant, schedule, pump, period, sensor) only, so a
period judged again by a later batch or a replay has the same id: consumers that count
deviations count distinct ids (``adherence`` does the counting for a KPI).
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

import msgspec

from bus.components import Context
from contracts.base import derive_id
from contracts.readings import ReadingsNormalised
from contracts.schedules import ScheduleDeviated
from processors.deviation.compare import ROLES, PeriodCheck, check_periods

NAME = "deviation"
ACCEPTS = (ReadingsNormalised,)
NEEDS = ("config", "schedules")


def handle(event: ReadingsNormalised, ctx: Context) -> list[ScheduleDeviated]:
    config = ctx.resources["config"]
    assets = config.get("assets")
    schedules = ctx.resources.get("schedules") or []
    if assets is None or not schedules:
        return []
    bound = {b.sensor for b in assets.bindings if b.role in ROLES}
    series = {s.sensor_id: (s.timestamps_ns, s.values) for s in event.series
              if s.sensor_id in bound}
    if not series:
        return []
    tenant = config.get("tenant")
    zone = ZoneInfo(tenant.timezone if tenant else "UTC")
    out = []
    for check in check_periods(schedules, assets.bindings, series):
        if not check.deviated:
            continue
        derived = ctx.derive(
            ScheduleDeviated, key=f"{check.pump}/{check.period_start.isoformat()}",
            schedule_id=check.schedule.schedule_id, pump=check.pump,
            period_start=check.period_start, expected=check.expected,
            observed=check.observed, sensor=check.sensor, detail=describe(check, zone))
        out.append(msgspec.structs.replace(derived, event_id=derive_id(
            NAME, event.tenant, check.schedule.schedule_id, check.pump,
            check.period_start.isoformat(), check.sensor)))
    return out


def _state(speed: float) -> str:
    return "off" if speed <= 0 else ("on" if speed >= 1 else f"on at speed {speed:.2f}")


def describe(check: PeriodCheck, zone: ZoneInfo) -> str:
    """The operator's sentence, in the tenant's local time."""
    start, end = check.period_start.astimezone(zone), check.period_end.astimezone(zone)
    span = f"from {start:%Y-%m-%d %H:%M} to {end:%H:%M} ({zone.key})"
    planned = (f"pump {check.pump} should have been {_state(check.expected)} {span} "
               f"(schedule version {check.schedule.version})")
    if check.role == "pump_speed":
        seen = f"ran at mean speed {check.observed:.2f}"
    else:
        seen = "was on" if check.running * 2 >= check.readings else "was off"
    return (f"{planned} and {seen}: {check.running} of {check.readings} readings of "
            f"{check.sensor} ({check.role}) show it running")
