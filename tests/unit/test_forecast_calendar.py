"""Local calendars of UTC series: DST weeks, wall-clock stamps, holidays, day types."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from processors.forecast.calendar import (
    DAYTYPE_SATURDAY, DAYTYPE_SUNDAY, DAYTYPE_WORKDAY, calendar_features, holiday_dates,
    local_week_hours, wall_clock_to_utc)

ROME = "Europe/Rome"


def _week(monday: str) -> pd.DatetimeIndex:
    start = pd.Timestamp(monday).tz_localize(ROME)
    end = (pd.Timestamp(monday) + pd.Timedelta(days=7)).tz_localize(ROME)
    return pd.date_range(start.tz_convert("UTC"), end.tz_convert("UTC"), freq="h", inclusive="left")


@pytest.mark.parametrize("monday, hours, hour2", [
    ("2021-03-22", 167, 6),   # clocks jump 02:00 -> 03:00 on Sunday 28 March: no 02:00 that day
    ("2021-10-25", 169, 8),   # clocks fall back 03:00 -> 02:00 on Sunday 31 October: two 02:00
    ("2021-07-05", 168, 7),
])
def test_dst_weeks_have_167_168_169_local_hours(monday, hours, hour2):
    idx = _week(monday)
    assert local_week_hours(date.fromisoformat(monday), ROME) == hours
    assert len(idx) == hours
    cal = calendar_features(idx, ROME, set())
    assert (cal["hour"] == 2).sum() == hour2
    assert (cal["hour"] == 3).sum() == 7
    assert cal["dow"].tolist() == sorted(cal["dow"].tolist())  # Monday .. Sunday, in order
    assert np.bincount(cal["dow"], minlength=7)[:6].tolist() == [24] * 6
    assert (cal["dow"] == 6).sum() == hours - 144


def test_calendar_hours_follow_local_time_not_utc():
    idx = pd.date_range("2021-07-05 00:00", periods=3, freq="h", tz="UTC")
    cal = calendar_features(idx, ROME, set())
    assert cal["hour"].tolist() == [2, 3, 4]  # CEST = UTC+2
    assert cal["utc_offset_h"].tolist() == [2.0, 2.0, 2.0]
    winter = calendar_features(pd.DatetimeIndex([pd.Timestamp("2021-01-04 23:30", tz="UTC")]), ROME, set())
    assert winter["hour"].tolist() == [0] and winter["dow"].tolist() == [1]  # already Tuesday


def test_holidays_are_sunday_like_and_bridges_marked():
    # 2 June 2022 is a Thursday holiday: Friday 3 June is a bridge to the weekend
    idx = pd.date_range(pd.Timestamp("2022-06-01 12:00", tz=ROME), periods=5, freq="24h").tz_convert("UTC")
    cal = calendar_features(idx, ROME, {date(2022, 6, 2)})
    assert cal["daytype"].tolist() == [DAYTYPE_WORKDAY, DAYTYPE_SUNDAY, DAYTYPE_WORKDAY,
                                       DAYTYPE_SATURDAY, DAYTYPE_SUNDAY]
    assert cal["holiday"].tolist() == [0, 1, 0, 0, 0]
    assert cal["bridge"].tolist() == [0, 0, 1, 0, 0]


def test_wall_clock_stamps_with_dst_map_to_consecutive_utc_hours():
    autumn = ["31/10/2021 00:00", "31/10/2021 01:00", "31/10/2021 02:00", "31/10/2021 02:00",
              "31/10/2021 03:00"]
    spring = ["28/03/2021 01:00", "28/03/2021 03:00"]
    naive = pd.to_datetime(autumn + spring, format="%d/%m/%Y %H:%M")
    out = wall_clock_to_utc(naive, ROME)
    assert not out.bad.any()
    assert [t.strftime("%m-%d %H") for t in out.utc] == [
        "10-30 22", "10-30 23", "10-31 00", "10-31 01", "10-31 02", "03-28 00", "03-28 01"]


def test_wall_clock_flags_nonexistent_and_surplus_stamps():
    naive = pd.to_datetime(["2021-03-28 02:00", "2021-07-01 10:00", "2021-07-01 10:00",
                            "2021-10-31 02:00", "2021-10-31 02:00", "2021-10-31 02:00"])
    out = wall_clock_to_utc(naive, ROME)
    assert out.bad.tolist() == [True, False, True, False, False, True]
    assert out.reasons == ("nonexistent_local_time", "repeated_local_time", "repeated_local_time")
    assert out.utc[0] is pd.NaT or pd.isna(out.utc[0])


def test_holiday_dates_from_package_plus_tenant_days():
    days = holiday_dates("IT", [2022], extra=[date(2022, 11, 3)])
    assert date(2022, 6, 2) in days and date(2022, 12, 25) in days  # national
    assert date(2022, 11, 3) in days  # the tenant's patron saint
    assert date(2022, 6, 3) not in days
    assert holiday_dates(None, [2022], extra=[date(2022, 1, 2)]) == frozenset({date(2022, 1, 2)})
