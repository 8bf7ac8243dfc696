"""The ``simulate`` task on L-Town (pure): a scenario's levels, pump figures, pressures,
cost and warnings; the schedule it runs (in force, by id, given, own controls); bad
params refused with what was expected; and the calibration against "measured" series
that a known simulation produced (error ~0), shifted (error = the shift), or missing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from bus.components import Context
from contracts.config import parse_document
from contracts.errors import TenantConfigError
from contracts.schedules import PumpPlan, ScheduleProposed
from contracts.simulations import SimulationCompleted
from contracts.tasks import TaskProgressed, TaskRequested
from ops.dev.demo import LTOWN_ASSETS, LTOWN_RULES, LTOWN_TARIFF
from processors.simulate.calibration import PERIOD_S, calibrate
from processors.simulate.network import load_network
from processors.simulate.run import Twin
from processors.simulate.task import handle_simulate

START = datetime(2019, 1, 15, 0, 0, tzinfo=UTC)
ID = "00000000-0000-4000-8000-000000000001"
PLAN_ID = "11111111-2222-4333-8444-555555555555"


@pytest.fixture(scope="module")
def config(shared_data):
    return {"tenant": parse_document("tenant", {"display_name": "x", "timezone": "UTC"}),
            "network": (shared_data / "battledim" / "L-TOWN.inp").read_text("latin-1"),
            "assets": parse_document("assets", LTOWN_ASSETS),
            "tariff": parse_document("tariff", LTOWN_TARIFF),
            "rules": parse_document("rules", LTOWN_RULES), "versions": {"network": 3}}


@pytest.fixture(scope="module")
def network(config):
    return load_network(config["network"])


def _inputs(**kw):
    base = {"levels": {"T1": 3.0}, "level_at": {"T1": START},
            "demand": {"town": {"p50": [0.18] * 6, "p90": None, "source": "forecast x"}},
            "prices": None, "released": None}
    return {**base, **kw}


def _run(config, inputs=None, calibration=None, **params):
    event = TaskRequested(event_id=ID, tenant="t", occurred_at=START, recorded_at=START,
                          kind="simulate", params={"start": START.isoformat(),
                                                   "horizon_h": 6, **params})
    ctx = Context(processor="worker-twin", now=START, input=event,
                  resources={"config": config, "optimise_inputs": inputs or _inputs(),
                             "calibration_inputs": calibration})
    out = list(handle_simulate(event, ctx))
    assert any(isinstance(e, TaskProgressed) for e in out)
    (done,) = [e for e in out if isinstance(e, SimulationCompleted)]
    return done


def test_own_controls_levels_pumps_cost_and_pressure(config):
    s = _run(config, schedule="own-controls")
    assert s.task_id == ID and s.periods == 6 and s.period_s == 3600 and s.start == START
    assert s.scenario.schedule == "own controls" and s.scenario.demand == "forecast"
    assert s.scenario.demand_sources == {"town": "forecast x"}
    assert s.scenario.initial_levels_m == {"T1": 3.0}
    assert s.scenario.initial_level_sources == {"T1": "measured"}
    (t1,) = s.tanks
    assert len(t1.levels_m) == 7 and t1.levels_m[0] == pytest.approx(3.0)
    assert t1.min_m <= min(t1.levels_m) and t1.max_m >= max(t1.levels_m)
    (p,) = s.pumps
    assert p.pump == "PUMP_1" and len(p.status) == len(p.flow_m3s) == len(p.head_m) == 6
    assert all(0 <= x <= 1 for x in p.status) and p.speed == [None] * 6
    ran = [k for k in range(6) if p.status[k] > 0]
    assert ran and all(p.head_m[k] > 0 and p.flow_m3s[k] > 0 for k in ran)
    # night rate 0.10 EUR/kWh all six hours: cost = 0.10 x energy, per period and in total
    assert s.inputs["prices_per_kwh"] == pytest.approx([0.10] * 6)
    assert s.cost == pytest.approx(0.10 * s.energy_kwh, rel=1e-6)
    assert sum(p.energy_kwh) == pytest.approx(s.energy_kwh, rel=1e-6)
    assert p.cost == pytest.approx([0.10 * e for e in p.energy_kwh], abs=1e-6)
    assert set(s.min_pressure_m) == {"town"} and len(s.min_pressure_m["town"]) == 6
    assert s.inputs["config_versions"] == {"network": 3} and s.calibration is None


def test_a_tank_draining_empty_is_warned(config):
    s = _run(config, horizon_h=12, out_of_service=["PUMP_1"], demand_multiplier=1.5,
             inputs=_inputs(demand={"town": {"p50": [0.18] * 12, "p90": None,
                                             "source": "forecast x"}}))
    assert s.scenario.out_of_service == ["PUMP_1"] and s.scenario.demand_multiplier == 1.5
    assert s.pumps[0].status == [0.0] * 12 and s.pumps[0].speed == [0.0] * 12
    assert s.energy_kwh == 0 and s.cost == 0
    assert s.tanks[0].min_m == pytest.approx(0.0, abs=1e-3)
    assert any("tank T1 empty" in w for w in s.warnings), s.warnings
    assert any("below its operating minimum 0.50 m" in w for w in s.warnings), s.warnings


def test_the_schedule_in_force_given_statuses_and_a_proposal_by_id(config):
    released = {"schedule_id": PLAN_ID, "speeds": {"PUMP_1": [1.0, 1.0, 0.0, 0.0]}}
    s = _run(config, inputs=_inputs(released=released))
    assert s.scenario.schedule == f"schedule {PLAN_ID} (in force)"
    assert s.pumps[0].speed == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # the last speed held
    assert any("covers 4 of 6 h" in w for w in s.warnings)
    assert s.pumps[0].status[:2] == [1.0, 1.0] and s.pumps[0].status[2:] == [0.0] * 4
    assert s.inputs["released"] == PLAN_ID

    none = _run(config)  # in force by default; none is: the network's own controls
    assert none.scenario.schedule == "own controls (no schedule in force)"

    given = _run(config, schedule={"PUMP_1": [0, 0, 1, 1, 0, 0]})
    assert given.scenario.schedule == "given statuses"
    assert given.pumps[0].status == [0.0, 0.0, 1.0, 1.0, 0.0, 0.0]

    plan = ScheduleProposed(event_id=PLAN_ID, tenant="t", occurred_at=START,
                            recorded_at=START, task_id="x", start=START - timedelta(hours=2),
                            period_s=3600, pumps=[PumpPlan(pump="PUMP_1",
                                                           speeds=[0, 0] + [1, 0] * 3)],
                            energy_kwh=0, cost=0, verified=True)
    by_id = _run(config, inputs=_inputs(schedule=plan), schedule=PLAN_ID)
    assert by_id.scenario.schedule == f"schedule {PLAN_ID}"
    assert by_id.pumps[0].speed == [1, 0, 1, 0, 1, 0]  # from the start, two hours in


@pytest.mark.parametrize("params, message", [
    ({"horizon": 6}, "unknown horizon"),
    ({"demand": "guess"}, "'forecast' or 'actual'"),
    ({"horizon_h": 500}, "horizon_h: 1..168"),
    ({"calibrate_days": 30}, "calibrate_days: 0..14"),
    ({"calibrate_days": "three"}, "expected whole days"),
    ({"out_of_service": ["PUMP_9"]}, "no pump PUMP_9"),
    ({"demand_multiplier": "lots"}, "expected a number"),
    ({"schedule": {"PUMP_9": 1}}, "no pump PUMP_9"),
    ({"schedule": {"PUMP_1": [1, 0]}}, "2 speeds, expected 6"),
    ({"schedule": {"PUMP_1": 7}}, "speeds 0..1.5"),
    ({"schedule": "sometimes"}, "'in-force', 'own-controls', a schedule id"),
    ({"schedule": PLAN_ID}, f"no proposed schedule {PLAN_ID}"),
    ({"start": "2019-01-15 00:00"}, "give a zone"),
])
def test_bad_params_are_refused_saying_what_was_expected(config, params, message):
    with pytest.raises(TenantConfigError, match=message):
        _run(config, **params)


def test_no_tariff_or_network_is_said(config):
    with pytest.raises(TenantConfigError, match="no tariff"):
        _run({**config, "tariff": None})
    with pytest.raises(TenantConfigError, match="no network"):
        _run({**config, "network": None})


# ---------------------------------------------------------------- calibration


@pytest.fixture(scope="module")
def measured(network):
    """A day before START as the network's own controls run it from the model's levels:
    T1's level and PUMP_1's flow every 5 minutes, as SCADA would have sent them."""
    with Twin(network) as twin:
        sim = twin.run(None, horizon_s=86400, period_s=PERIOD_S)
    lo = int((START - timedelta(days=1)).timestamp()) * 10**9
    ts = lo + (sim.times_s * 10**9).astype(np.int64)
    on_grid = (sim.times_s % PERIOD_S == 0) & (sim.times_s < 86400)
    return {"T1": (ts[on_grid], sim.tank_level_m[on_grid, 0]),
            "PUMP_1": (ts[on_grid], sim.pump_flow_m3s[on_grid, 0])}


def test_calibration_against_its_own_simulation_is_near_zero(network, config, measured):
    cal = calibrate(network, config["assets"].bindings, measured, START, 1)
    assert cal.days == 1 and cal.windows == [START - timedelta(days=1)]
    (tank,) = cal.tanks
    assert tank.sensor == "T1" and tank.points == 288
    assert tank.rmse_m < 0.02 and abs(tank.bias_m) < 0.02 and tank.max_abs_m < 0.1
    (pump,) = cal.pumps
    assert pump.sensor == "PUMP_1" and pump.points == 288
    assert pump.rmse_m3s < 0.005 and pump.rmse_pct < 5
    assert any("PUMP_1 driven by PUMP_1 (pump_flow)" in n for n in cal.notes)


def test_a_level_off_by_a_constant_shows_as_that_bias(network, config, measured):
    """The level sensor reads 0.25 m high and only from 00:30 (so the day starts from
    the model's level, as the series did): every simulated level is 0.25 m below."""
    t, v = measured["T1"]
    late = t >= t[0] + 1800 * 10**9
    shifted = {**measured, "T1": (t[late], v[late] + 0.25)}
    cal = calibrate(network, config["assets"].bindings, shifted, START, 1)
    (tank,) = cal.tanks
    assert tank.bias_m == pytest.approx(-0.25, abs=0.02)
    assert tank.rmse_m == pytest.approx(0.25, abs=0.02)
    assert any("starts at the model's" in n for n in cal.notes)


def test_the_sensors_offset_counts_at_the_start_and_in_the_comparison(network, config,
                                                                      measured):
    """The raw series 0.4 m low with an offset of +0.4 m in the binding: the same day."""
    t, v = measured["T1"]
    bindings = [b.model_copy(update={"offset_m": 0.4}) if b.role == "tank_level" else b
                for b in config["assets"].bindings]
    cal = calibrate(network, bindings, {**measured, "T1": (t, v - 0.4)}, START, 1)
    assert cal.tanks[0].rmse_m < 0.02


def test_what_cannot_be_compared_says_why(network, measured):
    bindings = parse_document("assets", {"bindings": [
        {"sensor": "p227", "role": "zone_inflow", "element": "town"}]}).bindings
    cal = calibrate(network, bindings, measured, START, 2)
    assert cal.tanks[0].rmse_m is None and "no tank_level sensor bound" in cal.tanks[0].reason
    assert cal.pumps[0].rmse_m3s is None and "no pump_flow sensor bound" in cal.pumps[0].reason
    assert len(cal.windows) == 2


def test_the_task_reports_the_calibration(config, measured):
    s = _run(config, calibrate_days=1, calibration={"series": measured})
    assert s.calibration is not None and s.calibration.tanks[0].rmse_m < 0.02
    empty = _run(config, calibrate_days=1, calibration={"series": {}})
    assert "no readings of T1" in empty.calibration.tanks[0].reason


def test_the_projection_rows_of_a_run(config):
    """One summary row, a tank row per period start and the end, a pump and a zone row
    per period; the keys differ row by row (a replay upserts the same rows)."""
    from projections.simulations import frame

    s = _run(config, schedule="own-controls")
    df = frame([s, s])  # the same event twice: the same keys twice
    one = frame([s])
    assert one["kind"].value_counts().to_dict() == {"summary": 1, "tank": 7, "pump": 6,
                                                    "zone": 6}
    keys = ["ts", "tenant", "simulation_id", "kind", "element"]
    assert not one.duplicated(keys).any() and df.drop_duplicates(keys).shape == one.shape
    pump = one[one["kind"] == "pump"].sort_values("ts")
    assert list(pump["energy_kwh"]) == pytest.approx(s.pumps[0].energy_kwh)
    summary = one[one["kind"] == "summary"].iloc[0]
    assert summary["energy_kwh"] == pytest.approx(s.energy_kwh) and summary["period"] == 6


def test_a_chain_rule_may_request_a_simulation(config):
    """A chain adds ``cause`` and ``cause_type`` to the params of every request."""
    s = _run(config, cause="e1", cause_type="schedule.released")
    assert s.pumps and s.tanks
