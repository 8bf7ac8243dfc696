"""The ``tagus`` command: a thin layer over ops/, bus/ and the components."""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import datetime
from pathlib import Path

from contracts.errors import SetupError, TagusError
from ops.settings import Settings, load_settings


def _stack(settings: Settings, args) -> int:
    from ops import stack

    if args.action == "fetch":
        print(f"questdb jar: {stack.questdb_jar(settings)}")
        print(f"java: {stack.find_java(settings)}")
        print(f"nats-server: {stack.nats_server_binary()}")
    elif args.action == "up":
        for line in stack.up(settings):
            print(line)
    elif args.action == "down":
        for line in stack.down(settings):
            print(line)
    else:
        ok = True
        for st in stack.status(settings):
            state = "running" if st.running else "DOWN"
            ok &= st.running or not st.managed
            eps = " ".join(f"{k}={v}" for k, v in st.endpoints.items())
            who = "managed" if st.managed else "external"
            print(f"{st.name:8} {state:8} {who:8} version={st.version or '-'} "
                  f"pid={st.pid or '-'} {eps} {st.detail}")
        return 0 if ok else 1
    return 0


async def _topology(settings: Settings) -> int:
    from bus.topology import ensure_topology
    from ops import wiring

    nc = await wiring.nats_connection(settings, name="tagus-topology")
    try:
        changes = await ensure_topology(nc.jetstream(), wiring.topology(settings))
    finally:
        await nc.drain()
    print("\n".join(changes) or "topology unchanged")
    return 0


async def _status(settings: Settings) -> int:
    from ops import wiring
    from ops.service import positions

    _stack(settings, argparse.Namespace(action="status"))
    nc = await wiring.nats_connection(settings, name="tagus-status")
    try:
        pos = await positions(nc, wiring.topology(settings))
    finally:
        await nc.drain()
    print(f"\n{'consumer':24} {'stream':12} {'acked up to':>12} {'pending':>9} "
          f"{'in flight':>9} {'redelivered':>11}")
    for p in pos:
        print(f"{p.durable:24} {p.stream:12} {p.ack_floor_stream_seq:12d} {p.num_pending:9d} "
              f"{p.num_ack_pending:9d} {p.num_redelivered:11d}")
    return 0


async def _run(settings: Settings, args) -> int:
    from ops.logs import configure_tracing
    from ops.service import install_stop_signals, run_components

    configure_tracing("tagus-" + "+".join(args.components), settings.otlp_endpoint)
    stop = asyncio.Event()
    install_stop_signals(stop)
    stats = await run_components(settings, args.components, stop, batch=args.batch)
    for name, s in zip(args.components, stats, strict=True):
        print(f"{name}: handled {s.handled}, published {s.published}, "
              f"dead-lettered {s.dead_lettered}, retried {s.retried}", file=sys.stderr)
    return 0


async def _ingest(settings: Settings, args) -> int:
    from ops.ingest import format_report, ingest, rejection_examples

    result = await ingest(settings, args.file, args.tenant, args.mapping,
                          mapping_id=args.mapping_id, force=args.force, process=args.process,
                          timeout_s=args.timeout)
    examples = []
    if getattr(result.outcome, "reasons", None) and not args.no_examples:
        examples = await rejection_examples(settings, args.tenant, result.intake.event_id)
    print(format_report(result, examples))
    return 0 if result.outcome.__class__.__name__ == "IntakeParsed" else 1


async def _mapping(settings: Settings, args) -> int:
    from bus.storage import get_mapping
    from bus.topology import ensure_topology
    from ops import wiring
    from ops.ingest import mapping_id_for, register_mapping

    nc = await wiring.nats_connection(settings, name="tagus-mapping")
    try:
        await ensure_topology(nc.jetstream(), wiring.topology(settings))
        if args.action == "put":
            mid = args.id or mapping_id_for(args.file)
            version = await register_mapping(nc, args.tenant, args.file, mid)
            print(f"mapping {args.tenant}/{mid} version {version[:12]}")
        else:
            text = await get_mapping(nc.jetstream(), args.tenant, args.id)
            if text is None:
                print(f"tagus: no mapping {args.id!r} for tenant {args.tenant!r}", file=sys.stderr)
                return 1
            sys.stdout.write(text.decode())
    finally:
        await nc.drain()
    return 0


def _aware(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no time zone (e.g. 2026-11-01T00:00Z)")
    return value


async def _replay(settings: Settings, args) -> int:
    from ops.replay import ReplayRequest, replay

    summary = await replay(settings, ReplayRequest(
        into=args.into, tenant=args.tenant, subject=args.subject, since=args.since,
        until=args.until, from_seq=args.from_seq, to_seq=args.to_seq,
        downstream=args.downstream))
    print("\n".join(summary.lines()))
    return 0 if summary.stats.dead_lettered == 0 else 1


async def _deadletters(settings: Settings, args) -> int:
    from ops import wiring
    from ops.deadletters import format_rows, list_dead_letters, republish

    nc = await wiring.nats_connection(settings, name="tagus-deadletters")
    try:
        if args.action == "list":
            print(format_rows(await list_dead_letters(nc, args.tenant, args.limit)))
        else:
            if args.seq is None:
                raise SystemExit("tagus: deadletters republish needs --seq N")
            print(f"re-published to {await republish(nc, args.seq)}")
    finally:
        await nc.drain()
    return 0


def _token(settings: Settings, args) -> int:
    from contracts.tokens import TokenStore

    store = TokenStore.load(settings.tokens_path)
    scopes = tuple(s.strip() for s in args.scopes.split(",") if s.strip())
    token = store.issue(args.tenant, args.name, scopes)
    store.save(settings.tokens_path)
    print(token)
    print(f"(shown once; only its sha256 is kept in {settings.tokens_path})", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tagus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stack", help="the embedded local NATS + QuestDB")
    p.add_argument("action", choices=["up", "down", "status", "fetch"])
    sub.add_parser("topology", help="create or update streams and consumers")
    sub.add_parser("status", help="servers and consumer positions (lag)")
    p = sub.add_parser("run", help="run processors/projections until SIGTERM")
    p.add_argument("components", nargs="+", help="consumer names, e.g. normalise-units")
    p.add_argument("--batch", type=int, default=100)
    sub.add_parser("demo", help="stack up, publish sample readings, show them in QuestDB")
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
    p = sub.add_parser("deadletters", help="list dead letters, or re-publish one after a fix")
    p.add_argument("action", choices=["list", "republish"])
    p.add_argument("--tenant")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--seq", type=int, help="DEADLETTER stream sequence to re-publish")
    p = sub.add_parser("token", help="issue a per-tenant access token")
    p.add_argument("action", choices=["issue"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--name", required=True, help="who holds it (e.g. scada-push, operator-ana)")
    p.add_argument("--scopes", default="read", help="read (query API), write (intake); a,b")
    p = sub.add_parser("serve", help="run a service: api (query API) or intake "
                                     "(push endpoints, drop folder, pollers)")
    p.add_argument("service", choices=["api", "intake"])
    p = sub.add_parser("bench", help="benchmarks that print figures against a ceiling")
    p.add_argument("which", choices=["query", "ingest"])
    p.add_argument("args", nargs=argparse.REMAINDER)
    p = sub.add_parser("mapping", help="register or show a tenant's source mapping")
    p.add_argument("action", choices=["put", "show"])
    p.add_argument("--tenant", required=True)
    p.add_argument("--id", help="mapping id (put: default the file stem)")
    p.add_argument("file", type=Path, nargs="?")
    args = parser.parse_args(argv)

    from ops.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.log_level if args.command == "run" else "WARNING",
                      json=args.command == "run")
    try:
        if args.command == "stack":
            return _stack(settings, args)
        if args.command == "topology":
            return asyncio.run(_topology(settings))
        if args.command == "status":
            return asyncio.run(_status(settings))
        if args.command == "run":
            return asyncio.run(_run(settings, args))
        if args.command == "ingest":
            return asyncio.run(_ingest(settings, args))
        if args.command == "mapping":
            if args.action == "put" and not args.file:
                parser.error("mapping put needs a FILE")
            if args.action == "show" and not args.id:
                parser.error("mapping show needs --id")
            return asyncio.run(_mapping(settings, args))
        if args.command == "replay":
            return asyncio.run(_replay(settings, args))
        if args.command == "deadletters":
            return asyncio.run(_deadletters(settings, args))
        if args.command == "token":
            return _token(settings, args)
        if args.command == "serve":
            if args.service == "api":
                from projections.api import serve

                serve(settings)
                return 0
            from ops import intake_service

            asyncio.run(intake_service.serve(settings))
            return 0
        if args.command == "bench":
            if args.which == "query":
                from ops.bench_query import main as bench_main
            else:
                from ops.bench_ingest import main as bench_main
            return bench_main(args.args)
        if args.command == "demo":
            from ops.demo import run_demo

            asyncio.run(run_demo(settings, settings.shared_data))
            return 0
    except SetupError as e:
        print(f"tagus: {e}", file=sys.stderr)
        return 2
    except TagusError as e:
        print(f"tagus: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
