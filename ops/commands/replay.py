"""``tagus replay`` and ``tagus deadletters``: reprocess streams, inspect failures."""

from __future__ import annotations

import argparse
from datetime import datetime


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (e.g. 2026-11-01T00:00Z)")
    return value


def register(sub) -> None:
    p = sub.add_parser("replay", help="re-deliver part of a stream through a component")
    p.add_argument("--into", required=True, help="component, e.g. normalise, questdb-readings")
    p.add_argument("--tenant")
    p.add_argument("--subject", help="a subject filter inside the component's stream")
    p.add_argument("--since", type=_aware, help="stream time, ISO-8601 with zone")
    p.add_argument("--until", type=_aware)
    p.add_argument("--from-seq", type=int)
    p.add_argument("--to-seq", type=int)
    p.add_argument("--downstream", action="store_true",
                   help="also run the regular consumers here until they catch up")
    p.set_defaults(run=replay)

    p = sub.add_parser("deadletters", help="list dead letters, or re-publish one after a fix")
    p.add_argument("action", choices=["list", "republish"])
    p.add_argument("--tenant")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seq", type=int, help="DEADLETTER stream sequence to re-publish")
    p.set_defaults(run=deadletters, parser=p)


async def replay(settings, args) -> int:
    from ops.replay import ReplayRequest, replay

    summary = await replay(settings, ReplayRequest(
        into=args.into, tenant=args.tenant, subject=args.subject, since=args.since,
        until=args.until, from_seq=args.from_seq, to_seq=args.to_seq,
        downstream=args.downstream))
    print("\n".join(summary.lines()))
    return 0 if summary.stats.dead_lettered == 0 else 1


async def deadletters(settings, args) -> int:
    from ops import wiring
    from ops.deadletters import format_rows, list_dead_letters, republish

    if args.action == "republish" and args.seq is None:
        args.parser.error("deadletters republish needs --seq N")
    async with wiring.nats(settings, "tagus-deadletters") as nc:
        if args.action == "list":
            print(format_rows(await list_dead_letters(nc, args.tenant, args.limit)))
        else:
            print(f"re-published to {await republish(nc, args.seq)}")
    return 0
