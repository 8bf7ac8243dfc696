"""Which released schedule was in force at an instant, and which of its periods.

A schedule is in force at ``t`` when it had been released by then (``occurred_at <= t``:
SCADA cannot have run a plan it had not received) and ``t`` lies in its horizon
``[start, start + len(speeds) * period_s)``; of several, the highest ``version`` (the
tenant's latest release) wins.  Times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from contracts.schedules import ScheduleReleased


def periods(schedule: ScheduleReleased) -> int:
    """Number of periods: the longest pump plan (all have the same length in practice)."""
    return max((len(p.speeds) for p in schedule.pumps), default=0)


def schedule_end(schedule: ScheduleReleased) -> datetime:
    return schedule.start + timedelta(seconds=periods(schedule) * schedule.period_s)


def in_force(schedules: Iterable[ScheduleReleased], t: datetime) -> ScheduleReleased | None:
    best = None
    for s in schedules:
        if s.occurred_at <= t and s.start <= t < schedule_end(s):
            if best is None or s.version > best.version:
                best = s
    return best


def period_at(schedule: ScheduleReleased, t: datetime) -> int:
    """Index of the period of ``schedule`` that contains ``t`` (``t`` inside the horizon)."""
    return int((t - schedule.start).total_seconds() // schedule.period_s)


def speed(schedule: ScheduleReleased, pump: str, k: int) -> float | None:
    """Relative speed of ``pump`` in period ``k`` (0 = off); None if the schedule does not
    plan that pump (or not that far)."""
    for p in schedule.pumps:
        if p.pump == pump:
            return float(p.speeds[k]) if 0 <= k < len(p.speeds) else None
    return None
