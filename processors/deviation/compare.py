"""The judgement: did a pump run as the released schedule said, period by period?

For each pump, one sensor speaks for it (the first role present: ``pump_status``, then
``pump_speed``, then ``pump_flow``).  Its readings are grouped by the period of the
schedule in force at each reading (``plan.in_force``); readings in the first
``grace_s`` of a period, or of a schedule's validity when it was released mid-period, are
not judged (pumps take time to start and stop, SCADA to load a new plan).  The rest of
the period's readings decide, by majority:

- ``pump_status`` (1 = running; SI unit ``1``): running when the value is >= 0.5;
- ``pump_flow`` (m3/s): running when the flow exceeds ``on_flow_m3s``;
- ``pump_speed`` (relative speed, 1 = nominal): running above ``on_speed``, and a
  running pump also deviates when its mean speed is more than ``speed_tolerance`` from
  the planned speed.

``observed`` is the share of readings that show the pump running (status, flow), or the
mean relative speed (speed).  Pure: readings in, checks out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from contracts.schedules import ScheduleReleased
from processors.deviation.plan import in_force, period_at, speed

ROLES = ("pump_status", "pump_speed", "pump_flow")  # which sensor speaks for a pump, in order
GRACE_S = 300.0
ON_FLOW_M3S = 0.001  # 1 l/s
ON_SPEED = 0.05
SPEED_TOLERANCE = 0.10


@dataclass(frozen=True)
class PeriodCheck:
    """One pump over one period of a schedule, as one sensor's readings saw it."""

    schedule: ScheduleReleased
    pump: str
    sensor: str
    role: str
    period_start: datetime
    period_end: datetime
    expected: float  # planned relative speed, 0 = off
    observed: float  # share of readings running (status, flow) or mean speed (speed)
    readings: int  # judged readings (after the grace time)
    running: int  # of which showed the pump running

    @property
    def deviated(self) -> bool:
        expected_on = self.expected > 0
        if self.role == "pump_speed":
            observed_on = self.observed > ON_SPEED
            return expected_on != observed_on or (
                expected_on and abs(self.observed - self.expected) > SPEED_TOLERANCE)
        return expected_on != (self.running * 2 >= self.readings)


def _running(role: str, value: float, on_flow_m3s: float) -> bool:
    if role == "pump_status":
        return value >= 0.5
    if role == "pump_flow":
        return value > on_flow_m3s
    return value > ON_SPEED


def speaking_sensors(bindings: Iterable, available: set[str]) -> dict[str, tuple[str, str]]:
    """pump -> (sensor, role): the sensor that speaks for each pump among ``available``."""
    out: dict[str, tuple[str, str]] = {}
    ranked = sorted((b for b in bindings if b.role in ROLES and b.sensor in available),
                    key=lambda b: (ROLES.index(b.role), b.sensor))
    for b in ranked:
        out.setdefault(b.element, (b.sensor, b.role))
    return out


def check_periods(schedules: Sequence[ScheduleReleased], bindings: Iterable,
                  series: Mapping[str, tuple[Sequence[int], Sequence[float]]], *,
                  grace_s: float = GRACE_S, on_flow_m3s: float = ON_FLOW_M3S
                  ) -> list[PeriodCheck]:
    """Checks of every (pump, schedule, period) the readings cover.

    ``series``: sensor -> (UTC epoch ns, SI values); ``bindings``: the tenant's asset
    bindings (``sensor``, ``role``, ``element`` = pump).  Sorted by period, then pump.
    """
    if not schedules:
        return []
    groups: dict[tuple, list] = {}
    for pump, (sensor, role) in speaking_sensors(bindings, set(series)).items():
        timestamps, values = series[sensor]
        for ts_ns, value in zip(timestamps, values, strict=True):
            if value != value:  # NaN: no reading
                continue
            t = datetime.fromtimestamp(ts_ns / 1e9, UTC)
            schedule = in_force(schedules, t)
            if schedule is None:
                continue
            k = period_at(schedule, t)
            expected = speed(schedule, pump, k)
            if expected is None:
                continue  # a pump this schedule does not plan
            start = schedule.start + timedelta(seconds=k * schedule.period_s)
            judged_from = max(start, schedule.occurred_at) + timedelta(seconds=grace_s)
            if t < judged_from:
                continue
            key = (start, pump, schedule.version)
            groups.setdefault(key, [schedule, sensor, role, expected, []])[4].append(value)
    out = []
    for (start, pump, _), (schedule, sensor, role, expected, vals) in sorted(
            groups.items(), key=lambda kv: kv[0]):
        running = sum(_running(role, v, on_flow_m3s) for v in vals)
        observed = (sum(vals) / len(vals) if role == "pump_speed" else running / len(vals))
        out.append(PeriodCheck(
            schedule=schedule, pump=pump, sensor=sensor, role=role, period_start=start,
            period_end=start + timedelta(seconds=schedule.period_s), expected=expected,
            observed=observed, readings=len(vals), running=running))
    return out
