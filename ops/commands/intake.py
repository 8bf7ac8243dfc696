"""``tagus ingest FILE`` and ``tagus mapping put|show``: uploads and source mappings."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("ingest", help="upload a file; print accepted and rejected counts")
    p.add_argument("file", type=Path)
    p.add_argument("--tenant", required=True)
    p.add_argument("--mapping", type=Path, help="source mapping YAML (registered for the tenant)")
    p.add_argument("--mapping-id", help="name to register the mapping under (default: file stem)")
    p.add_argument("--force", action="store_true", help="ingest even if this content was before")
    p.add_argument("--process", choices=["auto", "yes", "no"], default="auto",
                   help="run the processors here (auto: when no runner is attached)")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--no-examples", action="store_true")
    p.set_defaults(run=ingest)

    p = sub.add_parser("mapping", help="register or show a tenant's source mapping")
    p.add_argument("action", choices=["put", "show"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--id", help="mapping id (put: default the file stem)")
    p.add_argument("file", type=Path, nargs="?")
    p.set_defaults(run=mapping, parser=p)


async def ingest(settings, args) -> int:
    from ops.ingest import format_report, ingest, rejection_examples

    result = await ingest(settings, args.file, args.tenant, args.mapping,
                          mapping_id=args.mapping_id, force=args.force, process=args.process,
                          timeout_s=args.timeout)
    examples = []
    if getattr(result.outcome, "reasons", None) and not args.no_examples:
        examples = await rejection_examples(settings, args.tenant, result.intake.event_id)
    print(format_report(result, examples))
    return 0 if result.outcome.__class__.__name__ == "IntakeParsed" else 1


async def mapping(settings, args) -> int:
    from bus.storage import get_mapping
    from bus.topology import ensure_topology
    from ops import wiring
    from ops.ingest import mapping_id_for, register_mapping

    if args.action == "put" and not args.file:
        args.parser.error("mapping put needs a FILE")
    if args.action == "show" and not args.id:
        args.parser.error("mapping show needs --id")
    async with wiring.nats(settings, "tagus-mapping") as nc:
        await ensure_topology(nc.jetstream(), wiring.topology(settings))
        if args.action == "put":
            mid = args.id or mapping_id_for(args.file)
            version = await register_mapping(nc, args.tenant, args.file, mid)
            print(f"mapping {args.tenant}/{mid} version {version[:12]}")
            return 0
        text = await get_mapping(nc.jetstream(), args.tenant, args.id)
    if text is None:
        print(f"tagus: no mapping {args.id!r} for tenant {args.tenant!r}", file=sys.stderr)
        return 1
    sys.stdout.write(text.decode())
    return 0
