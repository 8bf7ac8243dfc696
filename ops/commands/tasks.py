"""``tagus tasks list|show|request|cancel``: operators and tasks."""

from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list, show, request or cancel tasks")
    p.add_argument("action", choices=["list", "show", "request", "cancel"])
    p.add_argument("what", nargs="?", help="show/cancel: the task id; request: the kind")
    p.add_argument("--tenant", required=True)
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="request: a parameter (VALUE as JSON if it parses, else text)")
    p.add_argument("--wait", action="store_true", help="request: wait, with a progress bar")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--time-limit", type=float, help="request: fail the task past this (s)")
    p.add_argument("--kind", help="list: only this kind")
    p.add_argument("--state", help="list: only this state (requested, running, completed...)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--reason", default="")
    p.set_defaults(run=tasks, parser=p)


async def tasks(settings, args) -> int:
    from ops import task_service, wiring

    if args.action in ("show", "request", "cancel") and not args.what:
        args.parser.error(f"tasks {args.action} needs a {'KIND' if args.action == 'request' else 'TASK_ID'}")
    if args.action == "list":
        from projections.api import queries

        conn = await wiring.pg_connection(settings)
        try:
            rows = await queries.tasks(conn, args.tenant, limit=args.limit, kind=args.kind,
                                       state=args.state)
        finally:
            await conn.close()
        print(f"{'task':36}  {'kind':18} {'state':10} {'requested (UTC)':17} {'by':18} detail")
        for t in rows:
            when = (t["requested_at"] or "-")[:16].replace("T", " ")
            print(f"{t['task_id']:36}  {t['kind'][:18]:18} {t['state']:10} {when:17} "
                  f"{t['requested_by'][:18]:18} {t['detail'][:60]}")
        return 0
    async with wiring.nats(settings, "tagus-tasks") as nc:
        js = nc.jetstream()
        if args.action == "show":
            events = await task_service.task_events(js, args.tenant, args.what)
            if not events:
                print(f"tagus: no task {args.what} for {args.tenant}", file=sys.stderr)
                return 1
            for e in events:
                fields = {k: v for k, v in __import__("msgspec").structs.asdict(e).items()
                          if k not in ("event_id", "tenant", "occurred_at", "causation_id",
                                       "correlation_id", "schema", "recorded_at", "task_id")}
                print(f"{e.recorded_at:%Y-%m-%d %H:%M:%S}  {type(e).__name__:20} "
                      f"{json.dumps(fields, default=str)[:160]}")
            return 0
        if args.action == "cancel":
            before = await task_service.cancel(js, args.tenant, args.what, by="cli",
                                               reason=args.reason)
            print(f"cancel requested (the task was {before or 'queued'})")
            return 0
        params = dict(_param(p) for p in args.param)
        event = await task_service.request_task(js, args.tenant, args.what, params,
                                                requested_by="cli",
                                                time_limit_s=args.time_limit)
        print(event.event_id)
        if not args.wait:
            return 0
        from tqdm import tqdm

        with tqdm(total=100, unit="%", desc=args.what, file=sys.stderr) as bar:
            def progress(fraction: float, message: str) -> None:
                bar.n = round(fraction * 100)
                bar.set_postfix_str(message[:40])
                bar.refresh()

            outcome = await task_service.wait(js, args.tenant, event.event_id,
                                              timeout_s=args.timeout, on_progress=progress)
        name = type(outcome).__name__
        print(f"{name.removeprefix('Task').lower()}: "
              + (f"{len(outcome.outputs)} outputs in {outcome.duration_s:.1f} s"
                 if name == "TaskCompleted" else
                 f"{getattr(outcome, 'reason', '')} {getattr(outcome, 'detail', '')}"))
        return 0 if name == "TaskCompleted" else 1


def _param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise SystemExit(f"tagus: --param {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value
