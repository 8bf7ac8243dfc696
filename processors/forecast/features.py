"""Features for direct multi-horizon forecasting of an hourly series.

One row per (origin, valid hour): the valid hour ``t`` lies ``h`` hours after the origin
(0 <= h < 168).  Every value a row reads from the series lies strictly before its own
origin: weekly lags (``t - 168 k``, before the origin because ``h < 168``), day-type
profiles of the local days before the origin's day, and the recent anomaly just before
the origin.  Weather at ``t`` comes from the weather frame (observations stand in for
forecasts in training).  Calendar features come from local time.

The model learns ``y - base`` where ``base`` is the day-type profile (the mean of the
last few days of the same kind at the same local hour), so trees only have to learn
departures from the recent pattern, which carries over when the level moves.

Works in the series' unit; weather columns are used by name (``WEATHER_COLUMNS``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from processors.forecast.calendar import DAYTYPES, calendar_features

WEEK_H = 168
# canonical weather columns (unit in the name); any subset may be present
WEATHER_COLUMNS = ("temperature_c", "precipitation_mm", "humidity_pct", "wind_speed_ms")
PROFILE_DAYS = {0: 5, 1: 3, 2: 3}  # workdays, Saturdays, Sundays and holidays averaged
PROFILE_DAYS_LONG = {0: 15, 1: 6, 2: 6}


@dataclass(frozen=True)
class SeriesFrame:
    """A clean series, its calendar and weather on one UTC hourly grid.

    ``y`` is NaN where unknown (missing, excluded, or not yet happened).  ``profiles``
    [daytype, local day, local hour] holds the mean of the last ``PROFILE_DAYS`` days of
    that type *strictly before* the local day (NaN when none).
    """

    index: pd.DatetimeIndex
    y: np.ndarray
    calendar: pd.DataFrame
    weather: pd.DataFrame
    day_pos: np.ndarray
    profiles: np.ndarray
    profiles_long: np.ndarray

    def position(self, t: pd.Timestamp) -> int:
        return int(self.index.get_loc(pd.Timestamp(t).tz_convert("UTC")))


def make_frame(clean: pd.Series, weather: pd.DataFrame | None, holidays, tz: str,
               end: pd.Timestamp) -> SeriesFrame:
    """Lay ``clean`` (hourly, UTC) and ``weather`` on the grid from the series' start to ``end``
    (exclusive).  Values of ``clean`` at or after ``end`` are dropped."""
    start = clean.index[0]
    index = pd.date_range(start, pd.Timestamp(end).tz_convert("UTC"), freq="h",
                          inclusive="left", unit="ns")
    y = clean.reindex(index).to_numpy(dtype=float, copy=True)
    cal = calendar_features(index, tz, holidays)
    wx = _weather_on(index, weather)
    day_pos = np.searchsorted(np.unique(cal["day"].to_numpy()), cal["day"].to_numpy())
    daily, kind = _daily(y, cal, day_pos)
    return SeriesFrame(index, y, cal, wx, day_pos, _profiles(daily, kind, PROFILE_DAYS),
                       _profiles(daily, kind, PROFILE_DAYS_LONG))


def origin_positions(frame: SeriesFrame, last: int, step_h: int, min_history_h: int) -> np.ndarray:
    """Training origins every ``step_h`` hours ending at position ``last`` (exclusive),
    aligned so that ``last`` itself would be one of them."""
    first = last - step_h * ((last - min_history_h) // step_h)
    return np.arange(first, last, step_h, dtype=np.int64)


def design(frame: SeriesFrame, origins: np.ndarray, horizon: int) -> pd.DataFrame:
    """Feature rows for every origin position and hours 0..horizon-1 after it.

    Extra columns: ``base`` (the value the model's target is measured from), ``t`` (the
    valid position), ``origin`` and ``y`` (the observed value at ``t``, NaN if unknown).
    """
    if horizon > WEEK_H:
        raise ValueError(f"horizon up to {WEEK_H} h, found {horizon}")
    n = len(frame.y)
    o = np.repeat(np.asarray(origins, np.int64), horizon)
    h = np.tile(np.arange(horizon, dtype=np.int64), len(origins))
    t = o + h
    keep = (t < n) & (o >= 2 * WEEK_H)
    o, h, t = o[keep], h[keep], t[keep]
    y, cal, P = frame.y, frame.calendar, frame.profiles
    hour = cal["hour"].to_numpy()
    daytype = cal["daytype"].to_numpy()
    d0 = frame.day_pos[o]

    def lag(k: int) -> np.ndarray:
        src = t - k
        return np.where(src >= 0, y[np.clip(src, 0, None)], np.nan)

    prof_own = P[daytype[t], d0, hour[t]]
    lag168, lag336 = lag(WEEK_H), lag(2 * WEEK_H)
    base = _first_present(prof_own, lag168, lag336, P[0, d0, hour[t]])
    anomaly = _origin_anomalies(frame, np.asarray(origins, np.int64))
    an = anomaly.reindex(o)
    X = pd.DataFrame({
        "h": h,
        "hour": hour[t],
        "dow": cal["dow"].to_numpy()[t],
        "daytype": daytype[t],
        "holiday": cal["holiday"].to_numpy()[t],
        "bridge": cal["bridge"].to_numpy()[t],
        "daytype_lag168": daytype[t - WEEK_H],
        "profile_own": prof_own,
        "profile_workday": P[0, d0, hour[t]],
        "profile_sunday": P[2, d0, hour[t]],
        "profile_own_long": frame.profiles_long[daytype[t], d0, hour[t]],
        "lag168": lag168,
        "lag336": lag336,
        "lag504": lag(3 * WEEK_H),
        "lag168_minus_base": lag168 - base,
        "last": an["last"].to_numpy(),
        "anomaly_1h": an["anomaly_1h"].to_numpy(),
        "anomaly_24h": an["anomaly_24h"].to_numpy(),
        "week_change": an["week_change"].to_numpy(),
    })
    for col, values in _weather_features(frame, t, o).items():
        X[col] = values
    X["base"] = base
    X["t"], X["origin"], X["y"] = t, o, y[t]
    return X


META_COLUMNS = ("base", "t", "origin", "y")


def feature_columns(X: pd.DataFrame) -> list[str]:
    return [c for c in X.columns if c not in META_COLUMNS]


def _daily(y: np.ndarray, cal: pd.DataFrame, day_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[local day, local hour] means (the repeated autumn hour averaged) and day types."""
    ndays = int(day_pos.max()) + 1 if len(day_pos) else 0
    hour = cal["hour"].to_numpy()
    ok = ~np.isnan(y)
    total = np.zeros((ndays, 24))
    count = np.zeros((ndays, 24))
    np.add.at(total, (day_pos[ok], hour[ok]), y[ok])
    np.add.at(count, (day_pos[ok], hour[ok]), 1.0)
    with np.errstate(invalid="ignore"):
        daily = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    kind = pd.Series(cal["daytype"].to_numpy()).groupby(day_pos).first().to_numpy()
    return daily, kind


def _profiles(daily: np.ndarray, kind: np.ndarray, days_by_type: dict[int, int]) -> np.ndarray:
    ndays = len(daily)
    P = np.full((len(DAYTYPES), ndays, 24), np.nan)
    for k in DAYTYPES:
        days = np.flatnonzero(kind == k)
        if len(days) == 0:
            continue
        rolling = pd.DataFrame(daily[days]).rolling(days_by_type[k], min_periods=1).mean()
        before = np.cumsum(kind == k) - (kind == k)  # days of type k strictly before each day
        has = before > 0
        P[k, has] = rolling.to_numpy()[before[has] - 1]
    return P


def _origin_anomalies(frame: SeriesFrame, origins: np.ndarray) -> pd.DataFrame:
    """Per origin: the last value, its departure from the profile, the mean departure over
    the last 24 h and the change of the weekly mean (all from hours before the origin)."""
    y, P = frame.y, frame.profiles
    hour = frame.calendar["hour"].to_numpy()
    daytype = frame.calendar["daytype"].to_numpy()
    rows = {}
    for o in np.unique(origins).tolist():
        d0 = frame.day_pos[o]
        prev = np.arange(max(o - 24, 0), o)
        dev = y[prev] - P[daytype[prev], d0, hour[prev]]
        last = y[o - 1] if o >= 1 else np.nan
        rows[o] = (last, dev[-1] if len(dev) else np.nan, _nanmean(dev),
                   _nanmean(y[max(o - WEEK_H, 0):o]) - _nanmean(y[max(o - 2 * WEEK_H, 0):max(o - WEEK_H, 0)]))
    return pd.DataFrame.from_dict(rows, orient="index",
                                  columns=["last", "anomaly_1h", "anomaly_24h", "week_change"])


def _weather_on(index: pd.DatetimeIndex, weather: pd.DataFrame | None) -> pd.DataFrame:
    if weather is None or weather.empty:
        return pd.DataFrame(index=index)
    wx = weather.copy()
    wx.index = pd.DatetimeIndex(wx.index).tz_convert("UTC").as_unit("ns")
    wx = wx[~wx.index.duplicated(keep="last")].sort_index()
    cols = [c for c in WEATHER_COLUMNS if c in wx.columns]
    return wx[cols].astype(float).reindex(index)


def _weather_features(frame: SeriesFrame, t: np.ndarray, o: np.ndarray) -> dict[str, np.ndarray]:
    wx = frame.weather
    out: dict[str, np.ndarray] = {}
    if "temperature_c" in wx:
        temp = wx["temperature_c"]
        mean24 = temp.rolling(24, min_periods=12).mean().to_numpy()
        week_before = temp.rolling(WEEK_H, min_periods=48).mean().to_numpy()
        out["temperature"] = temp.to_numpy()[t]
        out["temperature_24h"] = mean24[t]
        out["temperature_max_24h"] = temp.rolling(24, min_periods=12).max().to_numpy()[t]
        out["temperature_24h_vs_lag168"] = mean24[t] - mean24[t - WEEK_H]
        out["temperature_24h_vs_last_week"] = mean24[t] - week_before[np.maximum(o - 1, 0)]
    if "precipitation_mm" in wx:
        rain = wx["precipitation_mm"]
        out["precipitation"] = rain.to_numpy()[t]
        out["precipitation_24h"] = rain.rolling(24, min_periods=12).sum().to_numpy()[t]
        out["precipitation_72h"] = rain.rolling(72, min_periods=36).sum().to_numpy()[t]
    if "humidity_pct" in wx:
        out["humidity"] = wx["humidity_pct"].to_numpy()[t]
    if "wind_speed_ms" in wx:
        out["wind_speed"] = wx["wind_speed_ms"].to_numpy()[t]
    return out


def _first_present(*arrays: np.ndarray) -> np.ndarray:
    out = arrays[0].copy()
    for a in arrays[1:]:
        gap = np.isnan(out)
        out[gap] = a[gap]
    return out


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")
