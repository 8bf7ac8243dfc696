"""``tagus alerts list|ack``: a tenant's open and recent alerts; acknowledging one."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("alerts", help="list a tenant's alerts, or acknowledge one")
    p.add_argument("action", choices=["list", "ack"])
    p.add_argument("alert_id", nargs="?", help="ack: the alert id (from `alerts list`)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--open", action="store_true", help="list: open alerts only")
    p.add_argument("--days", type=float, default=7.0,
                   help="list: also alerts cleared within this many days (default 7)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--comment", default="", help="ack: a note for the record")
    p.add_argument("--by", default="cli", help="ack: who acknowledges (default cli)")
    p.set_defaults(run=alerts, parser=p)


async def alerts(settings, args) -> int:
    from datetime import timedelta

    from contracts.base import utc_now, validate_tenant
    from contracts.errors import ContractError
    from ops import wiring
    from projections import alerts as views

    validate_tenant(args.tenant)
    if args.action == "list":
        conn = await wiring.pg_connection(settings)
        try:
            rows = await views.list_alerts(conn, args.tenant,
                                           since=utc_now() - timedelta(days=args.days),
                                           open_only=args.open, limit=args.limit)
        finally:
            await conn.close()
        if not rows:
            print(f"no {'open ' if args.open else ''}alerts for {args.tenant}")
            return 0
        print(f"{'alert':36}  {'state':7} {'severity':8} {'raised (UTC)':16} "
              f"{'rule / subject':32} message")
        for a in rows:
            state = "acked" if a["state"] == "open" and a["acknowledged_by"] else a["state"]
            print(f"{a['alert_id']:36}  {state:7} {a['severity'] or '':8} "
                  f"{(a['raised_at'] or '')[:16].replace('T', ' '):16} "
                  f"{(a['rule'] + ' / ' + a['subject'])[:32]:32} {a['message'][:80]}")
        return 0
    if not args.alert_id:
        args.parser.error("alerts ack needs an ALERT_ID")
    async with wiring.nats(settings, "tagus-alerts") as nc:
        try:
            status, _ = await views.acknowledge(nc.jetstream(), views.AlertStream(),
                                                args.tenant, args.alert_id, by=args.by,
                                                comment=args.comment)
        except ContractError as e:
            print(f"tagus: {e}", file=sys.stderr)
            return 1
    print(f"{args.alert_id}: "
          + ("acknowledged" if status == "acknowledged" else "already acknowledged"))
    return 0
