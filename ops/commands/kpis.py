"""``tagus kpis show --tenant T [--day D | --days N]``: the daily KPIs."""

from __future__ import annotations

from datetime import date, timedelta


def register(sub) -> None:
    p = sub.add_parser("kpis", help="show a tenant's daily KPIs (energy, cost, savings, "
                                    "completeness...)")
    p.add_argument("action", choices=["show"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--day", help="YYYY-MM-DD (default: the latest day computed)")
    p.add_argument("--days", type=int, default=1, help="this many days up to --day")
    p.set_defaults(run=show)


async def show(settings, args) -> int:
    from ops import wiring
    from projections.api import queries

    conn = await wiring.pg_connection(settings)
    try:
        if args.day:
            last = queries.check_day(args.day)
        else:
            days = await queries.kpi_days(conn, args.tenant, 1)
            if not days:
                print(f"no KPIs for {args.tenant} yet (`tagus tasks request kpi.compute "
                      f"--tenant {args.tenant}`)")
                return 1
            last = date.fromisoformat(days[0])
        rows = await queries.kpis(conn, args.tenant, last - timedelta(days=args.days - 1), last)
    finally:
        await conn.close()
    print(f"{'day':10}  {'kpi':24} {'subject':20} {'value':>14} {'unit':8} detail")
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        print(f"{r['day']:10}  {r['name'][:24]:24} {r['subject'][:20]:20} {value:>14} "
              f"{r['unit'][:8]:8} {(r['detail'] or '')[:60]}")
    return 0
