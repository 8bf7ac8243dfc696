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

    return intake_service.serve(settings)
