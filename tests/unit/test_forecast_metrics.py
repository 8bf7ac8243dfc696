"""BWDF indicators, coverage and pinball loss on hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from processors.forecast import metrics


def _week(err_first_day: float, err_rest: float) -> tuple[np.ndarray, np.ndarray]:
    obs = np.full(168, 10.0)
    fc = obs.copy()
    fc[:24] += err_first_day
    fc[24:] -= err_rest
    return obs, fc


def test_pi1_pi2_pi3_by_hand():
    obs, fc = _week(1.0, 2.0)
    fc[5] = 10.0 + 4.0  # one bad hour on day 1
    ind = metrics.bwdf_indicators(obs, fc)
    assert ind["PI1"] == pytest.approx((23 * 1.0 + 4.0) / 24)
    assert ind["PI2"] == pytest.approx(4.0)
    assert ind["PI3"] == pytest.approx(2.0)


def test_missing_observations_are_left_out():
    obs, fc = _week(1.0, 2.0)
    obs[:12] = np.nan
    fc[12] = 13.0  # |10 - 13| = 3 in the half day that is scored
    assert metrics.pi1(obs, fc) == pytest.approx((11 * 1.0 + 3.0) / 12)
    assert metrics.pi2(obs, fc) == pytest.approx(3.0)
    assert math.isnan(metrics.pi1(np.full(168, np.nan), fc))


def test_shapes_must_match():
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.pi1(np.zeros(168), np.zeros(167))


def test_interval_coverage_counts_inside_inclusive():
    obs = np.array([1.0, 2.0, 3.0, 4.0, np.nan])
    lo = np.array([0.0, 2.0, 3.5, 0.0, 0.0])
    hi = np.array([2.0, 2.0, 4.0, 3.9, 9.0])
    assert metrics.interval_coverage(obs, lo, hi) == pytest.approx(2 / 4)


def test_pinball_loss_by_hand():
    obs = np.array([10.0, 10.0])
    fc = np.array([8.0, 13.0])  # under by 2, over by 3
    assert metrics.pinball_loss(obs, fc, 0.9) == pytest.approx((0.9 * 2 + 0.1 * 3) / 2)
    assert metrics.pinball_loss(obs, fc, 0.5) == pytest.approx(0.5 * metrics.mae(obs, fc))
    with pytest.raises(ValueError):
        metrics.pinball_loss(obs, fc, 1.0)


def test_skill():
    assert metrics.skill(0.8, 1.0) == pytest.approx(0.2)
