"""``tagus run COMPONENT...``: run processors and projections until SIGTERM."""

from __future__ import annotations

import asyncio
import sys


def register(sub) -> None:
    p = sub.add_parser("run", help="run processors/projections until SIGTERM")
    p.add_argument("components", nargs="+", help="consumer names, e.g. normalise-units")
    p.add_argument("--batch", type=int, default=100)
    p.set_defaults(run=run, service_logs=True)


async def run(settings, args) -> int:
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
