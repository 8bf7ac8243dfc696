"""``tagus token issue|list|revoke``: per-tenant access tokens (stored hashed).

Running services re-read the token file on every request, so an issued token works and
a revoked one stops working at once, without a restart.
"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("token", help="issue, list or revoke per-tenant access tokens")
    p.add_argument("action", choices=["issue", "list", "revoke"])
    p.add_argument("--tenant", help="the tenant (required for issue and revoke)")
    p.add_argument("--name", help="who holds it (e.g. scada-push, operator-ana)")
    p.add_argument("--scopes", default="read", help="read (query API), write (intake); a,b")
    p.set_defaults(run=token, parser=p)


def token(settings, args) -> int:
    from bus.tokens import TokenStore

    path = settings.tokens_path
    store = TokenStore.load(path)
    if args.action == "list":
        print(f"{'tenant':20} {'name':24} scopes")
        for r in sorted(store.records, key=lambda r: (r.tenant, r.name)):
            if args.tenant in (None, r.tenant):
                print(f"{r.tenant:20} {r.name:24} {','.join(r.scopes)}")
        return 0
    if not args.tenant or not args.name:
        args.parser.error(f"token {args.action} needs --tenant and --name")
    if args.action == "revoke":
        removed = store.revoke(args.tenant, args.name)
        if not removed:
            print(f"tagus: tenant {args.tenant!r} has no token named {args.name!r}",
                  file=sys.stderr)
            return 1
        store.save(path)
        print(f"revoked {removed} token(s) {args.tenant}/{args.name}")
        return 0
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    issued = store.issue(args.tenant, args.name, scopes)
    store.save(path)
    print(issued)
    print(f"(shown once; only its sha256 is kept in {path})", file=sys.stderr)
    return 0
