"""``tagus serve api|intake|opcua``: the long-running services."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="run a service: api (query API), intake (push "
                                     "endpoints, drop folder, pollers) or opcua (released "
                                     "schedules for SCADA)")
    p.add_argument("service", choices=["api", "intake", "opcua"])
    p.set_defaults(run=serve, service_logs=True)


def serve(settings, args):
    if args.service == "api":
        from ops.serving import serve_api

        serve_api(settings)
        return 0
    if args.service == "opcua":
        from ops import opcua_service

        return opcua_service.serve(settings)
    from ops import intake_service

    return _with_mail_poller(settings, intake_service.serve(settings))


async def _with_mail_poller(settings, intake) -> int:
    """The intake service and beside it the mail poller, idle until a tenant configures
    a ``mailbox`` (``TAGUS_MAIL_POLLER=off``: left to `tagus run mail-poller`).  It stops
    when the intake service has stopped (which handles the signals)."""
    import asyncio
    import os

    from ops.commands.run import mail_poller

    if os.environ.get("TAGUS_MAIL_POLLER", "on").lower() in ("off", "0", "false", "no"):
        return await intake
    stop = asyncio.Event()
    mail = asyncio.create_task(mail_poller(settings, stop))
    try:
        return await intake
    finally:
        stop.set()
        await mail
