"""``tagus token issue|list|revoke``: per-tenant access tokens (configuration, hashed).

Running services follow the tenants' configuration: an issued token works and a revoked
one stops within a second, without a restart.
"""

from __future__ import annotations

import sys
from datetime import timedelta


def register(sub) -> None:
    p = sub.add_parser("token", help="issue, list or revoke per-tenant access tokens")
    p.add_argument("action", choices=["issue", "list", "revoke"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", help="who holds it (e.g. scada-push, operator-ana)")
    p.add_argument("--scopes", default="read",
                   help="read (query API), write (intake), operate (tasks, approvals), "
                        "admin (configuration, tokens); comma separated")
    p.add_argument("--expires-days", type=float, help="the token stops working after this")
    p.add_argument("--reason", default="")
    p.set_defaults(run=token, parser=p)


async def token(settings, args) -> int:
    from contracts.config import TokensDoc
    from ops import config_service

    async with config_service.connected(settings) as store:
        if args.action == "list":
            stored = await store.current(args.tenant, "tokens")
            tokens = TokensDoc.model_validate(stored.event.document).tokens if stored else []
            print(f"{'name':24} {'scopes':24} {'issued':17} {'expires':17} state")
            for t in tokens:
                state = "revoked" if t.revoked_at else "live"
                print(f"{t.name:24} {','.join(t.scopes):24} {t.issued_at:%Y-%m-%d %H:%M}  "
                      f"{t.expires_at.strftime('%Y-%m-%d %H:%M') if t.expires_at else '-':17} "
                      f"{state}")
            return 0
        if not args.name:
            args.parser.error(f"token {args.action} needs --name")
        if args.action == "revoke":
            n = await store.revoke_token(args.tenant, args.name, author="cli",
                                         reason=args.reason)
            print(f"revoked {n} token(s) {args.tenant}/{args.name}")
            return 0
        scopes = [s.strip() for s in args.scopes.split(",") if s.strip()]
        expires = timedelta(days=args.expires_days) if args.expires_days else None
        issued, _ = await store.issue_token(args.tenant, args.name, scopes, author="cli",
                                            expires_in=expires, reason=args.reason)
    print(issued)
    print("(shown once; only its sha256 is kept, in the tenant's configuration)",
          file=sys.stderr)
    return 0
