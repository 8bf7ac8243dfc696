"""Cron slots in a tenant's zone: the DST rule, catch-up choices, clocks (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from contracts.errors import SetupError
from producers.scheduler.clock import FastClock, WindowClock, clock_from_spec
from producers.scheduler.slots import (
    due_slots, instants, is_fixed_time, next_slot, slot_stamp, slots_between,
)

ROME = "Europe/Rome"
MADRID = "Europe/Madrid"
SPRING = (2025, 3, 30)  # 02:00 -> 03:00 in the EU
AUTUMN = (2025, 10, 26)  # 03:00 -> 02:00


def local_day(zone: str, y: int, m: int, d: int) -> tuple[datetime, datetime]:
    """(just before local midnight starting the day, just before the next one), UTC."""
    tz = ZoneInfo(zone)
    start = datetime(y, m, d, tzinfo=tz).astimezone(UTC)
    end = (datetime(y, m, d, tzinfo=tz) + timedelta(days=1)).astimezone(UTC)
    tick = timedelta(microseconds=1)
    return start - tick, end - tick


def walls(slots: list[datetime], zone: str) -> list[str]:
    return [s.astimezone(ZoneInfo(zone)).strftime("%H:%M%z") for s in slots]


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


# ---------------------------------------------------------------- the DST rule


@pytest.mark.parametrize("zone", [ROME, MADRID])
def test_a_daily_0230_job_runs_once_at_the_jump_on_the_spring_day(zone):
    slots = slots_between("30 2 * * *", zone, *local_day(zone, *SPRING))
    assert slots == [utc(2025, 3, 30, 1, 0)]  # 02:30 does not exist: 03:00 local
    assert walls(slots, zone) == ["03:00+0200"]


@pytest.mark.parametrize("zone", [ROME, MADRID])
def test_a_daily_0230_job_runs_once_on_the_autumn_day_at_the_first_0230(zone):
    slots = slots_between("30 2 * * *", zone, *local_day(zone, *AUTUMN))
    assert slots == [utc(2025, 10, 26, 0, 30)]
    assert walls(slots, zone) == ["02:30+0200"]  # summer time, the first of the two


def test_a_daily_job_runs_once_on_ordinary_days_around_the_changes():
    for day in [(2025, 3, 29), (2025, 3, 31), (2025, 10, 25), (2025, 10, 27)]:
        assert len(slots_between("30 2 * * *", ROME, *local_day(ROME, *day))) == 1, day
    week = slots_between("30 2 * * *", ROME, local_day(ROME, 2025, 3, 27)[0],
                         local_day(ROME, 2025, 4, 2)[1])
    assert walls(week, ROME) == ["02:30+0100"] * 3 + ["03:00+0200"] + ["02:30+0200"] * 3


@pytest.mark.parametrize("zone", [ROME, MADRID])
def test_an_hourly_job_has_23_slots_in_spring_25_in_autumn_and_24_otherwise(zone):
    spring = slots_between("0 * * * *", zone, *local_day(zone, *SPRING))
    autumn = slots_between("0 * * * *", zone, *local_day(zone, *AUTUMN))
    ordinary = slots_between("0 * * * *", zone, *local_day(zone, 2025, 6, 1))
    assert (len(spring), len(autumn), len(ordinary)) == (23, 25, 24)
    assert "02:00+0100" not in walls(spring, zone) and "03:00+0200" in walls(spring, zone)
    assert walls(autumn, zone)[2:4] == ["02:00+0200", "02:00+0100"]
    for day in (spring, autumn, ordinary):  # one hour apart, every one
        assert all(b - a == timedelta(hours=1) for a, b in zip(day, day[1:]))


def test_clock_following_and_fixed_time_jobs():
    assert is_fixed_time("30 2 * * *") and is_fixed_time("0 1-3 * * *")
    assert is_fixed_time("15 6,18 * * 1-5")
    assert not is_fixed_time("0 * * * *") and not is_fixed_time("*/15 2 * * *")
    assert not is_fixed_time("0 */2 * * *") and not is_fixed_time("0 0-23 * * *")
    # every 15 min within 02:xx follows the clock: nothing in the gap, twice in autumn
    assert slots_between("*/15 2 * * *", ROME, *local_day(ROME, *SPRING)) == []
    assert len(slots_between("*/15 2 * * *", ROME, *local_day(ROME, *AUTUMN))) == 8


def test_two_fixed_times_landing_on_the_jump_are_one_slot():
    slots = slots_between("0 1-3 * * *", ROME, *local_day(ROME, *SPRING))
    assert walls(slots, ROME) == ["01:00+0100", "03:00+0200"]  # 02:00 and 03:00: one


def test_instants_of_a_wall_clock_time():
    tz = ZoneInfo(ROME)
    assert instants(datetime(2025, 3, 30, 2, 30), tz, fixed=False) == []
    assert instants(datetime(2025, 3, 30, 2, 30), tz, fixed=True) == [utc(2025, 3, 30, 1)]
    assert instants(datetime(2025, 10, 26, 2, 30), tz, fixed=False) == [
        utc(2025, 10, 26, 0, 30), utc(2025, 10, 26, 1, 30)]
    assert instants(datetime(2025, 6, 1, 2, 30), tz, fixed=True) == [utc(2025, 6, 1, 0, 30)]


def test_a_zone_with_a_half_hour_shift_and_the_southern_hemisphere():
    # Lord Howe moves 30 min (02:00 -> 02:30 on 5 Oct 2025): 02:00 does not exist there
    # either, 02:45 does; Sydney springs forward in October
    lord_howe = slots_between("0,45 * * * *", "Australia/Lord_Howe",
                              *local_day("Australia/Lord_Howe", 2025, 10, 5))
    assert len(lord_howe) == 47 and "02:45+1100" in walls(lord_howe, "Australia/Lord_Howe")
    assert walls(slots_between("15 2 * * *", "Australia/Lord_Howe",
                               *local_day("Australia/Lord_Howe", 2025, 10, 5)),
                 "Australia/Lord_Howe") == ["02:30+1100"]
    assert len(slots_between("0 * * * *", "Australia/Sydney",
                             *local_day("Australia/Sydney", 2025, 10, 5))) == 23


def test_next_slot_and_window_bounds():
    assert next_slot("30 2 * * *", ROME, utc(2025, 3, 29, 12)) == utc(2025, 3, 30, 1)
    assert next_slot("0 * * * *", "UTC", utc(2025, 1, 1, 10)) == utc(2025, 1, 1, 11)
    assert next_slot("0 0 29 2 *", "UTC", utc(2025, 3, 1)) == utc(2028, 2, 29)
    # (after, until]: the slot at ``after`` is excluded, the one at ``until`` included
    assert slots_between("0 * * * *", "UTC", utc(2025, 1, 1, 10), utc(2025, 1, 1, 12)) == [
        utc(2025, 1, 1, 11), utc(2025, 1, 1, 12)]
    assert slots_between("0 * * * *", "UTC", utc(2025, 1, 1, 12), utc(2025, 1, 1, 12)) == []
    with pytest.raises(ValueError, match="timezone-aware"):
        slots_between("0 * * * *", "UTC", datetime(2025, 1, 1), utc(2025, 1, 2))
    assert slot_stamp(utc(2025, 3, 30, 1)) == "20250330T010000Z"


# ---------------------------------------------------------------- catch-up after downtime


T0 = utc(2025, 6, 1, 9, 0)  # last slot requested before a 3-hour outage
BACK = utc(2025, 6, 1, 12, 20)  # the scheduler is back (10:00, 11:00, 12:00 missed)


def test_catch_up_after_a_three_hour_outage():
    missed = [utc(2025, 6, 1, 10), utc(2025, 6, 1, 11), utc(2025, 6, 1, 12)]
    assert due_slots("0 * * * *", ROME, "all", T0, BACK) == missed
    assert due_slots("0 * * * *", ROME, "latest", T0, BACK) == missed[-1:]
    assert due_slots("0 * * * *", ROME, "none", T0, BACK) == []


def test_catch_up_none_still_requests_the_slot_of_the_moment():
    just = utc(2025, 6, 1, 12, 0, 30)
    assert due_slots("0 * * * *", ROME, "none", T0, just) == [utc(2025, 6, 1, 12)]
    assert due_slots("0 * * * *", ROME, "none", T0, just, late_after_s=10) == []


def test_a_brand_new_schedule_does_not_catch_up_and_a_horizon_bounds_all():
    assert due_slots("0 * * * *", ROME, "all", None, BACK) == []
    assert due_slots("0 * * * *", ROME, "all", T0, BACK, horizon=timedelta(hours=1.5)) == [
        utc(2025, 6, 1, 11), utc(2025, 6, 1, 12)]
    assert due_slots("0 * * * *", ROME, "all", BACK, BACK) == []
    with pytest.raises(ValueError, match="catch_up"):
        due_slots("0 * * * *", ROME, "sometimes", T0, BACK)


# ---------------------------------------------------------------- clocks


def test_fast_clock_runs_speed_times_faster():
    import time as _time

    t0 = _time.time()
    c = FastClock(utc(2025, 3, 30), 3600, t0=t0)
    assert c.seconds_until(utc(2025, 3, 30, 5)) == pytest.approx(t0 + 5 - _time.time(),
                                                                abs=0.01)
    assert (c.now() - utc(2025, 3, 30)).total_seconds() == pytest.approx(
        (_time.time() - t0) * 3600, abs=36)
    assert c.seconds_until(utc(2025, 3, 29)) == 0.0


def test_window_clock_maps_both_ways():
    start = utc(2025, 1, 1, 0, 59, 58)
    c = WindowClock(t0=1000.0, start=start, period_s=720, window_s=6)
    assert c.at_real(1000.0) == start
    assert c.at_real(1002.0) == utc(2025, 1, 1, 1, 0)  # the slot, 2 s into window 0
    assert c.at_real(1006.0) == start + timedelta(seconds=720)  # window 1 begins
    assert c.at_real(1008.5) == utc(2025, 1, 1, 1, 12, 0, 500000)
    assert c.real_at(utc(2025, 1, 1, 1, 12)) == 1008.0
    assert c.real_at(utc(2025, 1, 1, 1, 5)) == 1006.0  # skipped over: next window
    for real in (999.0, 1000.0, 1003.3, 1011.9, 1100.0):
        assert c.real_at(c.at_real(real)) == pytest.approx(real)


def test_clock_spec():
    assert type(clock_from_spec(None)).__name__ == "SystemClock"
    assert type(clock_from_spec("")).__name__ == "SystemClock"
    fast = clock_from_spec("fast,start=2025-03-30T00:00:00Z,speed=60")
    assert isinstance(fast, FastClock) and fast.speed == 60
    w = clock_from_spec("window,t0=5,start=2025-03-30T00:59:58Z,period=720,window=6")
    assert isinstance(w, WindowClock) and w.period_s == 720
    with pytest.raises(SetupError, match="TAGUS_SCHEDULER_CLOCK"):
        clock_from_spec("fast,speed=60")
    with pytest.raises(SetupError, match="expected"):
        clock_from_spec("slow,start=2025-03-30T00:00:00Z")
