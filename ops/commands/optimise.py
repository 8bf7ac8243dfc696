"""``tagus optimise benchmark``: schedule a network's pumps, verified in EPANET, as CSV.

    tagus optimise benchmark --inp NET.inp [--modifications M.json] \\
        [--tou OFF,PEAK,PEAK_START_H] [--hours H] [--time-limit SECONDS] --out SCHEDULE.csv

Runs the same optimiser as the ``optimise`` task (``processors.optimise.optimise``).
Progress goes to stderr; the summary (cost, energy, feasibility per tank, solve time) to
stdout.  Exit code 0 when the schedule passed the EPANET check, 1 when none did (the CSV
then holds the network's own controls and the summary says why), 2 on bad input.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("optimise", help="pump schedules verified in EPANET")
    cmds = p.add_subparsers(dest="optimise_command", required=True, metavar="ACTION")
    b = cmds.add_parser("benchmark", help="optimise a benchmark network and write the "
                                          "schedule as CSV")
    b.add_argument("--inp", type=Path, required=True, help="EPANET network (.inp)")
    b.add_argument("--modifications", type=Path,
                   help="Bonvin/Tasseff modifications.json: linear pump power x the "
                        "'tariff' pattern, switching and minimum run/rest times")
    b.add_argument("--tou", metavar="OFF,PEAK,PEAK_START_H",
                   help="two-rate tariff per kWh of EPANET pump energy: OFF before "
                        "PEAK_START_H o'clock, PEAK from then to midnight")
    b.add_argument("--hours", type=float, help="schedule and check only the first H hours")
    b.add_argument("--time-limit", type=float, default=300.0, metavar="SECONDS",
                   help="wall-clock budget (default 300); the work done is a fixed "
                        "function of it, so the same inputs give the same schedule")
    b.add_argument("--speeds", choices=["auto", "fixed", "variable"], default="auto",
                   help="auto (default): on/off for pumps the instance defines so "
                        "(--modifications, or a 0/1 speed pattern), relative speeds "
                        "0.6-1.0 for the others; fixed: on/off only; variable: speeds for all")
    b.add_argument("--out", type=Path, required=True, help="schedule CSV to write")
    b.set_defaults(run=benchmark)


def benchmark(settings, args) -> int:
    import json

    from contracts.errors import TenantConfigError
    from processors.optimise import Effort, optimise
    from processors.optimise.benchmark import benchmark_problem, parse_tou, schedule_csv

    started = time.monotonic()

    def progress(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    try:
        inp = args.inp.read_bytes()
        mods = json.loads(args.modifications.read_text()) if args.modifications else None
    except (OSError, ValueError) as e:
        print(f"tagus: cannot read input: {e}", file=sys.stderr)
        return 2
    try:
        tou = parse_tou(args.tou) if args.tou else None
        # the work is fixed by --time-limit; the wall-clock guard gets what is left of it
        # after reading the network, less a little for writing the result
        problem = benchmark_problem(inp, modifications=mods, tou=tou, hours=args.hours,
                                    speeds=args.speeds,
                                    effort=Effort.for_time_limit(args.time_limit))
        progress(f"network {args.inp.name}: {_describe(problem)}")
        left = args.time_limit - (time.monotonic() - started) - 3.0
        result = optimise(problem, time_limit_s=max(left, 1.0), progress=progress)
    except TenantConfigError as e:
        print(f"tagus: {e}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(schedule_csv(result, problem.network))
    print(summary(result, problem, args.out, time.monotonic() - started))
    return 0 if result.feasible else 1


def _describe(problem) -> str:
    net = problem.network
    n = problem.horizon_s // problem.period_s
    vsp = [p for p, r in problem.pump_rules.items() if len(r.speeds) > 1]
    return (f"{len(net.junctions)} junctions, {len(net.tanks)} tanks, {len(net.pumps)} pumps; "
            f"{problem.horizon_s / 3600:g} h in {n} periods of {problem.period_s} s; "
            f"tariff {type(problem.tariff).__name__}"
            + (f"; variable speed: {', '.join(vsp)}" if vsp else ""))


def summary(result, problem, out: Path, wall_s: float) -> str:
    """The figures an engineer checks, one line each."""
    lines = []
    if result.feasible:
        lines.append("status: feasible (verified in EPANET extended-period simulation)")
    else:
        lines.append(f"status: INFEASIBLE -- {result.reason}")
    lines.append(f"cost: {result.cost:.3f}   baseline (own controls): {result.baseline_cost:.3f}"
                 f"   saving: {result.saving_pct:.1f} %")
    base_ok = "feasible" if result.baseline_feasibility.feasible else \
        f"infeasible: {result.baseline_feasibility.reason()}"
    lines.append(f"baseline: {base_ok}")
    lines.append(f"energy: {result.energy_kwh:.2f} kWh")
    for c in result.feasibility.tanks:
        ok = "OK" if c.ok else "VIOLATED"
        lines.append(f"tank {c.tank_id}: initial {c.initial_m:.3f} m, final {c.final_m:.3f} m "
                     f"(target {c.target_m:.3f}), min {c.lowest_m:.3f}, max {c.highest_m:.3f} "
                     f"within [{c.lower_m:.3f}, {c.upper_m:.3f}] m  {ok}")
    for c in result.feasibility.pumps:
        lines.append(f"pump {c.pump_id}: {c.starts} starts, shortest run "
                     f"{_s(c.shortest_run_s)}, shortest rest {_s(c.shortest_rest_s)}  "
                     f"{'OK' if c.ok else 'VIOLATED'}")
    st = result.stats
    gap = "-" if st.gap is None else f"{100 * st.gap:.2f} %"
    lines.append(f"solver: {st.rounds} MILP rounds, {st.mip_nodes} nodes, last objective "
                 f"{_f(st.objective)} bound {_f(st.bound)} gap {gap}; {st.evaluations} EPANET "
                 f"runs; {st.polish_improvements} polish moves"
                 + ("; wall-clock guard cut in" if st.time_limited else ""))
    lines.append(f"time: {wall_s:.1f} s (MILP {st.mip_time_s:.1f} s)")
    lines.append(f"wrote {out} ({result.speeds.shape[0]} periods x "
                 f"{len(problem.network.pumps)} pumps)")
    return "\n".join(lines)


def _s(seconds) -> str:
    return "-" if seconds is None else f"{seconds / 3600:g} h"


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"
