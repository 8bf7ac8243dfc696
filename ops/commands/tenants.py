"""``tagus tenant create|list|show|suspend|credentials``: the utilities a deployment serves."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("tenant", help="create, list, show or suspend tenants; issue a "
                                      "tenant's NATS credentials (SCADA gateways, Telegraf)")
    p.add_argument("action", choices=["create", "list", "show", "suspend", "resume",
                                      "credentials"])
    p.add_argument("tenant", nargs="?", help="tenant id (lower-case letters, digits, - _)")
    p.add_argument("--name", help="display name (create)")
    p.add_argument("--timezone", default="UTC", help="IANA zone of the utility (create)")
    p.add_argument("--country", help="ISO 3166 country code for holidays (create)")
    p.add_argument("--region", help="subdivision for holidays, e.g. a province (create)")
    p.add_argument("--reason", default="", help="why (recorded with the change)")
    p.add_argument("--rotate", action="store_true",
                   help="credentials: replace the tenant's NATS password")
    p.set_defaults(run=tenant, parser=p)


async def tenant(settings, args) -> int:
    if args.action != "list" and not args.tenant:
        args.parser.error(f"tenant {args.action} needs a TENANT")
    from ops import config_service

    async with config_service.connected(settings) as store:
        if args.action == "credentials":
            from ops.nats_users import format_credentials, issue_credentials

            doc = await store.document(args.tenant, "tenant")
            if doc is None or doc.suspended:
                print(f"tagus: tenant {args.tenant!r} is "
                      f"{'suspended' if doc else 'not configured'}: no credentials",
                      file=sys.stderr)
                return 1
            print(format_credentials(issue_credentials(settings, args.tenant,
                                                       rotate=args.rotate)))
            return 0
        if args.action == "list":
            print(config_service.format_tenants(await store.tenants()))
            return 0
        if args.action == "show":
            print(await config_service.show_tenant(store, args.tenant))
            return 0
        if args.action == "create":
            change = await store.create_tenant(
                args.tenant, display_name=args.name or args.tenant, timezone=args.timezone,
                country=args.country, region=args.region, author="cli",
                reason=args.reason or "created")
        else:
            change = await store.set_suspended(args.tenant, args.action == "suspend",
                                               author="cli", reason=args.reason)
    print(config_service.format_change(change), file=sys.stdout)
    if args.action == "suspend" and settings.embedded_nats:
        from ops.nats_users import revoke_credentials

        if revoke_credentials(settings, args.tenant):  # its gateways are cut off too
            print(f"revoked the NATS user of {args.tenant}")
    return 0
