"""Tariff rules on hand-computed cases."""

import numpy as np
import pytest

from processors.simulate import (EpanetEnergyPrices, LinearPowerModel, PeriodPrices,
                                 SimulationResult, TimeOfUse, cost_by_period, load_network,
                                 total_cost)
from processors.simulate.cost import _tou_mean


def _run(times_h, power_kw, flow_m3s=None, period_s=3600, pumps=("P",)):
    t = np.asarray(times_h, dtype=float) * 3600
    n = len(t)
    power = np.asarray(power_kw, dtype=float).reshape(n, -1)
    flow = power / 100 if flow_m3s is None else np.asarray(flow_m3s, dtype=float).reshape(n, -1)
    nan = np.full_like(power, np.nan)
    return SimulationResult(
        tank_ids=(), pump_ids=pumps, start_s=0, horizon_s=int(t[-1]), period_s=period_s,
        times_s=t, step_s=np.append(np.diff(t), 0.0), tank_level_m=np.zeros((n, 0)),
        pump_flow_m3s=flow, pump_power_kw=power, pump_speed=nan, pump_state=np.zeros_like(power, int),
        pump_head_m=nan)


def test_time_of_use_splits_a_step_across_the_peak_start():
    tou = TimeOfUse(0.08, 0.20, 7)
    assert _tou_mean(tou, 6.5 * 3600, 3600) == pytest.approx((0.08 + 0.20) / 2)
    assert _tou_mean(tou, 23.5 * 3600, 3600) == pytest.approx((0.20 + 0.08) / 2)  # midnight


def test_time_of_use_on_a_day_of_10_kw(shared_data):
    net = load_network((shared_data / "battledim/L-TOWN.inp").read_bytes())  # clock 00:00
    run = _run(range(25), np.append(np.full(24, 10.0), 0.0))
    # 7 h at 0.08 + 17 h at 0.20, 10 kW
    assert total_cost(TimeOfUse(0.08, 0.20, 7), net, run) == pytest.approx(10 * (7 * 0.08 + 17 * 0.20))
    per = cost_by_period(PeriodPrices(tuple(range(24)), 3600), net, run)
    assert per.sum() == pytest.approx(10 * sum(range(24)))


def test_epanet_prices_follow_pattern_start(shared_data):
    """Van Zyl: clock and patterns start at 07:00; 1 kW on pmp6 for 24 h costs 17 peak
    hours at 0.1194 and 7 night hours at 0.0244 (pump price 1 x pattern)."""
    net = load_network((shared_data / "pumpsched/vanzyl/van_zyl.inp").read_bytes())
    power = np.zeros((25, 3))
    power[:24, 2] = 1.0
    run = _run(range(25), power, pumps=net.pump_ids)
    assert total_cost(EpanetEnergyPrices(), net, run) == pytest.approx(17 * 0.1194 + 7 * 0.0244)


def test_linear_power_model_uses_period_start_flow():
    """cost = z (fixed + slope q) price / 1000 h: 2 periods of 30 min."""
    lp = LinearPowerModel({"P": 10.0}, {"P": 500.0}, (40.0, 60.0), 1800)
    run = _run([0, 0.25, 0.5, 1.0], [1, 1, 1, 0], flow_m3s=[0.02, 0.03, 0.0, 0.0], period_s=1800)
    # period 0: q = 0.02 at its start -> (10 + 10) kW * 40 / 1000 * 0.5 h; period 1: off
    assert total_cost(lp, None, run) == pytest.approx(20 * 40 / 1000 * 0.5)
