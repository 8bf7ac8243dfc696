"""``tagus backup DIR`` and ``tagus restore DIR``: JetStream to a directory and back."""

from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("backup", help="every stream, KV bucket and object store to a directory")
    p.add_argument("directory", type=Path, help="a new (or empty) directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=backup)

    p = sub.add_parser("restore", help="a backup into an empty stack; then rebuild QuestDB")
    p.add_argument("directory", type=Path, help="a directory `tagus backup` wrote")
    p.add_argument("--replace", action="store_true",
                   help="delete the target's streams of the same names first (their "
                        "messages are lost); without it a non-empty target is refused")
    p.add_argument("--replay", action="store_true",
                   help="then replay every stream into the QuestDB projections")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip reading everything back and comparing it with the manifest")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(run=restore)


async def backup(settings, args) -> int:
    from ops.backup import backup

    report = await backup(settings, args.directory, progress=not args.quiet)
    print("\n".join(report.lines()))
    return 0


async def restore(settings, args) -> int:
    from ops.backup import questdb_projections, rebuild_questdb, restore

    report = await restore(settings, args.directory, replace=args.replace,
                           verify=args.verify, progress=not args.quiet)
    print("\n".join(report.lines()))
    if not report.ok:
        return 1
    if args.replay:
        print("\n".join(await rebuild_questdb(settings, progress=not args.quiet)))
    else:
        print("QuestDB is a projection, rebuilt by replay: `tagus replay --into P` for P in "
              + ", ".join(questdb_projections(settings))
              + " (or restore with --replay)")
    return 0
