"""``tagus token issue``: per-tenant access tokens (stored hashed)."""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser("token", help="issue a per-tenant access token")
    p.add_argument("action", choices=["issue"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", required=True, help="who holds it (e.g. scada-push, operator-ana)")
    p.add_argument("--scopes", default="read", help="read (query API), write (intake); a,b")
    p.set_defaults(run=token)


def token(settings, args) -> int:
    from contracts.tokens import TokenStore

    store = TokenStore.load(settings.tokens_path)
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    issued = store.issue(args.tenant, args.name, scopes)
    store.save(settings.tokens_path)
    print(issued)
    print(f"(shown once; only its sha256 is kept in {settings.tokens_path})", file=sys.stderr)
    return 0
