"""Rules on readings as they arrive: thresholds (hysteresis, minimum duration) and rates
of change (pure).

Values are SI (``readings.normalised``).  A reading older than the rule's ``max_age_s``
when its batch was recorded is not judged: an upload of last month's files does not
raise last month's alarms.  A rate of change compares each reading with the sensor's
reading ``window_s`` before it (at most twice that far back), from the same batch or
from ``history`` (the stored readings before the batch, loaded by the runner).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta

from contracts.alerts import AlertsDoc, RateOfChangeRule, ThresholdRule, quantity
from contracts.readings import ReadingsNormalised
from processors.alerts.machine import Machine, Observation


def sensors_of(rule, assets) -> set[str]:
    """The sensors a rule names, or those bound with its role."""
    named = set(getattr(rule, "sensors", ()) or ())
    role = getattr(rule, "role", None)
    if role:
        named |= {b.sensor for b in (assets.bindings if assets else ()) if b.role == role}
    return named


def rate_sensors(doc: AlertsDoc | None, assets, present: Iterable[str]) -> dict[str, float]:
    """{sensor: look-back in s} the rate rules need history for, among ``present``."""
    out: dict[str, float] = {}
    present = set(present)
    for rule in doc.active("rate_of_change") if doc else ():
        for s in sensors_of(rule, assets) & present:
            out[s] = max(out.get(s, 0.0), 2 * rule.window_s)
    return out


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def evaluate(event: ReadingsNormalised, doc: AlertsDoc, assets, machine: Machine,
             history: Mapping[str, tuple[list[int], list[float]]]) -> None:
    by_sensor = {s.sensor_id: s for s in event.series}
    for rule in doc.active("threshold", "rate_of_change"):
        oldest = event.recorded_at - timedelta(seconds=rule.max_age_s)
        for sensor in sorted(sensors_of(rule, assets) & set(by_sensor)):
            series = by_sensor[sensor]
            points = sorted(zip(series.timestamps_ns, series.values, strict=True))
            if isinstance(rule, ThresholdRule):
                _threshold(rule, sensor, series.unit, points, oldest, machine)
            else:
                _rate(rule, sensor, series.unit, points, history.get(sensor, ([], [])),
                      oldest, machine)


def _threshold(rule: ThresholdRule, sensor: str, unit: str, points, oldest: datetime,
               machine: Machine) -> None:
    direction, limit, back = rule.limits()
    for ts, v in points:
        t = _utc(ts)
        if t < oldest or v != v:  # too old to judge, or NaN
            continue
        on = v > limit if direction == "above" else v < limit
        off = v <= back if direction == "above" else v >= back
        machine.observe(rule, sensor, t, on=on, off=off, seen=Observation(
            f"{sensor} at {v:.6g} {unit}, {direction} the limit {_shown(rule, direction)}",
            value=v, limit=limit, unit=unit,
            detail={"direction": direction, "clear_at": back}),
            cleared=f"{sensor} back at {v:.6g} {unit} (clears at {back:.6g} {unit})")


def _rate(rule: RateOfChangeRule, sensor: str, unit: str, points, history,
          oldest: datetime, machine: Machine) -> None:
    rise = quantity(rule.max_rise, difference=True)
    fall = quantity(rule.max_fall, difference=True)
    window_ns = int(rule.window_s * 1e9)
    times = list(history[0]) + [ts for ts, _ in points]
    values = list(history[1]) + [v for _, v in points]
    for k, (ts, v) in enumerate(points, start=len(history[0])):
        t = _utc(ts)
        # the latest reading at or before ts - window, no older than ts - 2 * window
        j = bisect.bisect_right(times, ts - window_ns, 0, k) - 1
        if t < oldest or v != v or j < 0 or times[j] < ts - 2 * window_ns:
            continue
        change = v - values[j]
        on = (rise is not None and change > rise) or (fall is not None and -change > fall)
        minutes = (ts - times[j]) / 6e10
        machine.observe(rule, sensor, t, on=on, off=not on, seen=Observation(
            f"{sensor} changed by {change:+.6g} {unit} in {minutes:.0f} min "
            f"(limits: rise {rule.max_rise}, fall {rule.max_fall})",
            value=change, limit=rise if change > 0 else fall, unit=unit,
            detail={"window_s": rule.window_s, "from": values[j], "to": v}),
            cleared=f"{sensor} changing within limits again ({change:+.6g} {unit} in "
                    f"{minutes:.0f} min)")


def _shown(rule: ThresholdRule, direction: str) -> str:
    raw = rule.above if direction == "above" else rule.below
    return str(raw) if isinstance(raw, str) else f"{raw:g}"
