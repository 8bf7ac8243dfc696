"""``tagus kpis show|plot``: the daily KPIs (``kpi.compute``), as a table or a picture.

    tagus kpis show --tenant T [--day D] [--days N] [--full]
    tagus kpis plot --tenant T [--day D] [--days 14] [--out PATH]
"""

from __future__ import annotations

import textwrap
from datetime import date, timedelta
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("kpis", help="show or plot a tenant's daily KPIs (energy, cost, "
                                    "savings, completeness...)")
    p.add_argument("action", choices=["show", "plot"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--day", help="YYYY-MM-DD, the last day (default: the latest day computed)")
    p.add_argument("--days", type=int, default=None,
                   help="this many days up to --day (default: show 1, plot 14)")
    p.add_argument("--full", action="store_true",
                   help="show: each KPI's whole detail (how it was obtained), on its own line")
    p.add_argument("--out", type=Path,
                   help="plot: PNG to write (default <data_dir>/plots/kpis-<tenant>.png)")
    p.set_defaults(run=kpis)


async def kpis(settings, args) -> int:
    from contracts.base import validate_tenant

    validate_tenant(args.tenant)
    days = args.days if args.days is not None else (14 if args.action == "plot" else 1)
    if days < 1:
        print(f"--days: at least 1, got {days}")
        return 2
    got = await _rows(settings, args.tenant, args.day, days)
    if got is None:
        print(f"no KPIs for {args.tenant} yet (`tagus tasks request kpi.compute "
              f"--tenant {args.tenant} --param day=YYYY-MM-DD --wait`)")
        return 1
    first, last, rows = got
    if args.action == "plot":
        return _plot(settings, args, first, last, rows)
    print(f"{'day':10}  {'kpi':26} {'subject':20} {'value':>14} {'unit':8} detail")
    for r in rows:
        value = "-" if r["value"] is None else f"{r['value']:.6g}"
        detail = r["detail"] or ""
        print(f"{r['day']:10}  {r['name'][:26]:26} {r['subject'][:20]:20} {value:>14} "
              f"{r['unit'][:8]:8} {'' if args.full else detail[:60]}")
        if args.full and detail:
            print(textwrap.fill(detail, width=100, initial_indent=" " * 12,
                                subsequent_indent=" " * 12))
    return 0


async def _rows(settings, tenant: str, day: str | None, days: int):
    """(first day, last day, rows) or None when the tenant has no KPIs at all."""
    from ops import wiring
    from projections.api import queries

    conn = await wiring.pg_connection(settings)
    try:
        if day:
            last = queries.check_day(day)
        else:
            latest = await queries.kpi_days(conn, tenant, 1)
            if not latest:
                return None
            last = date.fromisoformat(latest[0])
        first = last - timedelta(days=days - 1)
        return first, last, await queries.kpis(conn, tenant, first, last)
    finally:
        await conn.close()


def _plot(settings, args, first: date, last: date, rows: list[dict]) -> int:
    from ops.dev.kpi_plots import plot_daily

    if not rows:
        print(f"no KPIs for {args.tenant} from {first} to {last}")
        return 1
    out = args.out or Path(settings.data_dir) / "plots" / f"kpis-{args.tenant}.png"
    currency = next((r["unit"] for r in rows if r["name"] == "cost"), "")
    path = plot_daily(rows, f"{args.tenant}: daily KPIs {first} to {last}", out,
                      currency=currency)
    print(path)
    return 0
