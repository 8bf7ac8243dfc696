"""The ``optimise`` and ``schedule.release`` tasks (pure handlers).

``optimise``: the tenant's network, tariff, operating rules and bindings (``config``, as
of the request) and ``optimise_inputs`` (loaded by the runner: initial tank levels from
the latest readings with the sensors' offsets; each zone's demand over the horizon from
the latest forecast issued before the start, or from what was measured for a what-if on
the past; the schedule in force, for the stability penalty; dynamic prices) become a
``Problem``; the optimiser proposes a schedule verified in EPANET, with its baseline (the
network's own controls under the same demand, levels and tariff) and a reason per
pump-period.  ``schedule.proposed`` carries it all; a schedule EPANET shows infeasible is
proposed as not verified (with the reason) and never released.

``schedule.release``: a verified proposal (``params.schedule_id``) becomes
``schedule.released`` (version = the tenant's last version released before the
request + 1), by ``approved_by``
(advisory mode) or ``automatic``.

Params of ``optimise``: ``start`` (ISO, default the request time rounded up to the hour),
``horizon_h`` (default 24), ``demand`` (``forecast`` default, or ``actual``),
``time_limit_s`` (default 120), ``out_of_service`` (pump ids), ``demand_multiplier``,
``what_if`` (true: a question, not a plan: the proposal's mode is ``what-if`` and it is
never released, neither by approval nor by the automatic chain).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from bus.components import Context
from contracts.base import Event
from contracts.errors import TenantConfigError
from contracts.schedules import PumpPlan, ScheduleProposed, ScheduleReleased
from processors.optimise import Problem, PumpRules, optimise
from processors.simulate.cost import PeriodPrices
from processors.simulate.inputs import (  # noqa: F401 - MAX_LEVEL_AGE_S kept for callers
    MAX_LEVEL_AGE_S, PERIOD_S, horizon_of, prices, start_of, starting_point, zones_of,
)
from processors.simulate.network import load_network
from processors.simulate.scenario import ALL_JUNCTIONS

KINDS = ("optimise", "schedule.release")
NEEDS = ("config", "optimise_inputs")
WHAT_IF = "what-if"  # ScheduleProposed.mode of a what-if run


def pump_rules(rules, network, start: datetime, periods: int, tz: str) -> dict[str, PumpRules]:
    out = {}
    zone = ZoneInfo(tz)
    days = periods * PERIOD_S / 86400
    for pump_id in network.pump_ids:
        r = rules.pumps.get(pump_id) if rules else None
        if r is None:
            continue
        forbidden = set()
        for w in r.forbidden:
            lo = int(w.start[:2]) * 60 + int(w.start[3:])
            hi = 24 * 60 if w.end == "24:00" else int(w.end[:2]) * 60 + int(w.end[3:])
            for k in range(periods):
                local = (start + timedelta(seconds=k * PERIOD_S)).astimezone(zone)
                minute = local.hour * 60 + local.minute
                if (local.strftime("%a").lower()[:3] in w.days) and lo <= minute < hi:
                    forbidden.add(k)
        out[pump_id] = PumpRules(
            min_on_s=int(r.min_on_s), min_off_s=int(r.min_off_s),
            max_starts=(None if r.max_starts_per_day is None
                        else max(1, round(r.max_starts_per_day * days))),
            forbidden_periods=frozenset(forbidden))
    return out


def problem_of(event, config: dict, inputs: dict) -> tuple[Problem, dict]:
    tenant, rules, assets = config.get("tenant"), config.get("rules"), config.get("assets")
    if tenant is None or config.get("network") is None:
        raise TenantConfigError("the tenant has no network configured")
    if config.get("tariff") is None:
        raise TenantConfigError("the tenant has no tariff configured")
    network = load_network(config["network"])
    start, hours = start_of(event), horizon_of(event)
    periods = hours * 3600 // PERIOD_S
    zones = zones_of(assets)
    begun = starting_point(event, network, zones, inputs, start, periods)
    demand, upper, used = begun.demand, begun.upper, begun.sources
    levels, warnings = begun.levels, begun.warnings
    tank_bounds = {}
    final = {}
    for tank_id in network.tank_ids:
        r = rules.tanks.get(tank_id) if rules else None
        if r is None:
            continue
        t = network.tank(tank_id)
        tank_bounds[tank_id] = (t.min_level_m if r.min_level_m is None else r.min_level_m,
                                t.max_level_m if r.max_level_m is None else r.max_level_m)
        if r.final_level != "initial":
            final[tank_id] = float(r.final_level)
    out_of_service = frozenset(event.params.get("out_of_service", ())) | frozenset(
        p for p, r in (rules.pumps.items() if rules else ()) if r.out_of_service)
    released = inputs.get("released")
    stability = int(rules.change_horizon_h * 3600 // PERIOD_S) if rules else 0
    problem = Problem(
        network=network,
        tariff=PeriodPrices(prices(config["tariff"], tenant, start, periods,
                                   inputs.get("prices")), PERIOD_S),
        horizon_s=periods * PERIOD_S, period_s=PERIOD_S,
        pump_rules=pump_rules(rules, network, start, periods, tenant.timezone),
        exclusive_pumps=tuple((g[0], g[1]) for g in (rules.exclusive if rules else ())
                              if len(g) >= 2),
        initial_levels_m=levels, tank_bounds_m=tank_bounds, final_levels_m=final,
        demand_multipliers=demand, demand_multipliers_upper=upper,
        zones={z: j for z, j in zones.items() if j != [ALL_JUNCTIONS]},
        out_of_service=out_of_service,
        released=released["speeds"] if released else None,
        stability_penalty=rules.change_penalty if rules else 0.0,
        stability_periods=stability)
    facts = {"start": start, "periods": periods, "demand_sources": used, "levels": levels,
             "released": released["schedule_id"] if released else None, "warnings": warnings}
    return problem, facts


def handle_optimise(event, ctx: Context) -> Iterator[Event]:
    config, inputs = ctx.resources["config"], ctx.resources["optimise_inputs"]
    problem, facts = problem_of(event, config, inputs)
    yield ctx.progress(0.05, "problem built: optimising")
    limit = float(event.params.get("time_limit_s", 120))
    result = optimise(problem, time_limit_s=limit)
    verified = result.status == "verified"
    sim = result.simulation
    levels = sim.levels_at_period_starts()
    tanks = {t: [float(x) for x in levels[:, i]] for i, t in enumerate(sim.tank_ids)}
    network = problem.network
    bounds = {t: list(problem.tank_bounds_m.get(t, (network.tank(t).min_level_m,
                                                    network.tank(t).max_level_m)))
              for t in sim.tank_ids}
    pumps = [PumpPlan(pump=p, speeds=[float(v) for v in result.speeds[:, k]],
                      reasons=[result.reasons[t][k] for t in range(len(result.reasons))])
             for k, p in enumerate(result.pump_ids)]
    stats = result.stats
    yield ctx.derive(
        ScheduleProposed, task_id=event.event_id, start=facts["start"],
        period_s=result.period_s, pumps=pumps, tanks=tanks, tank_bounds=bounds,
        energy_kwh=round(float(result.energy_kwh), 6), cost=round(float(result.cost), 6),
        currency=config["tariff"].currency,
        baseline_energy_kwh=round(float(result.baseline.energy_kwh().sum()), 6),
        baseline_cost=round(float(result.baseline_cost), 6),
        saving=round(float(result.saving), 6), verified=verified,
        status=result.status, reason=result.reason,
        feasibility={"feasible": bool(result.feasibility.feasible),
                     "reasons": list(result.feasibility.reasons)[:50],
                     "warnings": list(result.feasibility.warnings)[:50],
                     "baseline_feasible": bool(result.baseline_feasibility.feasible),
                     "baseline_reasons": list(result.baseline_feasibility.reasons)[:20]},
        solver={"objective": stats.objective, "bound": stats.bound, "gap": stats.gap,
                "mip_time_s": round(stats.mip_time_s, 3), "rounds": stats.rounds,
                "evaluations": stats.evaluations, "time_limited": stats.time_limited},
        inputs={"demand": facts["demand_sources"], "initial_levels_m": facts["levels"],
                "released": facts["released"], "warnings": facts["warnings"],
                "config_versions": dict(config.get("versions") or {}),
                "prices_per_kwh": list(problem.tariff.prices_per_kwh)},
        mode=WHAT_IF if event.params.get("what_if") else config["tenant"].mode("schedules"))


def handle_release(event, ctx: Context) -> Iterator[Event]:
    inputs = ctx.resources["optimise_inputs"]
    proposed = inputs.get("proposed")
    if proposed is None:
        raise TenantConfigError(f"params.schedule_id: no proposed schedule "
                                f"{event.params.get('schedule_id')!r}")
    if not proposed.verified:
        raise TenantConfigError(f"schedule {proposed.event_id} was not verified in EPANET "
                                f"({proposed.reason}): it is never released")
    if proposed.mode == WHAT_IF:
        raise TenantConfigError(f"schedule {proposed.event_id} answers a what-if: it is never "
                                f"released")
    by = str(event.params.get("approved_by") or "automatic")
    yield ctx.derive(ScheduleReleased, key=proposed.event_id, schedule_id=proposed.event_id,
                     version=int(inputs.get("last_version", 0)) + 1, start=proposed.start,
                     period_s=proposed.period_s,
                     pumps=[PumpPlan(pump=p.pump, speeds=p.speeds) for p in proposed.pumps],
                     released_by=by, proposed_event_id=proposed.event_id)


HANDLERS = {"optimise": handle_optimise, "schedule.release": handle_release}
