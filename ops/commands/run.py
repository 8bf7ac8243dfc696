"""``tagus run COMPONENT...``: run processors, projections (and the scheduler) until SIGTERM."""

from __future__ import annotations

import asyncio
import sys


def register(sub) -> None:
    p = sub.add_parser("run", help="run processors/projections (and `scheduler`, "
                                   "`mail-poller`) until SIGTERM")
    p.add_argument("components", nargs="+",
                   help="consumer names (e.g. normalise questdb-readings), scheduler, "
                        "mail-poller (the tenants' IMAP mailboxes), or "
                        "all: every component and the scheduler in this process (one "
                        "node; run replicas of single components to scale out)")
    p.add_argument("--batch", type=int, default=100)
    p.set_defaults(run=run, service_logs=True)


async def run(settings, args) -> int:
    from ops.logs import configure_tracing
    from ops.service import install_stop_signals

    configure_tracing("tagus-" + "+".join(args.components), settings.otlp_endpoint)
    stop = asyncio.Event()
    install_stop_signals(stop)
    if "all" in args.components:
        from ops import wiring

        args.components = [*wiring.components(settings), "scheduler"]
    names = [n for n in args.components if n not in ("scheduler", "mail-poller")]
    work = [_components(settings, names, stop, args.batch)] if names else []
    if "scheduler" in args.components:
        work.append(_scheduler(settings, stop))
    if "mail-poller" in args.components:
        work.append(mail_poller(settings, stop))
    await asyncio.gather(*work)
    return 0


async def _components(settings, names, stop, batch) -> None:
    from ops.service import run_components

    stats = await run_components(settings, names, stop, batch=batch)
    for name, s in zip(names, stats, strict=True):
        print(f"{name}: handled {s.handled}, published {s.published}, "
              f"dead-lettered {s.dead_lettered}, retried {s.retried}", file=sys.stderr)


async def _scheduler(settings, stop) -> None:
    """The scheduler (a producer).  ``TAGUS_SCHEDULER_CLOCK`` (tests, benches; unset: the
    real clock) and ``TAGUS_SCHEDULER_LEASE_S``/``_CLAIM_AHEAD_S``/``_LATE_AFTER_S``/
    ``_MAX_SLEEP_S``/``_TENANTS`` are read here (``producers/scheduler``)."""
    import os

    from ops import wiring
    from producers.scheduler import Scheduler, SchedulerOptions, clock_from_spec

    clock = clock_from_spec(os.environ.get("TAGUS_SCHEDULER_CLOCK"))
    options = SchedulerOptions.from_env(os.environ)
    nc = await wiring.nats_connection(settings, name="tagus-scheduler")
    try:
        s = await Scheduler(nc.jetstream(), clock=clock, options=options).run(stop)
    finally:
        await nc.drain()
    print(f"scheduler: requested {s.requested}, already handled {s.already}, taken over "
          f"{s.taken_over} (recovered {s.recovered}), skipped {s.skipped}, failures "
          f"{s.failures}", file=sys.stderr)


async def mail_poller(settings, stop) -> None:
    """The mail poller (a producer; also run by `tagus serve intake`): every tenant's
    ``mailbox``.  ``TAGUS_MAIL_*`` and ``TAGUS_SECRETS_DIR`` are read here
    (``producers/mail/poller.py``)."""
    import os

    from ops import wiring
    from producers.intake import Intake
    from producers.mail import MailOptions, MailPoller

    nc = await wiring.nats_connection(settings, name="tagus-mail-poller")
    try:
        await MailPoller(nc.jetstream(), Intake(nc.jetstream(), nc=nc),
                         MailOptions.from_env(os.environ)).run(stop)
    finally:
        await nc.drain()
