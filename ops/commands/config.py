"""``tagus config put|show|history|diff --tenant T KIND [FILE]``: versioned configuration.

Kinds: tenant, network (an EPANET .inp), assets, tariff, rules, schedules, chains, pv,
alerts, mailbox, mapping-<id> (YAML or JSON documents; see ``contracts/config.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("config", help="put, show, list the history of, or diff a tenant's "
                                      "configuration (versioned, audited)")
    p.add_argument("action", choices=["put", "show", "history", "diff"])
    p.add_argument("kind", help="tenant, network, assets, tariff, rules, schedules, chains, "
                                "pv, alerts, mailbox or mapping-<id> (tokens: tagus token)")
    p.add_argument("file", type=Path, nargs="?", help="the new document (put)")
    p.add_argument("--tenant", required=True)
    p.add_argument("--reason", default="", help="why (recorded with the change)")
    p.add_argument("--version", type=int,
                   help="put: the version the change was made against (refused if the "
                        "kind moved on since); show: which version (default current)")
    p.add_argument("--from", dest="a", type=int, help="diff: old version (default previous)")
    p.add_argument("--to", dest="b", type=int, help="diff: new version (default current)")
    p.add_argument("--author", default="cli", help="recorded as who made the change")
    p.set_defaults(run=config, parser=p)


async def config(settings, args) -> int:
    from bus import config_log
    from ops import config_service

    if args.action == "put" and not args.file:
        args.parser.error("config put needs a FILE")
    async with config_service.connected(settings) as store:
        if args.action == "put":
            change = await store.put(args.tenant, args.kind, args.file.read_bytes(),
                                     author=args.author, reason=args.reason,
                                     expected_version=args.version)
            print(config_service.format_change(change))
            return 0
        history = await store.history(args.tenant, args.kind)
        if not history:
            print(f"tagus: {args.tenant} has no {args.kind} configured", file=sys.stderr)
            return 1
        if args.action == "history":
            print(f"{'version':>7}  {'recorded (UTC)':16}  {'author':16}  reason")
            for s in history:
                e = s.event
                extra = f" [{len(e.warnings)} warnings]" if e.warnings else ""
                print(f"{e.version:>7}  {e.recorded_at:%Y-%m-%d %H:%M}  {e.author[:16]:16}  "
                      f"{e.reason}{extra}")
            return 0
        if args.action == "show":
            stored = (await config_log.version(store.js, args.tenant, args.kind, args.version)
                      if args.version else history[-1])
            e = stored.event
            when = e.recorded_at.strftime("%Y-%m-%d %H:%M")
            print(f"# {args.tenant}/{args.kind} version {e.version}, {when}Z by {e.author}: "
                  f"{e.reason}", file=sys.stderr)
            sys.stdout.write(await store.render(e))
            return 0
        b = args.b or history[-1].event.version
        a = args.a or max(1, b - 1)
        print(await store.diff(args.tenant, args.kind, a, b) or f"versions {a} and {b} are "
                                                                "identical")
        return 0
