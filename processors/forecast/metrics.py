"""Forecast skill: pure functions over arrays aligned on the forecast's valid hours.

Every function takes the observed and forecast values in the same unit (whatever the
series' unit is, e.g. L/s or m3/s) and returns errors in that unit, except coverage (a
fraction) and the skill ratio (dimensionless).  Element 0 is the first forecast hour
(valid from the issue time).  Missing observations (NaN) are left out of every mean and
maximum; a window with no observation gives NaN.

The Battle of the Water Demand Forecasting (Alvisi et al. 2025) indicators:
PI1 = mean |obs - fcst| over hours 1-24, PI2 = max |obs - fcst| over hours 1-24,
PI3 = mean |obs - fcst| over hours 25-168.
"""

from __future__ import annotations

import numpy as np


def absolute_errors(observed, forecast) -> np.ndarray:
    """|observed - forecast| element-wise, NaN where either is missing (unit of the inputs)."""
    obs, fc = _pair(observed, forecast)
    return np.abs(obs - fc)


def pi1(observed, forecast) -> float:
    """Mean absolute error over forecast hours 1-24 (unit of the inputs)."""
    return _nanmean(absolute_errors(observed, forecast)[:24])


def pi2(observed, forecast) -> float:
    """Maximum absolute error over forecast hours 1-24 (unit of the inputs)."""
    e = absolute_errors(observed, forecast)[:24]
    return float(np.nanmax(e)) if np.any(~np.isnan(e)) else float("nan")


def pi3(observed, forecast) -> float:
    """Mean absolute error over forecast hours 25-168 (unit of the inputs)."""
    return _nanmean(absolute_errors(observed, forecast)[24:168])


def bwdf_indicators(observed, forecast) -> dict[str, float]:
    """PI1, PI2 and PI3 of one forecast (unit of the inputs)."""
    return {"PI1": pi1(observed, forecast), "PI2": pi2(observed, forecast),
            "PI3": pi3(observed, forecast)}


def mae(observed, forecast) -> float:
    """Mean absolute error over all hours given (unit of the inputs)."""
    return _nanmean(absolute_errors(observed, forecast))


def interval_coverage(observed, lower, upper) -> float:
    """Fraction (0-1) of observed values inside [lower, upper]; NaN observations left out."""
    obs = np.asarray(observed, float)
    lo, hi = np.asarray(lower, float), np.asarray(upper, float)
    if not (obs.shape == lo.shape == hi.shape):
        raise ValueError(f"shapes differ: observed {obs.shape}, lower {lo.shape}, upper {hi.shape}")
    ok = ~np.isnan(obs)
    if not ok.any():
        return float("nan")
    return float(np.mean((obs[ok] >= lo[ok]) & (obs[ok] <= hi[ok])))


def pinball_loss(observed, quantile_forecast, q: float) -> float:
    """Mean pinball (quantile) loss of the ``q`` quantile forecast (unit of the inputs).

    Loss per hour: q * (obs - f) when obs >= f, else (1 - q) * (f - obs).  For q = 0.5 it
    is half the absolute error.
    """
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile must be in (0, 1), found {q}")
    obs, fc = _pair(observed, quantile_forecast)
    d = obs - fc
    return _nanmean(np.where(d >= 0, q * d, (q - 1.0) * d))


def skill(model_error: float, reference_error: float) -> float:
    """1 - model/reference: 0.2 means 20 % lower error than the reference (dimensionless)."""
    if not reference_error:
        return float("nan")
    return 1.0 - model_error / reference_error


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, float), np.asarray(b, float)
    if x.shape != y.shape:
        raise ValueError(f"shapes differ: observed {x.shape}, forecast {y.shape}")
    return x, y


def _nanmean(x: np.ndarray) -> float:
    ok = ~np.isnan(x)
    return float(x[ok].mean()) if ok.any() else float("nan")
