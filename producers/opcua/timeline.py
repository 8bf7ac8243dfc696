"""What a pump is to do now and when that changes, over a tenant's released schedules.

The same rule as the deviation processor's (``processors/deviation/plan.py``; producers
may not import processors, and the rule is four lines): at ``t`` the schedule in force is
the highest version released by then (``occurred_at <= t``) whose horizon contains ``t``.
Pure; times are aware UTC datetimes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from contracts.schedules import ScheduleReleased


def schedule_end(s: ScheduleReleased) -> datetime:
    n = max((len(p.speeds) for p in s.pumps), default=0)
    return s.start + timedelta(seconds=n * s.period_s)


def in_force(schedules: Sequence[ScheduleReleased], t: datetime) -> ScheduleReleased | None:
    live = [s for s in schedules if s.occurred_at <= t and s.start <= t < schedule_end(s)]
    return max(live, key=lambda s: s.version, default=None)


def command(schedules: Sequence[ScheduleReleased], pump: str, t: datetime) -> float | None:
    """The relative speed ``pump`` is to run at at ``t`` (0 = off); None when no schedule
    in force plans it (SCADA's own control applies)."""
    s = in_force(schedules, t)
    if s is None:
        return None
    k = int((t - s.start).total_seconds() // s.period_s)
    for p in s.pumps:
        if p.pump == pump and k < len(p.speeds):
            return float(p.speeds[k])
    return None


def next_change(schedules: Sequence[ScheduleReleased], pump: str, now: datetime
                ) -> tuple[datetime, float | None] | None:
    """(when, new command) of the first change of ``pump``'s command after ``now``, or
    None when none of the schedules changes it any more."""
    instants = set()
    for s in schedules:
        instants.update((s.occurred_at, s.start, schedule_end(s)))
        n = max((len(p.speeds) for p in s.pumps), default=0)
        instants.update(s.start + timedelta(seconds=k * s.period_s) for k in range(n))
    current = command(schedules, pump, now)
    for t in sorted(i for i in instants if i > now):
        new = command(schedules, pump, t)
        if new != current:
            return t, new
    return None
