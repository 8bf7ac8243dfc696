"""Benchmark instances as ``Problem``s, and the schedule CSV.

The same builder serves ``tagus optimise benchmark`` and ``tagus bench optimise``:

- with ``modifications`` (the Bonvin/Tasseff ``modifications.json``, already parsed):
  the linear power model of its k-th pump entry for the k-th pump of [PUMPS], priced by
  the ``tariff`` pattern (per MWh) per period; its ``max_switches`` (starts) /
  ``min_active_time`` / ``min_inactive_time`` become the pumps' rules.  Minimum times
  are read the strict way of the reference implementation (WaterModels.jl keeps a
  started pump on for floor(min_active_time / period) periods *after* the start period,
  i.e. 3 half-hour periods for 3600 s), so a schedule passes both that reading and the
  plain "at least min_active_time" one;
- with ``tou`` = (off, peak, peak start hour): EPANET pump energy at two clock rates;
- otherwise EPANET pump energy at the .inp's own [ENERGY] prices and patterns.

``hours`` schedules and checks only the first hours of the .inp's duration.
"""

from __future__ import annotations

from typing import Mapping

from processors.optimise.problem import Effort, Problem, PumpRules, Result
from processors.simulate.cost import EpanetEnergyPrices, LinearPowerModel, TimeOfUse
from processors.simulate.errors import NetworkInputError
from processors.simulate.network import Network, load_network, natural_period_s

VSP_SPEEDS = (0.6, 0.7, 0.8, 0.9, 1.0)  # relative speeds offered to variable-speed pumps


def benchmark_problem(inp: str | bytes | Network, *, modifications: Mapping | None = None,
                      tou: tuple[float, float, float] | None = None, hours: float | None = None,
                      effort: Effort | None = None, speeds: str = "auto",
                      count_transitions: bool = False) -> Problem:
    """``speeds``: "fixed" (every pump on/off), "variable" (every pump may also run at
    ``VSP_SPEEDS``), or "auto": on/off where the instance says so -- a linear power model
    from ``modifications`` (defined for on/off pumps), or a 0/1 speed pattern in the .inp
    (an on/off schedule) -- and variable speed for the other pumps (EPANET runs any pump
    at a relative speed; the schedule CSV carries it)."""
    net = inp if isinstance(inp, Network) else load_network(inp)
    if speeds not in ("auto", "fixed", "variable"):
        raise NetworkInputError(f"speeds must be auto, fixed or variable, found {speeds!r}")
    horizon = int(round(hours * 3600)) if hours else net.times.duration_s
    if horizon <= 0:
        raise NetworkInputError(f"--hours must be positive, found {hours}")
    period = natural_period_s(net, horizon)
    rules: dict[str, PumpRules] = {}
    speeds = {p.id: _speeds(net, p.id, speeds, modifications is not None) for p in net.pumps}
    if modifications is not None:
        tariff, rules = _from_modifications(net, modifications, horizon, period, speeds,
                                            count_transitions)
    elif tou is not None:
        off, peak, start = tou
        tariff = TimeOfUse(float(off), float(peak), float(start))
        rules = {p: PumpRules(speeds=s) for p, s in speeds.items()}
    else:
        tariff = EpanetEnergyPrices()
        rules = {p: PumpRules(speeds=s) for p, s in speeds.items()}
    return Problem(network=net, tariff=tariff, horizon_s=horizon, period_s=period,
                   pump_rules=rules, effort=effort)


def _speeds(net: Network, pump_id: str, mode: str, linear_model: bool) -> tuple[float, ...]:
    """The relative speeds a pump may run at (see ``benchmark_problem``)."""
    pat = net.pump(pump_id).speed_pattern
    values = set(net.patterns.get(pat, ())) if pat else set()
    variable = tuple(sorted(set(VSP_SPEEDS) | {round(v, 3) for v in values if 0 < v <= 1}))
    if mode == "fixed":
        return (1.0,)
    if mode == "variable":
        return variable
    if linear_model or (values and values <= {0.0, 1.0}):
        return (1.0,)
    return variable


def _from_modifications(net: Network, mods: Mapping, horizon: int, period: int, speeds,
                        count_transitions: bool):
    entries = mods.get("pump", {})
    ids = net.pump_ids
    fixed, slope, rules = {}, {}, {}
    for key, e in entries.items():
        k = int(key) - 1
        if not 0 <= k < len(ids):
            raise NetworkInputError(f"modifications name pump {key}, the network has {len(ids)}")
        pid = ids[k]
        fixed[pid] = float(e.get("power_fixed", 0.0))
        slope[pid] = float(e.get("power_per_unit_flow", 0.0))
        ms = e.get("max_switches")
        rules[pid] = PumpRules(speeds=speeds[pid],
                               min_on_s=_strict_min(e.get("min_active_time"), period),
                               min_off_s=_strict_min(e.get("min_inactive_time"), period),
                               max_starts=None if ms is None else int(ms),
                               count_transitions=count_transitions)
    pattern = "tariff" if "tariff" in net.patterns else (
        net.pumps[0].price_pattern or net.global_price_pattern)
    if pattern is None:
        raise NetworkInputError("the linear power model needs a 'tariff' price pattern")
    n = horizon // period
    prices = tuple(net.pattern_value(pattern, t * period) for t in range(n))
    return LinearPowerModel(fixed, slope, prices, period), rules


def _strict_min(seconds, period: int) -> int:
    """A minimum time in s as the stricter of ``seconds`` and WaterModels' reading
    (the start period plus floor(seconds / period) more)."""
    if not seconds:
        return 0
    return int(max(float(seconds), (int(float(seconds) // period) + 1) * period))


def schedule_csv(result: Result, network: Network) -> str:
    """One row per period, one ``status_<pump>`` column per pump of the network (pumps not
    scheduled show what they did under their own controls: 0 or 1)."""
    ids = network.pump_ids
    sched = {p: result.speeds[:, k] for k, p in enumerate(result.pump_ids)}
    running = result.simulation.period_running()
    lines = [",".join(f"status_{p}" for p in ids)]
    for t in range(result.speeds.shape[0]):
        row = []
        for j, p in enumerate(ids):
            v = float(sched[p][t]) if p in sched else float(running[t, j])
            row.append(_fmt(v))
        lines.append(",".join(row))
    return "\n".join(lines) + "\n"


def _fmt(v: float) -> str:
    if v == 0.0:
        return "0"
    if v == 1.0:
        return "1"
    return f"{v:.6g}"


def parse_tou(text: str) -> tuple[float, float, float]:
    """``OFF,PEAK,PEAK_START_H`` -> floats, with an error that says what was expected."""
    parts = [p.strip() for p in text.split(",")]
    try:
        off, peak, start = (float(p) for p in parts)
    except ValueError:
        raise NetworkInputError(f"--tou expects OFF,PEAK,PEAK_START_H (three numbers), "
                                f"found {text!r}") from None
    return off, peak, start

