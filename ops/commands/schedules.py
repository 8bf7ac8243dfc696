"""``tagus schedules list|show|approve``: the optimiser's pump schedules, and approving one
(advisory mode) so that it is released to SCADA.

    tagus schedules list --tenant T [--days 7]
    tagus schedules show SCHEDULE_ID --tenant T [--csv]
    tagus schedules approve SCHEDULE_ID --tenant T [--by NAME] [--comment TEXT] [--allow-past]
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("schedules", help="list or show pump schedules, approve one for "
                                         "release to SCADA")
    p.add_argument("action", choices=["list", "show", "approve"])
    p.add_argument("schedule_id", nargs="?", help="show/approve: the schedule id")
    p.add_argument("--tenant", required=True)
    p.add_argument("--days", type=float, default=7.0, help="list: proposed within (default 7)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--csv", action="store_true", help="show: the plan as CSV")
    p.add_argument("--by", default="cli", help="approve: who approves (default cli)")
    p.add_argument("--comment", default="")
    p.add_argument("--allow-past", action="store_true",
                   help="approve: release a schedule whose horizon has passed (what-ifs on "
                        "historical data; SCADA ignores it)")
    p.set_defaults(run=schedules, parser=p)


async def schedules(settings, args) -> int:
    from contracts.base import validate_tenant

    validate_tenant(args.tenant)
    if args.action == "list":
        return await _list(settings, args)
    if not args.schedule_id:
        args.parser.error(f"schedules {args.action} needs a SCHEDULE_ID")
    if args.action == "show":
        return await _show(settings, args)
    return await _approve(settings, args)


async def _list(settings, args) -> int:
    from datetime import timedelta

    from contracts.base import utc_now
    from ops import wiring
    from projections import schedules as views

    conn = await wiring.pg_connection(settings)
    try:
        rows = await views.list_schedules(conn, args.tenant,
                                          since=utc_now() - timedelta(days=args.days),
                                          limit=args.limit)
    finally:
        await conn.close()
    if not rows:
        print(f"no schedules proposed for {args.tenant} within {args.days:g} days")
        return 0
    print(f"{'schedule':36}  {'state':12} {'start (UTC)':16} {'h':>3} {'ok':3} "
          f"{'cost':>10} {'baseline':>10} {'saving':>9}  by")
    for s in rows:
        hours = (s["period_s"] or 0) * _periods(s) / 3600
        state = s["state"] + (f" v{s['version']}" if s["version"] else "")
        print(f"{s['schedule_id']:36}  {state[:12]:12} {(s['start'] or '')[:16].replace('T', ' '):16}"
              f" {hours:3.0f} {'yes' if s['verified'] else 'NO':3} {_money(s['cost']):>10} "
              f"{_money(s['baseline_cost']):>10} {_money(s['saving']):>9}  "
              f"{s['released_by'] or s['approved_by'] or ''}")
    return 0


def _periods(s: dict) -> int:
    from datetime import datetime

    if not s["start"] or not s["end"] or not s["period_s"]:
        return 0
    span = datetime.fromisoformat(s["end"][:-1]) - datetime.fromisoformat(s["start"][:-1])
    return int(span.total_seconds() // s["period_s"])


def _money(x) -> str:
    return "-" if x is None else f"{x:.2f}"


async def _show(settings, args) -> int:
    from ops import wiring
    from projections import schedules as views
    from projections.api.routes_schedules import plan_csv

    conn = await wiring.pg_connection(settings)
    try:
        d = await views.schedule_detail(conn, args.tenant, args.schedule_id)
    finally:
        await conn.close()
    if args.csv:
        sys.stdout.write(plan_csv(d))
        return 0
    plan = d.get("plan", {})
    print(f"schedule {d['schedule_id']} ({d['state']}"
          + (f" v{d['version']}" if d["version"] else "") + ")")
    print(f"  {d['start']} to {d['end']}, periods of {d['period_s'] // 60} min; "
          f"{'verified in EPANET' if d['verified'] else 'NOT verified: ' + plan.get('reason', '')}")
    print(f"  cost {_money(d['cost'])} {d['currency']} (baseline {_money(d['baseline_cost'])}, "
          f"saving {_money(d['saving'])}), energy {d['energy_kwh']:.1f} kWh")
    feas = plan.get("feasibility", {})
    if feas and not feas.get("baseline_feasible", True):
        print("  the baseline (the network's own controls) breaks the rules too: "
              + "; ".join(feas.get("baseline_reasons", [])[:3]))
    inputs = plan.get("inputs", {})
    for zone, source in (inputs.get("demand") or {}).items():
        print(f"  demand {zone}: {source}")
    print(f"  initial levels: {inputs.get('initial_levels_m')}")
    for w in inputs.get("warnings") or ():
        print(f"  warning: {w}")
    for p in plan.get("pumps", []):
        bar = "".join("#" if v >= 0.999 else ("+" if v > 0 else ".") for v in p["speeds"])
        print(f"  {p['pump']:>12} {bar}")
    for t, levels in plan.get("tanks", {}).items():
        lo, hi = plan.get("tank_bounds", {}).get(t, (None, None))
        print(f"  {t:>12} {min(levels):.2f}..{max(levels):.2f} m (bounds {lo}..{hi}), "
              f"ends {levels[-1]:.2f} m")
    for w in plan.get("feasibility", {}).get("reasons", []):
        print(f"  infeasible: {w}")
    for h in d["history"]:
        print(f"  {h['at'][:19]} {h['state']}" + (f" by {h['by']}" if h["by"] else "")
              + (f" v{h['version']}" if h["version"] else ""))
    return 0


async def _approve(settings, args) -> int:
    from contracts.errors import ContractError
    from ops import wiring
    from ops.task_service import request_task
    from projections import schedules as views

    async with wiring.nats(settings, "tagus-schedules") as nc:
        js = nc.jetstream()

        async def release(tenant: str, sid: str, by: str) -> None:
            task = await request_task(js, tenant, "schedule.release",
                                      {"schedule_id": sid, "approved_by": by},
                                      requested_by=by)
            print(f"release requested: task {task.event_id}")

        try:
            status, _ = await views.approve(js, views.ScheduleStream(), args.tenant,
                                            args.schedule_id, by=args.by,
                                            comment=args.comment,
                                            allow_past=args.allow_past,
                                            request_release=release)
        except ContractError as e:
            print(f"tagus: {e}", file=sys.stderr)
            return 1
    print(f"{args.schedule_id}: " + ("approved" if status == "approved"
                                     else "already approved or released"))
    return 0
