"""Local-time calendars for hourly series kept in UTC.

Series are stored and computed on a UTC hourly grid; what people do follows their wall
clock, so every calendar feature (hour of day, weekday, holiday, day type) comes from
local time in the series' IANA zone.  A local day is then 23, 24 or 25 hours long, and
a local week 167, 168 or 169.

``wall_clock_to_utc`` turns the text timestamps of utility files (local time, the
spring-forward hour absent, the autumn hour written twice with no marker) into UTC.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

DAYTYPE_WORKDAY, DAYTYPE_SATURDAY, DAYTYPE_SUNDAY = 0, 1, 2  # holidays count as Sundays
DAYTYPES = (DAYTYPE_WORKDAY, DAYTYPE_SATURDAY, DAYTYPE_SUNDAY)


@dataclass(frozen=True)
class LocalisedTimes:
    """UTC instants of local wall-clock stamps; ``bad`` marks stamps with no instant.

    ``bad`` is True where the stamp does not exist locally (inside the spring-forward
    gap) or repeats beyond what the zone allows (a third 02:00 in autumn, or any
    repeat of an unambiguous stamp).  ``utc`` is NaT there.
    """

    utc: pd.DatetimeIndex
    bad: np.ndarray
    reasons: tuple[str, ...]


def wall_clock_to_utc(wall: Iterable, tz: str) -> LocalisedTimes:
    """Map naive local stamps (in file order) to UTC.

    An ambiguous stamp (the autumn hour that happens twice) is summer time the first time
    it appears and standard time the second; a single ambiguous stamp is taken as summer
    time.  Nonexistent stamps and surplus repeats are flagged, never shifted silently.
    """
    naive = pd.DatetimeIndex(pd.to_datetime(list(wall) if not isinstance(wall, pd.Index)
                                            else wall))
    if naive.tz is not None:
        raise ValueError(f"expected naive local stamps, found zone {naive.tz}")
    naive = naive.as_unit("ns")
    n = len(naive)
    occurrence = pd.Series(np.arange(n)).groupby(naive.asi8).cumcount().to_numpy()
    summer = naive.tz_localize(tz, ambiguous=np.ones(n, bool), nonexistent="NaT")
    winter = naive.tz_localize(tz, ambiguous=np.zeros(n, bool), nonexistent="NaT")
    ambiguous = ~summer.isna() & (summer != winter)
    utc = summer.tz_convert("UTC").asi8.copy()
    second = ambiguous & (occurrence == 1)
    utc[second] = winter.tz_convert("UTC").asi8[second]
    nat = np.iinfo(np.int64).min
    reasons = np.array([""] * n, dtype=object)
    missing_local = summer.isna() & ~naive.isna()
    reasons[missing_local] = "nonexistent_local_time"
    surplus = (occurrence >= 2) | ((occurrence == 1) & ~ambiguous)
    reasons[surplus & ~missing_local] = "repeated_local_time"
    bad = missing_local | surplus | naive.isna()
    utc[bad] = nat
    return LocalisedTimes(utc=pd.DatetimeIndex(utc, tz="UTC").as_unit("ns"), bad=np.asarray(bad),
                          reasons=tuple(reasons[bad]))


def holiday_dates(country: str | None, years: Iterable[int], *, subdiv: str | None = None,
                  extra: Iterable[date] = ()) -> frozenset[date]:
    """Public holidays of ``country``/``subdiv`` (the ``holidays`` package) plus ``extra``
    (tenant-specific days such as a patron saint's).  ``country=None`` gives ``extra`` only."""
    days = set(extra)
    if country:
        import holidays as _holidays

        days |= set(_holidays.country_holidays(country, subdiv=subdiv, years=sorted(set(years))))
    return frozenset(days)


def calendar_features(index: pd.DatetimeIndex, tz: str, holidays: Iterable[date]) -> pd.DataFrame:
    """Calendar columns for a UTC index, from local time in ``tz``.

    Columns: ``hour`` (local hour of day 0-23), ``dow`` (0 Monday .. 6 Sunday),
    ``holiday`` (0/1), ``daytype`` (0 workday, 1 Saturday, 2 Sunday or holiday),
    ``bridge`` (1 on a workday between a holiday and a weekend: a common day off),
    ``day`` (local date as days since 1970-01-01), ``doy`` (day of year 1-366),
    ``utc_offset_h`` (local minus UTC in hours).
    """
    idx = _utc_index(index)
    local = idx.tz_convert(tz)
    day = (local.tz_localize(None).normalize().asi8 // 86_400_000_000_000).astype(np.int64)
    days = np.unique(day)
    hol_days = {np.int64((pd.Timestamp(d) - pd.Timestamp(0)).days) for d in holidays}
    holiday_of_day = np.isin(days, np.fromiter(hol_days, np.int64, len(hol_days)))
    dow_of_day = ((days + 3) % 7).astype(np.int64)  # 1970-01-01 was a Thursday
    daytype_of_day = np.where(holiday_of_day | (dow_of_day == 6), DAYTYPE_SUNDAY,
                              np.where(dow_of_day == 5, DAYTYPE_SATURDAY, DAYTYPE_WORKDAY))
    bridge_of_day = _bridges(days, daytype_of_day, hol_days)
    pos = np.searchsorted(days, day)
    offset = (local.tz_localize(None).asi8 - idx.asi8) / 3.6e12
    return pd.DataFrame({
        "hour": local.hour.to_numpy(np.int64),
        "dow": dow_of_day[pos],
        "holiday": holiday_of_day[pos].astype(np.int64),
        "daytype": daytype_of_day[pos],
        "bridge": bridge_of_day[pos],
        "day": day,
        "doy": local.dayofyear.to_numpy(np.int64),
        "utc_offset_h": offset,
    }, index=idx)


def local_week_hours(monday: date, tz: str) -> int:
    """Hours from Monday 00:00 to the next Monday 00:00 local time (167, 168 or 169)."""
    start = pd.Timestamp(monday).tz_localize(tz)
    end = (pd.Timestamp(monday) + pd.Timedelta(days=7)).tz_localize(tz)
    return int((end - start) / pd.Timedelta(hours=1))


def _bridges(days: np.ndarray, daytype: np.ndarray, hol_days: set) -> np.ndarray:
    """1 for a workday between a holiday and a weekend day (either side)."""
    def kind(d: int) -> int:
        dow = (d + 3) % 7
        return DAYTYPE_SUNDAY if (d in hol_days or dow == 6) else \
            DAYTYPE_SATURDAY if dow == 5 else DAYTYPE_WORKDAY

    out = np.zeros(len(days), np.int64)
    for i, d in enumerate(days.tolist()):
        if daytype[i] != DAYTYPE_WORKDAY:
            continue
        before, after = kind(d - 1), kind(d + 1)
        if ((d - 1) in hol_days and after != DAYTYPE_WORKDAY) or \
                ((d + 1) in hol_days and before != DAYTYPE_WORKDAY):
            out[i] = 1
    return out


def _utc_index(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError("expected a zone-aware DatetimeIndex (UTC)")
    return index.tz_convert("UTC").as_unit("ns")
