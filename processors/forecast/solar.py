"""PV production from a weather forecast, with pvlib.

``pvlib.forecast`` (its weather-model download helpers) is gone from current pvlib, so
irradiance is derived here: clear-sky GHI (Ineichen, pvlib's Linke turbidity table)
scaled linearly by cloud cover (the rule the old ``pvlib.forecast`` used: 35 % of
clear-sky GHI under full overcast), split into direct and diffuse by Erbs, transposed
to the array plane (isotropic sky), cell temperature by Faiman, DC power by PVWatts,
system losses, an inverter efficiency and the inverter's AC limit.

Times: a UTC hourly index whose stamp starts the hour; values are mean power over the
hour (the sun's position is taken at mid-hour).  Units: power in kW, irradiance in W/m2,
temperature in degrees C, wind in m/s, cloud cover in percent.

When a PV production sensor is bound, ``calibrate`` fits one scale factor (least squares
through the origin on daylight hours) and the spread of the errors, and reports skill.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

OVERCAST_FRACTION = 0.35  # GHI under 100 % cloud cover as a fraction of clear sky


@dataclass(frozen=True)
class PVSystem:
    """A PV plant.  ``azimuth_deg`` in pvlib's convention (180 = facing south);
    ``losses_pct`` are PVWatts system losses (soiling, wiring, mismatch, availability)."""

    latitude: float
    longitude: float
    peak_power_kw: float
    tilt_deg: float = 30.0
    azimuth_deg: float = 180.0
    altitude_m: float = 0.0
    losses_pct: float = 14.0
    inverter_limit_kw: float | None = None
    gamma_pdc_per_c: float = -0.004
    inverter_efficiency: float = 0.96

    def __post_init__(self) -> None:
        if self.peak_power_kw <= 0:
            raise ValueError(f"peak power must be positive, found {self.peak_power_kw} kW")
        if not 0 <= self.tilt_deg <= 90:
            raise ValueError(f"tilt must be 0-90 degrees, found {self.tilt_deg}")
        if not 0 <= self.losses_pct < 100:
            raise ValueError(f"losses must be 0-100 %, found {self.losses_pct}")


@dataclass(frozen=True)
class PVCalibration:
    """``scale`` multiplies the physical model; ``quantiles`` maps q to the error quantile
    as a fraction of peak power (measured - calibrated model); ``skill`` holds MAE in kW
    of the raw and calibrated model over the calibration hours and their count."""

    scale: float = 1.0
    quantiles: dict[float, float] = field(default_factory=dict)
    skill: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def irradiance_from_cloud_cover(index: pd.DatetimeIndex, cloud_cover_pct, system: PVSystem
                                ) -> pd.DataFrame:
    """GHI, DNI, DHI (W/m2) at mid-hour from cloud cover (percent) and the clear sky."""
    from pvlib import irradiance
    from pvlib.location import Location

    mid = _mid_hours(index)
    loc = Location(system.latitude, system.longitude, altitude=system.altitude_m)
    clear = loc.get_clearsky(mid, model="ineichen")
    cc = np.clip(np.asarray(cloud_cover_pct, dtype=float), 0, 100) / 100.0
    ghi = clear["ghi"].to_numpy() * (OVERCAST_FRACTION + (1 - OVERCAST_FRACTION) * (1 - cc))
    zenith = loc.get_solarposition(mid)["apparent_zenith"]
    split = irradiance.erbs(pd.Series(ghi, index=mid), zenith, mid)
    return pd.DataFrame({"ghi_wm2": ghi, "dni_wm2": split["dni"].to_numpy(),
                         "dhi_wm2": split["dhi"].to_numpy()}, index=index)


def pv_power_kw(system: PVSystem, weather: pd.DataFrame) -> pd.Series:
    """Mean AC power per hour (kW) of ``system`` under ``weather``.

    ``weather``: UTC hourly index; ``ghi_wm2`` (with optional ``dni_wm2``/``dhi_wm2``) or
    ``cloud_cover_pct``; optional ``temperature_c`` (default 20) and ``wind_speed_ms``
    (default 1).  Missing irradiance gives NaN.
    """
    from pvlib import irradiance, pvsystem, temperature
    from pvlib.location import Location

    index = weather.index
    mid = _mid_hours(index)
    loc = Location(system.latitude, system.longitude, altitude=system.altitude_m)
    sun = loc.get_solarposition(mid)
    if "ghi_wm2" in weather:
        ghi = pd.Series(weather["ghi_wm2"].to_numpy(dtype=float), index=mid)
        if {"dni_wm2", "dhi_wm2"} <= set(weather.columns):
            dni = pd.Series(weather["dni_wm2"].to_numpy(dtype=float), index=mid)
            dhi = pd.Series(weather["dhi_wm2"].to_numpy(dtype=float), index=mid)
        else:
            split = irradiance.erbs(ghi, sun["apparent_zenith"], mid)
            dni, dhi = split["dni"], split["dhi"]
    elif "cloud_cover_pct" in weather:
        irr = irradiance_from_cloud_cover(index, weather["cloud_cover_pct"], system)
        ghi, dni, dhi = (pd.Series(irr[c].to_numpy(), index=mid)
                         for c in ("ghi_wm2", "dni_wm2", "dhi_wm2"))
    else:
        raise ValueError("weather needs ghi_wm2 or cloud_cover_pct, found "
                         f"{list(weather.columns)}")
    poa = irradiance.get_total_irradiance(
        system.tilt_deg, system.azimuth_deg, sun["apparent_zenith"], sun["azimuth"],
        dni.clip(lower=0), ghi.clip(lower=0), dhi.clip(lower=0), model="isotropic")
    poa_global = poa["poa_global"].fillna(0.0).clip(lower=0)
    poa_global[ghi.isna()] = np.nan
    temp_air = _column(weather, "temperature_c", 20.0, mid)
    wind = _column(weather, "wind_speed_ms", 1.0, mid)
    temp_cell = temperature.faiman(poa_global, temp_air, wind)
    dc = pvsystem.pvwatts_dc(poa_global, temp_cell, system.peak_power_kw * 1000.0,
                             system.gamma_pdc_per_c)
    ac_w = dc * (1 - system.losses_pct / 100.0) * system.inverter_efficiency
    ac_kw = (ac_w / 1000.0).clip(lower=0)
    if system.inverter_limit_kw is not None:
        ac_kw = ac_kw.clip(upper=system.inverter_limit_kw)
    return pd.Series(ac_kw.to_numpy(), index=index, name="power_kw")


def calibrate(system: PVSystem, weather: pd.DataFrame, measured_kw: pd.Series,
              quantiles=(0.1, 0.5, 0.9)) -> PVCalibration:
    """Fit a scale factor and error quantiles against measured AC power (kW).

    Uses hours where both the model and the meter have a value and the model gives more
    than 1 % of peak power (daylight).  Raises ValueError with fewer than 24 such hours.
    """
    model = pv_power_kw(system, weather)
    meas = measured_kw.reindex(model.index).astype(float)
    ok = model.notna() & meas.notna() & (model > 0.01 * system.peak_power_kw)
    if ok.sum() < 24:
        raise ValueError(f"calibration needs 24 daylight hours with measurements, found {int(ok.sum())}")
    m, p = meas[ok].to_numpy(), model[ok].to_numpy()
    scale = float(np.dot(m, p) / np.dot(p, p))
    err = (m - scale * p) / system.peak_power_kw
    return PVCalibration(
        scale=scale,
        quantiles={float(q): float(np.quantile(err, q)) for q in quantiles},
        skill={"mae_raw_kw": float(np.mean(np.abs(m - p))),
               "mae_calibrated_kw": float(np.mean(np.abs(m - scale * p))),
               "hours": float(ok.sum())})


def forecast_pv(system: PVSystem, weather_forecast: pd.DataFrame,
                calibration: PVCalibration | None = None) -> pd.DataFrame:
    """Quantile forecast of mean AC power per hour (kW): columns ``p10, p50, p90`` (or
    the calibration's quantiles).  Without a calibration the band is the model under
    heavier and lighter cloud (cover +/- 30 points), or +/- 20 % with irradiance given."""
    model = pv_power_kw(system, weather_forecast)
    cap = system.inverter_limit_kw or np.inf
    night = model.fillna(0.0) <= 0
    if calibration is not None:
        p50 = (model * calibration.scale).clip(lower=0, upper=cap)
        out = {}
        for q, e in sorted(calibration.quantiles.items()):
            v = p50 if q == 0.5 else (p50 + e * system.peak_power_kw).clip(lower=0, upper=cap)
            out[f"p{round(q * 100):02d}"] = v.where(~night, 0.0)
        if "p50" not in out:
            out["p50"] = p50
        frame = pd.DataFrame(out, index=model.index)
    else:
        p50 = model.clip(lower=0, upper=cap)
        if "cloud_cover_pct" in weather_forecast and "ghi_wm2" not in weather_forecast:
            cc = weather_forecast["cloud_cover_pct"]
            lo = pv_power_kw(system, weather_forecast.assign(cloud_cover_pct=(cc + 30).clip(0, 100)))
            hi = pv_power_kw(system, weather_forecast.assign(cloud_cover_pct=(cc - 30).clip(0, 100)))
        else:
            lo, hi = p50 * 0.8, (p50 * 1.2).clip(upper=cap)
        frame = pd.DataFrame({"p10": lo.clip(lower=0), "p50": p50, "p90": hi}, index=model.index)
    cols = sorted(frame.columns, key=lambda c: int(c[1:]))
    values = np.sort(frame[cols].to_numpy(), axis=1)  # quantiles never cross
    return pd.DataFrame(values, index=frame.index, columns=cols)


def _mid_hours(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None:
        raise ValueError("weather needs a zone-aware DatetimeIndex (UTC)")
    return index.tz_convert("UTC") + pd.Timedelta(minutes=30)


def _column(weather: pd.DataFrame, name: str, default: float, mid: pd.DatetimeIndex) -> pd.Series:
    if name in weather:
        return pd.Series(weather[name].to_numpy(dtype=float), index=mid).fillna(default)
    return pd.Series(default, index=mid)
