"""``tagus serve api|intake``: the long-running services."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="run a service: api (query API) or intake "
                                     "(push endpoints, drop folder, pollers)")
    p.add_argument("service", choices=["api", "intake"])
    p.set_defaults(run=serve, service_logs=True)


def serve(settings, args):
    if args.service == "api":
        from ops.serving import serve_api

        serve_api(settings)
        return 0
    from ops import intake_service

    return intake_service.serve(settings)
