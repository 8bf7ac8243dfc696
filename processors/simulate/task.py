"""The ``simulate`` task (pure handler): the tenant's network run in EPANET over a horizon
under a scenario, as one ``simulation.completed``.

Resources (loaded by the runner, ``ops/loaders.py``): ``config`` (as of the request);
``optimise_inputs`` (initial tank levels from the latest readings with the sensors'
offsets, each zone's demand from the latest forecast issued before the start or from
what was measured, the schedule in force, a schedule named by id, dynamic prices);
``calibration_inputs`` (the bound sensors' readings over the days before the start, when
a calibration is asked for).

Params: ``start`` (ISO, default the request time rounded up to the hour), ``horizon_h``
(1..168, default 24), ``demand`` (``forecast`` default, or ``actual``: a what-if on the
past), ``schedule`` (``in-force`` default: the released schedule covering the start, the
network's own controls when none does; ``own-controls``; a proposed schedule's id; or
``{pump: speed or [speed per hour]}``, 0 = off), ``out_of_service`` (pump ids, on top of
the operating rules'), ``demand_multiplier`` (0..10, default 1), ``calibrate_days``
(0..14, default 0: the twin against the readings of that many days before the start).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import datetime

import numpy as np

from bus.components import Context
from contracts.base import Event
from contracts.errors import TenantConfigError
from contracts.simulations import PumpRun, SimulationCompleted, SimulationScenario, TankRun
from processors.simulate.calibration import MAX_DAYS, calibrate
from processors.simulate.cost import PeriodPrices, cost_by_period
from processors.simulate.feasibility import operator_warnings
from processors.simulate.inputs import (PERIOD_S, horizon_of, prices, start_of, starting_point,
                                        zones_of)
from processors.simulate.network import Network, load_network
from processors.simulate.run import SimulationResult, simulate
from processors.simulate.scenario import ALL_JUNCTIONS, Scenario

KINDS = ("simulate",)
NEEDS = ("config", "optimise_inputs", "calibration_inputs")
PARAMS = ("start", "horizon_h", "demand", "schedule", "out_of_service", "demand_multiplier",
          "calibrate_days")
CHAIN_PARAMS = ("cause", "cause_type")  # what a chain rule adds to every request
RUNNING_FLOW_M3S = 1e-6
MAX_SPEED = 1.5
SCHEDULE_ID = re.compile(r"[0-9a-f-]{36}")


def calibrate_days(event) -> int:
    raw = event.params.get("calibrate_days", 0)
    try:
        days = int(raw)
    except (TypeError, ValueError):
        raise TenantConfigError(f"params.calibrate_days: expected whole days, got "
                                f"{raw!r}") from None
    if not 0 <= days <= MAX_DAYS:
        raise TenantConfigError(f"params.calibrate_days: 0..{MAX_DAYS}, got {days}")
    return days


def _check_params(event) -> str:
    unknown = sorted(set(event.params) - set(PARAMS) - set(CHAIN_PARAMS))
    if unknown:
        raise TenantConfigError(f"params: unknown {', '.join(unknown)}; the simulate task "
                                f"takes {', '.join(PARAMS)}")
    demand = str(event.params.get("demand", "forecast"))
    if demand not in ("forecast", "actual"):
        raise TenantConfigError(f"params.demand: 'forecast' or 'actual', got {demand!r}")
    return demand


def _out_of_service(event, network: Network, rules) -> list[str]:
    raw = event.params.get("out_of_service", ())
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not all(isinstance(p, str) for p in raw):
        raise TenantConfigError(f"params.out_of_service: expected a list of pump ids, got "
                                f"{raw!r}")
    unknown = sorted(set(raw) - set(network.pump_ids))
    if unknown:
        raise TenantConfigError(f"params.out_of_service: no pump {', '.join(unknown)} in the "
                                f"network; pumps are {', '.join(network.pump_ids)}")
    by_rules = {p for p, r in (rules.pumps.items() if rules else ())
                if r.out_of_service and p in network.pump_ids}
    return sorted(set(raw) | by_rules)


def _speed(pump: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TenantConfigError(f"params.schedule.{pump}: expected speeds (0 = off, 1 = on), "
                                f"got {value!r}") from None
    if not 0 <= v <= MAX_SPEED:
        raise TenantConfigError(f"params.schedule.{pump}: speeds 0..{MAX_SPEED}, got {v}")
    return v


def _padded(speeds: list[float], periods: int, what: str, warnings: list[str]) -> list[float]:
    if len(speeds) >= periods:
        return [float(s) for s in speeds[:periods]]
    if not speeds:
        raise TenantConfigError(f"{what} covers none of the horizon")
    warnings.append(f"{what} covers {len(speeds)} of {periods} h; its last speed is held "
                    f"for the rest")
    return [float(s) for s in speeds] + [float(speeds[-1])] * (periods - len(speeds))


def schedule_of(event, network: Network, inputs: dict, start: datetime, periods: int
                ) -> tuple[dict[str, list[float]] | None, str, list[str]]:
    """(pump -> speed per period, or None for the network's own controls; the scenario's
    words for it; warnings)."""
    raw = event.params.get("schedule", "in-force")
    warnings: list[str] = []
    if isinstance(raw, dict):
        if not raw:
            raise TenantConfigError("params.schedule: an empty set of pump statuses")
        unknown = sorted(set(raw) - set(network.pump_ids))
        if unknown:
            raise TenantConfigError(f"params.schedule: no pump {', '.join(unknown)} in the "
                                    f"network; pumps are {', '.join(network.pump_ids)}")
        out = {}
        for pump, values in raw.items():
            if isinstance(values, list | tuple):
                if len(values) != periods:
                    raise TenantConfigError(f"params.schedule.{pump}: {len(values)} speeds, "
                                            f"expected {periods} (one per hour of the horizon)")
                out[pump] = [_speed(pump, v) for v in values]
            else:
                out[pump] = [_speed(pump, values)] * periods
        others = [p for p in network.pump_ids if p not in out]
        words = "given statuses" + (f" ({', '.join(others)}: own controls)" if others else "")
        return out, words, warnings
    if not isinstance(raw, str):
        raise TenantConfigError(f"params.schedule: 'in-force', 'own-controls', a schedule id "
                                f"or {{pump: speeds}}, got {raw!r}")
    if raw == "own-controls":
        return None, "own controls", warnings
    if raw == "in-force":
        released = inputs.get("released")
        if released is None:
            warnings.append("no released schedule in force at the start: the network's own "
                            "controls run the pumps")
            return None, "own controls (no schedule in force)", warnings
        what = f"schedule {released['schedule_id']} (in force)"
        speeds = {p: _padded(list(s), periods, what, warnings)
                  for p, s in released["speeds"].items() if p in network.pump_ids}
        return speeds, what, warnings
    if not SCHEDULE_ID.fullmatch(raw):
        raise TenantConfigError(f"params.schedule: 'in-force', 'own-controls', a schedule id "
                                f"(a UUID) or {{pump: speeds}}, got {raw[:60]!r}")
    plan = inputs.get("schedule")
    if plan is None or plan.event_id != raw:
        raise TenantConfigError(f"params.schedule: no proposed schedule {raw} for this tenant")
    end = plan.start.timestamp() + plan.period_s * (len(plan.pumps[0].speeds)
                                                     if plan.pumps else 0)
    if not plan.start.timestamp() <= start.timestamp() < end:
        raise TenantConfigError(f"params.schedule: schedule {raw} runs from "
                                f"{plan.start.isoformat()} for "
                                f"{(end - plan.start.timestamp()) / 3600:g} h; the start "
                                f"{start.isoformat()} is outside it")
    speeds = {}
    for p in plan.pumps:
        if p.pump not in network.pump_ids:
            continue
        at = [int((start.timestamp() + k * PERIOD_S - plan.start.timestamp()) // plan.period_s)
              for k in range(periods)]
        inside = [p.speeds[i] for i in at if i < len(p.speeds)]
        speeds[p.pump] = _padded(inside, periods, f"schedule {raw}", warnings)
    return speeds, f"schedule {raw}", sorted(set(warnings))


def _clamped_levels(network: Network, levels: dict[str, float], sources: dict[str, str],
                    warnings: list[str]) -> dict[str, float]:
    out = {}
    for tank_id, level in levels.items():
        t = network.tank(tank_id)
        if not t.min_level_m <= level <= t.max_level_m:
            inside = min(max(level, t.min_level_m), t.max_level_m)
            warnings.append(f"tank {tank_id}: the measured level {level:.2f} m is outside the "
                            f"model's [{t.min_level_m:.2f}, {t.max_level_m:.2f}] m; the run "
                            f"starts at {inside:.2f} m")
            level = inside
        out[tank_id] = float(level)
        sources[tank_id] = "measured"
    for t in network.tanks:
        sources.setdefault(t.id, "model")
    return out


def _r(x: float, digits: int = 6) -> float:
    return round(float(x), digits)


def _pumps(sim: SimulationResult, speeds, period_cost: np.ndarray, oos) -> list[PumpRun]:
    running = (sim.pump_flow_m3s > RUNNING_FLOW_M3S).astype(float)
    share = sim.period_sum(running) / sim.period_s
    run_s = sim.period_sum(running)
    head = sim.period_sum(np.nan_to_num(sim.pump_head_m) * running)
    flow = sim.period_mean_flow_m3s()
    power = sim.period_sum(sim.pump_power_kw) / sim.period_s
    energy = sim.period_energy_kwh()
    out = []
    for k, pump in enumerate(sim.pump_ids):
        given = [0.0] * sim.periods if pump in oos else (speeds or {}).get(pump)
        out.append(PumpRun(
            pump=pump, status=[_r(x, 4) for x in share[:, k]],
            speed=[_r(x, 4) for x in given] if given is not None else [None] * sim.periods,
            flow_m3s=[_r(x) for x in flow[:, k]],
            head_m=[_r(h / s, 3) if s > 0 else None for h, s in zip(head[:, k], run_s[:, k])],
            power_kw=[_r(x, 3) for x in power[:, k]],
            energy_kwh=[_r(x) for x in energy[:, k]],
            cost=[_r(x) for x in period_cost[:, k]]))
    return out


def _min_pressure(sim: SimulationResult) -> dict[str, list[float]]:
    idx = sim.period_index()
    out = {}
    for group, series in sim.min_pressure_m.items():
        lows = np.full(sim.periods, np.inf)
        keep = (idx < sim.periods) & np.isfinite(series)
        np.minimum.at(lows, idx[keep], series[keep])
        out[group] = [_r(x, 3) if math.isfinite(x) else math.nan for x in lows]
    return out


def _rule_warnings(network: Network, sim: SimulationResult, rules) -> list[str]:
    out = []
    for k, tank in enumerate(network.tanks):
        r = rules.tanks.get(tank.id) if rules else None
        if r is None:
            continue
        lv = sim.tank_level_m[:, k]
        if r.min_level_m is not None and lv.min() < r.min_level_m - 1e-6:
            i = int(lv.argmin())
            out.append(f"tank {tank.id} below its operating minimum {r.min_level_m:.2f} m: "
                       f"{lv[i]:.2f} m at t={(sim.times_s[i] - sim.start_s) / 3600:.2f} h")
        if r.max_level_m is not None and lv.max() > r.max_level_m + 1e-6:
            i = int(lv.argmax())
            out.append(f"tank {tank.id} above its operating maximum {r.max_level_m:.2f} m: "
                       f"{lv[i]:.2f} m at t={(sim.times_s[i] - sim.start_s) / 3600:.2f} h")
    return out


def handle_simulate(event, ctx: Context) -> Iterator[Event]:
    config = ctx.resources["config"]
    inputs = ctx.resources["optimise_inputs"]
    demand_source = _check_params(event)
    days = calibrate_days(event)
    tenant, rules, assets = config.get("tenant"), config.get("rules"), config.get("assets")
    if tenant is None or config.get("network") is None:
        raise TenantConfigError("the tenant has no network configured")
    if config.get("tariff") is None:
        raise TenantConfigError("the tenant has no tariff configured (the run is priced by it)")
    network = load_network(config["network"])
    start, hours = start_of(event), horizon_of(event)
    periods = hours * 3600 // PERIOD_S
    oos = _out_of_service(event, network, rules)
    zones = zones_of(assets)
    begun = starting_point(event, network, zones, inputs, start, periods)
    speeds, schedule_words, schedule_warnings = schedule_of(event, network, inputs, start,
                                                            periods)
    warnings = list(begun.warnings) + schedule_warnings
    level_sources: dict[str, str] = {}
    levels = _clamped_levels(network, begun.levels, level_sources, warnings)
    tariff = PeriodPrices(prices(config["tariff"], tenant, start, periods,
                                 inputs.get("prices")), PERIOD_S)
    named = {z: j for z, j in zones.items() if j != [ALL_JUNCTIONS]}
    groups = {z: (network.junctions if j == [ALL_JUNCTIONS] else j) for z, j in zones.items()}
    yield ctx.progress(0.1, f"inputs ready: simulating {hours} h")
    sim = simulate(network, Scenario(
        horizon_s=periods * PERIOD_S, period_s=PERIOD_S, schedule=speeds,
        initial_levels_m=levels, demand_multipliers=begun.demand, zones=named,
        out_of_service=frozenset(oos)), pressure_groups=groups or None)
    period_cost = cost_by_period(tariff, network, sim)
    at_starts = sim.levels_at_period_starts()
    tanks = [TankRun(tank=t.id, levels_m=[_r(x, 4) for x in at_starts[:, k]],
                     min_m=_r(sim.tank_level_m[:, k].min(), 4),
                     max_m=_r(sim.tank_level_m[:, k].max(), 4),
                     lower_m=t.min_level_m, upper_m=t.max_level_m)
             for k, t in enumerate(network.tanks)]
    schedule = {p: np.asarray(s) for p, s in speeds.items()} if speeds else None
    warnings = (operator_warnings(network, sim, schedule) + _rule_warnings(network, sim, rules)
                + warnings)
    calibration = None
    if days:
        yield ctx.progress(0.5, f"calibration: simulating the {days} days before the start")
        readings = (ctx.resources.get("calibration_inputs") or {}).get("series") or {}
        calibration = calibrate(network, assets.bindings if assets else (), readings, start,
                                days, oos)
    yield ctx.derive(
        SimulationCompleted, task_id=event.event_id, start=start, period_s=PERIOD_S,
        periods=periods,
        scenario=SimulationScenario(
            demand=demand_source, demand_sources=begun.sources, schedule=schedule_words,
            out_of_service=oos,
            demand_multiplier=float(event.params.get("demand_multiplier", 1.0)),
            initial_levels_m={t: _r(v, 4) for t, v in levels.items()},
            initial_level_sources=level_sources),
        tanks=tanks, pumps=_pumps(sim, speeds, period_cost, oos),
        min_pressure_m=_min_pressure(sim),
        energy_kwh=_r(sim.period_energy_kwh().sum()), cost=_r(period_cost.sum()),
        currency=config["tariff"].currency, warnings=warnings[:100], calibration=calibration,
        inputs={"config_versions": dict(config.get("versions") or {}),
                "prices_per_kwh": list(tariff.prices_per_kwh),
                "released": (inputs.get("released") or {}).get("schedule_id")})


HANDLERS = {"simulate": handle_simulate}
