"""PV production from cloud cover with pvlib: physics sanity, limits, calibration."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from processors.forecast.solar import PVSystem, calibrate, forecast_pv, pv_power_kw

TRIESTE = PVSystem(latitude=45.65, longitude=13.78, peak_power_kw=100.0, tilt_deg=30,
                   azimuth_deg=180, losses_pct=14.0)


def _weather(cloud: float, day="2022-06-21") -> pd.DataFrame:
    idx = pd.date_range(day, periods=24, freq="h", tz="UTC")
    return pd.DataFrame({"cloud_cover_pct": cloud, "temperature_c": 25.0, "wind_speed_ms": 2.0},
                        index=idx)


def test_clear_midsummer_day_is_plausible_and_dark_at_night():
    p = pv_power_kw(TRIESTE, _weather(0.0))
    assert p.iloc[0] == 0 and p.iloc[22] == 0  # 02 and 00 local: night
    noon = p.loc["2022-06-21 10:00Z"]  # 12:00-13:00 local
    assert 55 < noon < 86  # 100 kWp, 14 % losses, hot cells, 96 % inverter
    assert p.idxmax().hour in (10, 11)
    assert 450 < p.sum() < 750  # kWh on a clear June day for 100 kWp in north Italy


def test_clouds_reduce_output_and_inverter_limit_caps_it():
    clear = pv_power_kw(TRIESTE, _weather(0.0)).sum()
    overcast = pv_power_kw(TRIESTE, _weather(100.0)).sum()
    assert 0.2 * clear < overcast < 0.6 * clear
    capped = PVSystem(**{**TRIESTE.__dict__, "inverter_limit_kw": 40.0})
    assert pv_power_kw(capped, _weather(0.0)).max() == pytest.approx(40.0)


def test_calibration_recovers_a_scale_and_bands_contain_the_median():
    wx = pd.concat([_weather(c, d) for c, d in [(0, "2022-06-20"), (60, "2022-06-21"),
                                                  (20, "2022-06-22")]])
    model = pv_power_kw(TRIESTE, wx)
    rng = np.random.default_rng(3)
    measured = (0.85 * model + rng.normal(0, 1.0, len(model))).clip(lower=0)
    cal = calibrate(TRIESTE, wx, measured)
    assert cal.scale == pytest.approx(0.85, abs=0.02)
    assert cal.skill["mae_calibrated_kw"] < cal.skill["mae_raw_kw"]
    fc = forecast_pv(TRIESTE, _weather(30.0, "2022-06-23"), cal)
    assert list(fc.columns) == ["p10", "p50", "p90"]
    assert (fc["p10"] <= fc["p50"]).all() and (fc["p50"] <= fc["p90"]).all()
    assert (fc >= 0).all().all()
