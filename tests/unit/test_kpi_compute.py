"""``kpi.compute``: the KPI arithmetic on literal readings (pure, no servers).

Known-good figures by hand: a reading held until the next, volumes of constant flows,
minutes above a bound, MAE and skill of literal hours, prices of the DST day, and a tiny
network whose POWER pump draws exactly 10 kW / 0.75 whenever it runs.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from bus.components import Context
from contracts.config import AssetsDoc, RulesDoc, SchedulesDoc, TariffDoc, TenantDoc
from contracts.kpis import KpiComputed
from contracts.tasks import TaskRequested
from processors.kpi.completeness import day_bounds_utc
from processors.kpi.context import KpiDay, tank_bounds
from processors.kpi.energy import PERIOD_S, by_price, period_prices
from processors.kpi.energy_kpis import drives
from processors.kpi.from_readings import forecast_skill, schedule_adherence
from processors.kpi.handler import HANDLERS, KINDS, target_day
from processors.kpi.measured import pumped_m3, skill, violation
from processors.kpi.series import NS, Held
from tests.schedule_support import released

DAY = date(2024, 5, 1)
START = datetime(2024, 5, 1, tzinfo=UTC)
LO = int(START.timestamp()) * NS
HI = LO + 86400 * NS
MIN5 = 300 * NS


def every_5_min(values, start=START) -> tuple[np.ndarray, np.ndarray]:
    """(ns, values) every 5 minutes from ``start``."""
    v = np.asarray(values, dtype=float)
    t0 = int(start.timestamp()) * NS
    return t0 + np.arange(v.size, dtype=np.int64) * MIN5, v


# ---------------------------------------------------------------- held readings


def test_a_reading_holds_until_the_next_and_at_most_an_hour():
    # 10 l/s from 00:00, a reading at 00:05, then nothing until 03:00 (0), day ends
    t = np.array([LO, LO + MIN5, LO + 3 * 3600 * NS])
    held = Held.of(t, [0.01, 0.01, 0.0])
    got = pumped_m3(held, LO, HI)
    # 00:00-00:05 at 0.01, 00:05-01:05 at 0.01 (held an hour), 01:05-03:00 unknown,
    # 03:00-04:00 at 0
    assert got.total == pytest.approx(0.01 * (300 + 3600))
    assert got.covered_s == pytest.approx(300 + 3600 + 3600)
    assert "min of the day without readings" in got.gap_words()


def test_the_reading_before_midnight_speaks_for_the_start_of_the_day():
    t = np.array([LO - 2 * MIN5, LO + 4 * MIN5])
    held = Held.of(t, [0.02, 0.0])
    assert pumped_m3(held, LO, LO + 3600 * NS).total == pytest.approx(0.02 * 1200)
    assert held.value_at(LO) == 0.02 and held.value_at(LO + 4 * MIN5) == 0.0


def test_nan_values_and_repeated_instants_are_dropped():
    held = Held.of([LO, LO, LO + MIN5, LO + 2 * MIN5], [1.0, 2.0, math.nan, 3.0])
    assert held.value.tolist() == [2.0, 3.0]  # the last of equal instants wins
    assert held.integral(LO, LO + 2 * MIN5) == pytest.approx(2.0 * 600)


def test_per_period_means_are_time_weighted():
    t, v = every_5_min([0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])  # off 15 min, then on
    mean, covered = Held.of(t, v).per_period([LO, LO + 1800 * NS, LO + 3600 * NS,
                                              LO + 7200 * NS])
    assert mean[:2].tolist() == pytest.approx([0.5, 1.0])
    assert covered.tolist() == pytest.approx([1800, 1800, 3300])  # 00:55 held to 01:55


# ---------------------------------------------------------------- volumes and bounds


def test_pumped_volume_of_a_day_of_readings():
    t, v = every_5_min(np.r_[np.full(144, 44 / 3600), np.zeros(144)])  # 44 m3/h for 12 h
    got = pumped_m3(Held.of(t, v), LO, HI)
    assert got.total == pytest.approx(44 * 12)
    assert got.coverage == pytest.approx(1.0)


def test_violation_minutes_count_held_time_outside_the_bounds():
    levels = np.full(288, 3.0)
    levels[10:16] = 3.95  # 30 min above 3.9
    levels[100:103] = 0.4  # 15 min below 0.5
    t, v = every_5_min(levels)
    got = violation(Held.of(t, v), LO, HI, 0.5, 3.9)
    assert (got.above_s, got.below_s, got.minutes) == (1800, 900, 45)
    assert (got.lowest_m, got.highest_m) == (0.4, 3.95)


def test_bounds_come_from_the_rules_else_the_model():
    rules = RulesDoc.model_validate({"tanks": {"T1": {"max_level_m": 3.8}}})
    assert tank_bounds("T1", rules, None) == (-math.inf, 3.8, "the operating rules")
    assert tank_bounds("T2", rules, None) is None


# ---------------------------------------------------------------- forecast skill


def test_skill_is_one_minus_the_ratio_of_maes_over_the_hours_all_three_know():
    measured = np.array([1.0, 2.0, 3.0, np.nan])
    got = skill(np.array([1.5, 2.0, 2.0, 9.0]), measured, np.array([2.0, 4.0, 3.0, 1.0]))
    assert got.hours == 3
    assert got.mae == pytest.approx(0.5) and got.naive_mae == pytest.approx(1.0)
    assert got.skill == pytest.approx(0.5)
    assert math.isnan(skill(np.array([np.nan]), np.array([1.0]), np.array([1.0])).skill)


def _day(bindings, held=None, week_before=None, tz="UTC", day=DAY):
    start, end = day_bounds_utc(day, tz)
    return KpiDay(day=day, tz=tz, start=start, end=end,
                  bindings=AssetsDoc.model_validate({"bindings": bindings}).bindings,
                  held=held or {}, week_before=week_before or {})


def test_forecast_skill_against_the_week_before():
    # the zone drew 10 l/s all day; a week before 12 l/s; the forecast said 11 l/s
    zone = [{"sensor": "q1", "role": "zone_inflow", "element": "town"}]
    t, v = every_5_min(np.full(288, 0.010))
    tw, vw = every_5_min(np.full(288, 0.012), START - timedelta(days=7))
    d = _day(zone, {"q1": Held.of(t, v)}, {"q1": Held.of(tw, vw)})
    fc = {"zone:town": {"issued_at": START - timedelta(hours=2), "method": "gbm",
                        "valid_ns": [LO + h * 3600 * NS for h in range(-2, 24)],
                        "p50": [0.011] * 26}}
    got = {k.name: k for k in forecast_skill(d, fc)}
    assert got["forecast_mae_m3s"].value == pytest.approx(0.001)
    assert got["naive_mae_m3s"].value == pytest.approx(0.002)
    assert got["forecast_skill"].value == pytest.approx(0.5)
    assert "over 24 of 24 h" in got["forecast_skill"].detail
    (none,) = forecast_skill(d, {})
    assert math.isnan(none.value) and "no forecast of zone:town" in none.detail


# ---------------------------------------------------------------- prices


def test_prices_per_period_on_the_spring_dst_day_and_a_holiday():
    tariff = TariffDoc.model_validate({"currency": "EUR", "periods": [
        {"name": "night", "price": "0.10 EUR/kWh", "end": "08:00"},
        {"name": "day", "price": "0.25 EUR/kWh", "start": "08:00",
         "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]},
        {"name": "holiday", "price": "0.12 EUR/kWh", "start": "08:00", "days": ["holiday"]}]})
    rome = TenantDoc(display_name="R", timezone="Europe/Rome", extra_holidays=["2025-03-31"])
    start, end = day_bounds_utc(date(2025, 3, 30), "Europe/Rome")  # 23 hours
    n = int((end - start).total_seconds()) // PERIOD_S
    prices = period_prices(tariff, rome, start, n)
    assert n == 276 and list(prices).count(0.10) == 7 * 12 and list(prices).count(0.25) == 16 * 12
    start, _ = day_bounds_utc(date(2025, 3, 31), "Europe/Rome")
    assert period_prices(tariff, rome, start, 288)[-1] == pytest.approx(0.12)


def test_cost_by_price_adds_up():
    prices = np.array([0.1, 0.1, 0.25, 0.25])
    energy = np.array([1.0, 2.0, 3.0, 0.5])
    parts = by_price(energy, prices)
    assert parts == [(0.1, 3.0), (0.25, 3.5)]
    assert sum(p * e for p, e in parts) == pytest.approx(float(energy @ prices))


# ---------------------------------------------------------------- pumps as run


def test_a_pump_runs_in_the_periods_its_flow_shows():
    flows = np.zeros(288)
    flows[6:30] = 0.012  # 00:30-02:30
    t, v = every_5_min(flows)
    d = _day([{"sensor": "f", "role": "pump_flow", "element": "P1"}], {"f": Held.of(t, v)})
    (drive,) = drives(d, ["P1"]).values()
    assert drive.on_hours == pytest.approx(2.0)
    assert drive.speeds[5:31].tolist() == [0.0] + [1.0] * 24 + [0.0]


def test_a_speed_sensor_gives_the_speed_while_running():
    speeds = np.zeros(288)
    speeds[:12] = 0.8
    t, v = every_5_min(speeds)
    d = _day([{"sensor": "s", "role": "pump_speed", "element": "P1"}], {"s": Held.of(t, v)})
    (drive,) = drives(d, ["P1"]).values()
    assert drive.speeds[:13].tolist() == pytest.approx([0.8] * 12 + [0.0])


# ---------------------------------------------------------------- schedule adherence


def test_adherence_counts_judged_periods_and_says_when_nothing_was_released():
    plan = released("t", 3, START, {"P1": [1.0, 0.0, 1.0]})  # 00-01 on, 01-02 off, 02-03 on
    status = np.zeros(36)
    status[:12] = 1.0  # ran 00-01 as planned, stayed off 02-03: one deviated period
    t, v = every_5_min(status)
    d = _day([{"sensor": "st", "role": "pump_status", "element": "P1"}])
    got = {k.subject: k for k in schedule_adherence(d, [plan], {"st": (t, v)})}
    assert got["P1"].value == pytest.approx(2 / 3)
    assert got["network"].value == pytest.approx(2 / 3)
    assert "2 of 3 judged pump-periods" in got["P1"].detail
    (none,) = schedule_adherence(d, [], {"st": (t, v)})
    assert math.isnan(none.value) and "no schedule released for 2024-05-01" in none.detail


# ---------------------------------------------------------------- the task


TINY_INP = """[TITLE]
KPI test: a reservoir, a constant-power pump, a tank, a town
[JUNCTIONS]
 J1  0  10
[RESERVOIRS]
 R1  0
[TANKS]
 T1  50  2  0  5  10  0
[PIPES]
 L1  T1  J1  100  300  100  0  Open
[PUMPS]
 P1  R1  T1  POWER 10
[CONTROLS]
 LINK P1 OPEN IF NODE T1 BELOW 1
 LINK P1 CLOSED IF NODE T1 ABOVE 4
[OPTIONS]
 Units  LPS
 Headloss  H-W
[TIMES]
 Duration  24:00
 Hydraulic Timestep  0:05
 Pattern Timestep  1:00
[ENERGY]
 Global Efficiency  75
[END]
"""
TARIFF = TariffDoc.model_validate({"currency": "EUR", "periods": [
    {"name": "night", "price": "0.10 EUR/kWh", "end": "08:00"},
    {"name": "day", "price": "0.25 EUR/kWh", "start": "08:00"}]})
BINDINGS = [{"sensor": "T1_level", "role": "tank_level", "element": "T1", "offset_m": 0.5},
            {"sensor": "P1_flow", "role": "pump_flow", "element": "P1"},
            {"sensor": "town", "role": "zone_inflow", "element": "town"}]


def _task(config: dict, series: dict, **params) -> dict:
    now = datetime(2024, 5, 3, tzinfo=UTC)
    event = TaskRequested(event_id="task-1", tenant="t", occurred_at=now, recorded_at=now,
                          kind="kpi.compute", params={"day": "2024-05-01", **params})
    readings = {s: t for s, (t, _) in series.items()}
    ctx = Context(processor="kpi", now=now, input=event, resources={
        "config": config, "readings": readings, "schedules": [],
        "kpi_inputs": {"series": series, "week_before": {}, "forecasts": {}}})
    out = list(HANDLERS["kpi.compute"](event, ctx))
    assert isinstance(out[-1], KpiComputed) and out[-1].day == "2024-05-01"
    return {(k.name, k.subject): k for k in out[-1].kpis}


def _series():
    flows = np.zeros(288)
    flows[:72] = 0.02  # 00:00-06:00
    flows[144:162] = 0.02  # 12:00-13:30
    levels = np.full(288, 2.0)
    levels[200:206] = 3.6  # + 0.5 offset = 4.1 m: 30 min above a 4.0 m rule
    return {"P1_flow": every_5_min(flows), "T1_level": every_5_min(levels),
            "town": every_5_min(np.full(288, 0.010))}


def test_the_day_on_a_tiny_network_known_good_energy_cost_and_saving():
    config = {"tenant": TenantDoc(display_name="T"), "assets": AssetsDoc.model_validate(
        {"bindings": BINDINGS}), "tariff": TARIFF, "network": TINY_INP,
        "rules": RulesDoc.model_validate({"tanks": {"T1": {"min_level_m": 0.5,
                                                           "max_level_m": 3.5}}})}
    k = _task(config, _series())
    # a POWER pump draws 10 kW / 0.75 whenever it runs: 7.5 h on
    assert k["energy_kwh", "P1"].value == pytest.approx(10 / 0.75 * 7.5, rel=1e-6)
    assert k["cost", "P1"].value == pytest.approx(10 / 0.75 * (6 * 0.10 + 1.5 * 0.25), rel=1e-6)
    assert k["pumped_m3", "P1"].value == pytest.approx(0.02 * 7.5 * 3600)
    assert k["specific_energy_kwh_per_m3", "network"].value == pytest.approx(
        100 / 540, rel=1e-6)
    assert k["cost_per_m3", "network"].value == pytest.approx(
        k["cost", "network"].value / 540, rel=1e-9)
    assert "on 7.50 h as P1_flow" in k["energy_kwh", "P1"].detail
    assert "T1 2.50 m measured at 00:00" in k["energy_kwh", "P1"].detail
    saving, cf = k["saving", "network"], k["counterfactual_cost", "network"]
    assert saving.value == pytest.approx(cf.value - k["cost", "network"].value, abs=1e-9)
    assert k["saving_energy_kwh", "network"].value == pytest.approx(
        k["counterfactual_energy_kwh", "network"].value - 100, rel=1e-6)
    # the .inp's controls fill T1 to 4 m: above the operators' 3.5 m
    assert "broke the rules" in saving.detail and "tank T1 above its maximum 3.50 m" in \
        saving.detail
    assert k["tank_violation_minutes", "T1"].value == pytest.approx(30)
    assert k["completeness", "P1_flow"].value == 1.0
    assert math.isnan(k["schedule_adherence", "network"].value)


def test_measured_power_is_preferred_and_the_saving_stays_like_for_like():
    series = _series()
    power = np.where(series["P1_flow"][1] > 0, 12_000.0, 0.0)  # 12 kW measured when on
    series["P1_power"] = (series["P1_flow"][0], power)
    config = {"tenant": TenantDoc(display_name="T"), "assets": AssetsDoc.model_validate(
        {"bindings": BINDINGS + [{"sensor": "P1_power", "role": "pump_power",
                                  "element": "P1"}]}), "tariff": TARIFF, "network": TINY_INP}
    k = _task(config, series)
    assert k["energy_kwh", "P1"].value == pytest.approx(12 * 7.5)
    assert k["energy_kwh", "P1"].detail.startswith("measured: ∫ P1_power")
    assert k["cost", "P1"].value == pytest.approx(12 * (6 * 0.10 + 1.5 * 0.25))
    # the saving compares the twin with itself (10 kW / 0.75 as run), not with the meter
    as_run_simulated = 10 / 0.75 * (6 * 0.10 + 1.5 * 0.25)
    assert k["saving", "network"].value == pytest.approx(
        k["counterfactual_cost", "network"].value - as_run_simulated, rel=1e-6)
    assert "T1 " in k["energy_kwh", "network"].detail and "measured" in \
        k["energy_kwh", "network"].detail


def test_without_a_network_or_tariff_the_readings_figures_remain():
    config = {"tenant": TenantDoc(display_name="T"), "assets": AssetsDoc.model_validate(
        {"bindings": BINDINGS}), "rules": RulesDoc.model_validate(
        {"tanks": {"T1": {"min_level_m": 0.5, "max_level_m": 4.0}}})}
    k = _task(config, _series())
    assert k["pumped_m3", "P1"].value == pytest.approx(540)
    assert k["tank_violation_minutes", "T1"].value == pytest.approx(30)
    assert math.isnan(k["energy_kwh", "P1"].value)
    assert "no network configured" in k["energy_kwh", "P1"].detail
    assert "no network configured" in k["saving", "network"].detail
    assert k["completeness", "town"].value == 1.0


def test_the_scheduled_run_computes_the_day_before_its_slot_in_the_tenants_zone():
    slot = datetime(2024, 5, 2, 22, 15, tzinfo=UTC)  # 00:15 on 3 May in Rome
    event = TaskRequested(event_id="x", tenant="t", occurred_at=slot,
                          recorded_at=slot + timedelta(days=2), kind="kpi.compute",
                          slot=slot)
    assert target_day(event, "Europe/Rome") == date(2024, 5, 2)
    assert "kpi.compute" in KINDS


def test_default_schedules_compute_the_kpis_every_night():
    (daily,) = SchedulesDoc().schedules
    assert (daily.task, daily.cron, daily.catch_up) == ("kpi.compute", "15 0 * * *", "all")
    assert SchedulesDoc.model_validate({"schedules": []}).schedules == []
