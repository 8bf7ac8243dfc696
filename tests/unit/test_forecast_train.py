"""train/predict on small synthetic series: no look-ahead, determinism, bad data excluded
and reported, artefacts that refuse foreign bytes."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pandas as pd
import pytest

from processors.forecast import InsufficientHistory, TrainConfig, predict, train
from processors.forecast.artefact import ArtefactError, load
from processors.forecast.features import design, make_frame

TZ = "Europe/Rome"
ORIGIN = pd.Timestamp("2022-03-07 00:00", tz=TZ)  # a Monday; DST starts 27 March
HOLIDAYS = {date(2022, 1, 6), date(2022, 3, 1)}
# small and quick: two backtests, few trees, no ETS (sktime's import alone takes seconds)
QUICK = TrainConfig(candidates=("seasonal_naive", "profile", "gbm"), backtest_origins=2,
                    gbm_params=(("n_estimators", 25), ("num_leaves", 7)), history_days=56)


def demand(start="2021-12-20", weeks=14, seed=1) -> tuple[pd.Series, pd.DataFrame]:
    """Hourly demand (L/s) with daily and weekly cycles, a temperature effect and noise."""
    idx = pd.date_range(pd.Timestamp(start, tz=TZ).tz_convert("UTC"), periods=weeks * 168, freq="h")
    local = idx.tz_convert(TZ)
    rng = np.random.default_rng(seed)
    temp = 8 + 6 * np.sin(2 * np.pi * (local.hour - 9) / 24) + rng.normal(0, 1, len(idx))
    daily = 10 + 6 * np.exp(-((local.hour - 8) ** 2) / 6) + 4 * np.exp(-((local.hour - 20) ** 2) / 8)
    weekend = np.where(local.dayofweek >= 5, 0.8, 1.0)
    y = daily * weekend + 0.2 * temp + rng.normal(0, 0.4, len(idx))
    weather = pd.DataFrame({"temperature_c": temp, "precipitation_mm": 0.0}, index=idx)
    return pd.Series(y, index=idx, name="flow_ls"), weather


def test_forecast_ignores_everything_at_or_after_the_origin():
    y, wx = demand()
    model = train(y, wx, HOLIDAYS, TZ, origin=ORIGIN, config=QUICK)
    corrupt = y.copy()
    corrupt[corrupt.index >= ORIGIN] = 1e6  # the future, wildly wrong
    corrupt[corrupt.index >= ORIGIN + pd.Timedelta(days=3)] = np.nan
    model2 = train(corrupt, wx, HOLIDAYS, TZ, origin=ORIGIN, config=QUICK)
    assert model2.artefact == model.artefact
    a = predict(model.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN)
    b = predict(model.artefact, corrupt, wx, HOLIDAYS, TZ, issued_at=ORIGIN)
    pd.testing.assert_frame_equal(a, b)
    assert a["p50"].max() < 100


def test_feature_rows_read_only_values_before_their_own_origin():
    y, wx = demand(weeks=6)
    clean = y.copy()
    frame = make_frame(clean, wx, HOLIDAYS, TZ, clean.index[-1] + pd.Timedelta(hours=1))
    origin = 4 * 168 + 5
    X = design(frame, np.array([origin]), 168)
    frame.y[origin:] = -999.0  # poison the future in place: features must not move
    X2 = design(frame, np.array([origin]), 168)
    cols = [c for c in X.columns if c != "y"]
    pd.testing.assert_frame_equal(X[cols], X2[cols])


def test_same_inputs_give_identical_bytes_and_forecasts():
    y, wx = demand()
    # every candidate family, ETS (sktime/statsmodels) and the ensemble included
    config = replace(QUICK, candidates=("seasonal_naive", "profile", "ets", "gbm", "ensemble"))
    a = train(y, wx, HOLIDAYS, TZ, origin=ORIGIN, config=config)
    b = train(y, wx, HOLIDAYS, TZ, origin=ORIGIN, config=config)
    assert set(a.metrics) == {"seasonal_naive", "profile", "ets", "gbm", "ensemble"}
    assert a.artefact == b.artefact and a.sha256 == b.sha256
    fa = predict(a.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN, sha256=a.sha256)
    fb = predict(b.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN, sha256=b.sha256)
    assert fa.to_numpy().tobytes() == fb.to_numpy().tobytes()
    ensemble = replace(config, candidates=("ensemble",))  # force the two-family ensemble
    c = train(y, wx, HOLIDAYS, TZ, origin=ORIGIN, config=ensemble)
    assert c.chosen == "ensemble"
    fc1 = predict(c.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN)
    fc2 = predict(c.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN)
    assert fc1.to_numpy().tobytes() == fc2.to_numpy().tobytes()


def test_forecast_shape_quantiles_and_skill():
    y, wx = demand()
    result = train(y, wx, HOLIDAYS, TZ, origin=ORIGIN, config=QUICK)
    assert set(result.metrics) == {"seasonal_naive", "profile", "gbm"}
    assert result.chosen in result.metrics
    assert result.metrics["gbm"]["PI1"] < result.metrics["seasonal_naive"]["PI1"]
    assert {"numpy", "lightgbm", "pandas"} <= set(result.library_versions)
    fc = predict(result.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN, horizon_h=48)
    assert list(fc.columns) == ["p10", "p25", "p50", "p75", "p90"]
    assert len(fc) == 48 and fc.index[0] == ORIGIN.tz_convert("UTC")
    assert not fc.isna().any().any()
    assert (np.diff(fc.to_numpy(), axis=1) >= 0).all()  # quantiles do not cross
    assert (fc["p90"] > fc["p10"]).mean() > 0.9
    obs = y.reindex(fc.index)
    assert (obs - fc["p50"]).abs().mean() < 1.0  # noise sd is 0.4 L/s


def test_gap_and_stuck_sensor_are_excluded_and_reported():
    y, wx = demand(weeks=16)
    gap = (y.index >= pd.Timestamp("2022-01-10", tz=TZ)) & (y.index < pd.Timestamp("2022-01-31", tz=TZ))
    y[gap] = np.nan  # three weeks missing
    stuck = (y.index >= pd.Timestamp("2022-02-14 06:00", tz=TZ)) & (y.index < pd.Timestamp("2022-02-15 06:00", tz=TZ))
    y[stuck] = 12.345  # a frozen sensor for a day
    spike = pd.Timestamp("2022-02-20 10:00", tz=TZ)
    y[spike] = 400.0
    result = train(y, wx, HOLIDAYS, TZ, origin=pd.Timestamp("2022-03-21 00:00", tz=TZ), config=QUICK)
    by_reason = {}
    for p in result.excluded:
        by_reason.setdefault(p.reason, []).append(p)
    assert [p.hours for p in by_reason["missing"]] == [21 * 24]
    assert [(p.start, p.hours) for p in by_reason["stuck"]] == [
        (pd.Timestamp("2022-02-14 06:00", tz=TZ).tz_convert("UTC"), 24)]
    assert [p.start for p in by_reason["outlier"]] == [spike.tz_convert("UTC")]
    fc = predict(result.artefact, y, wx, HOLIDAYS, TZ, issued_at=pd.Timestamp("2022-03-21 00:00", tz=TZ))
    assert fc["p50"].max() < 30  # neither the stuck value nor the spike was learned as normal


def test_artefact_is_checked_against_its_hash_and_format():
    y, wx = demand(weeks=12)
    result = train(y, wx, HOLIDAYS, TZ, origin=ORIGIN, config=QUICK)
    assert load(result.artefact, result.sha256)["chosen"] == result.chosen
    with pytest.raises(ArtefactError, match="hash mismatch"):
        predict(result.artefact, y, wx, HOLIDAYS, TZ, issued_at=ORIGIN, sha256="0" * 64)
    with pytest.raises(ArtefactError, match="not a Tagus forecast model"):
        load(b"\x80\x04K\x01.")  # a pickle is refused, never unpickled


def test_too_little_history_is_a_typed_error():
    y, wx = demand(weeks=2)
    with pytest.raises(InsufficientHistory):
        train(y, wx, HOLIDAYS, TZ, origin=y.index[-1], config=QUICK)
