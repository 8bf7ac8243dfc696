"""Deviation: pump readings judged against the released schedule in force (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bus.components import Context
from contracts.base import utc_now
from contracts.config import AssetsDoc, TenantDoc
from contracts.readings import ReadingsNormalised, Series
from contracts.schedules import ScheduleDeviated
from processors.deviation import adherence, check_periods, in_force
from processors.deviation import handler as deviation
from tests.schedule_support import released

T = "dev-t"
START = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)  # 02:00 in Rome (CEST)
ASSETS = AssetsDoc.model_validate({"bindings": [
    {"sensor": "P1_status", "role": "pump_status", "element": "P1"},
    {"sensor": "P1_flow", "role": "pump_flow", "element": "P1"},
    {"sensor": "P2_speed", "role": "pump_speed", "element": "P2"},
    {"sensor": "T1", "role": "tank_level", "element": "T1"}]})
SCHEDULE = released(T, 4, START, {"P1": [0.0, 1.0, 1.0, 0.0], "P2": [0.8, 0.8, 0.0, 0.0]})


def every_5_min(hour: int, values: list[float] | float, start_min: int = 0) -> tuple:
    """Timestamps (ns) every 5 minutes from START + hour:start_min, one per value."""
    n = len(values) if isinstance(values, list) else 12 - start_min // 5
    vals = values if isinstance(values, list) else [values] * n
    t0 = START + timedelta(hours=hour, minutes=start_min)
    return ([int((t0 + timedelta(minutes=5 * i)).timestamp()) * 10**9 for i in range(n)], vals)


def batch(series: dict[str, tuple]) -> ReadingsNormalised:
    now = utc_now()
    return ReadingsNormalised(
        event_id=f"batch-{sorted(series)}", tenant=T, occurred_at=now, recorded_at=now,
        source="test", series=[Series(sensor_id=s, unit="1", timestamps_ns=ts, values=v)
                               for s, (ts, v) in series.items()])


def run(event, schedules=(SCHEDULE,), tz="Europe/Rome"):
    config = {"assets": ASSETS, "tenant": TenantDoc(display_name="T", timezone=tz)}
    ctx = Context(processor=deviation.NAME, now=utc_now(), input=event,
                  resources={"config": config, "schedules": list(schedules)})
    return deviation.handle(event, ctx)


def test_a_pump_that_stayed_off_when_it_should_have_run_is_one_deviation():
    planted = every_5_min(1, 0.0)  # 01:00-02:00 UTC: P1 planned on, status says off
    (event,) = run(batch({"P1_status": planted}))
    assert isinstance(event, ScheduleDeviated)
    assert (event.pump, event.sensor, event.expected, event.observed) == ("P1", "P1_status",
                                                                          1.0, 0.0)
    assert event.period_start == START + timedelta(hours=1)
    assert event.schedule_id == SCHEDULE.schedule_id
    assert event.detail.startswith("pump P1 should have been on from 2024-05-01 03:00 to "
                                   "04:00 (Europe/Rome) (schedule version 4) and was off")
    assert "0 of 11 readings of P1_status" in event.detail  # 01:00 itself is in the grace time


def test_readings_that_follow_the_schedule_raise_nothing():
    assert run(batch({"P1_status": every_5_min(1, 1.0), "P2_speed": every_5_min(1, 0.79)})) == []
    assert run(batch({"P1_flow": every_5_min(2, 0.05)})) == []  # 50 l/s: running, as planned


def test_the_grace_time_after_a_change_is_not_judged():
    # 01:00-01:04: the pump is starting (still off), then runs
    late_start = every_5_min(1, [0.0] + [1.0] * 11)
    assert run(batch({"P1_status": late_start})) == []
    assert run(batch({"P1_status": every_5_min(1, [0.0], start_min=0)})) == []


def test_a_schedule_is_not_applied_to_readings_from_before_its_release():
    late = released(T, 5, START, {"P1": [1.0] * 4}, released_at=START + timedelta(hours=3))
    off = every_5_min(0, 0.0)  # v5 would say on, but v4 was in force then (off: fine)
    assert run(batch({"P1_status": off}), schedules=(SCHEDULE, late)) == []
    assert in_force([SCHEDULE, late], START + timedelta(hours=3, minutes=1)) is late
    assert in_force([SCHEDULE, late], START + timedelta(hours=5)) is None  # past both horizons


def test_status_speaks_for_a_pump_before_flow_and_speed_within_a_tolerance():
    # status says off (deviates), flow says on: the status sensor decides
    (event,) = run(batch({"P1_status": every_5_min(1, 0.0), "P1_flow": every_5_min(1, 0.05)}))
    assert event.sensor == "P1_status"
    (slow,) = run(batch({"P2_speed": every_5_min(0, 0.6)}))  # planned 0.8, ran 0.6
    assert slow.expected == 0.8 and slow.observed == pytest.approx(0.6)
    assert "ran at mean speed 0.60" in slow.detail


def test_the_event_id_depends_on_the_period_not_on_the_batch():
    first = run(batch({"P1_status": every_5_min(1, 0.0)}))
    again = run(batch({"P1_status": every_5_min(1, 0.0, start_min=30), "T1": ([], [])}))
    assert [e.event_id for e in first] == [e.event_id for e in again]


def test_adherence_counts_each_pump_period_once():
    series = {"P1_status": ([*every_5_min(1, 0.0)[0], *every_5_min(2, 1.0)[0]],
                            [0.0] * 12 + [1.0] * 12),
              "P1_flow": every_5_min(1, 0.0)}
    checks = check_periods([SCHEDULE], ASSETS.bindings, series)
    again = check_periods([SCHEDULE], ASSETS.bindings, {"P1_status": every_5_min(1, 0.0)})
    p1, network = adherence(checks + again)
    assert (p1.subject, p1.periods, p1.deviated, p1.ratio) == ("P1", 2, 1, 0.5)
    assert (network.subject, network.periods, network.deviated) == ("network", 2, 1)
