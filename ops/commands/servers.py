"""``tagus stack | topology | status``: the servers, the topology, where streams and
consumers stand."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("stack", help="the embedded local NATS + QuestDB")
    p.add_argument("action", choices=["up", "down", "status", "fetch"])
    p.add_argument("--cluster", type=int, metavar="N",
                   help="up: N nats-servers on loopback as one JetStream cluster (N >= 3; "
                        "set TAGUS_STREAM_REPLICAS=3); kept until `up --cluster 1`")
    p.set_defaults(run=stack)
    p = sub.add_parser("topology", help="create or update streams, consumers and buckets")
    p.set_defaults(run=topology)
    p = sub.add_parser("status", help="servers, stream leaders and replicas, consumer "
                                      "positions (lag)")
    p.set_defaults(run=status)


def stack(settings, args) -> int:
    from ops.dev import stack as local

    if args.action == "fetch":
        print(f"questdb jar: {local.questdb_jar(settings)}")
        print(f"java: {local.find_java(settings)}")
        print(f"nats-server: {local.nats_server_binary()}")
    elif args.action == "up":
        for line in local.up(settings, cluster=args.cluster):
            print(line)
    elif args.action == "down":
        for line in local.down(settings):
            print(line)
    else:
        return 0 if print_servers(settings) else 1
    return 0


def print_servers(settings) -> bool:
    from ops.dev import stack as local

    ok = True
    for st in local.status(settings):
        state = "running" if st.running else "DOWN"
        ok &= st.running or not st.managed
        eps = " ".join(f"{k}={v}" for k, v in st.endpoints.items())
        who = "managed" if st.managed else "external"
        print(f"{st.name:13} {state:8} {who:8} version={st.version or '-'} "
              f"pid={st.pid or '-'} {eps} {st.detail}")
    return ok


def print_streams(streams) -> None:
    """Each stream's size, the node that leads it (takes its writes) and its other
    replicas: ``current``, or how many operations behind, ``offline`` when unreachable."""
    print(f"\n{'stream':26} {'messages':>10} {'leader':10} replicas")
    for info in sorted(streams, key=lambda i: i.config.name):
        cluster = info.cluster
        replicas = ", ".join(
            f"{r.name} " + ("offline" if r.offline else "current" if r.current
                            else f"behind {r.lag or 0}")
            for r in (cluster.replicas or [])) if cluster else ""
        print(f"{info.config.name:26} {info.state.messages:10d} "
              f"{(cluster.leader if cluster else None) or '-':10} {replicas or '-'}")


async def topology(settings, args) -> int:
    from bus.topology import ensure_topology
    from ops import wiring

    async with wiring.nats(settings, "tagus-topology") as nc:
        # creating a replicated stream waits for its Raft group: seconds on a busy cluster
        changes = await ensure_topology(nc.jetstream(timeout=max(30.0, settings.cli_timeout_s)),
                                        wiring.topology(settings))
    print("\n".join(changes) or "topology unchanged")
    return 0


async def status(settings, args) -> int:
    from ops import wiring
    from ops.service import positions

    print_servers(settings)
    async with wiring.nats(settings, "tagus-status") as nc:
        streams = await nc.jetstream().streams_info()
        pos = await positions(nc, wiring.topology(settings))
    print_streams(streams)
    # "acked up to" is the ack floor: a message in retry holds it while later ones are
    # done; "delivered up to" shows how far the consumer has got meanwhile
    print(f"\n{'consumer':24} {'stream':12} {'acked up to':>12} {'delivered to':>12} "
          f"{'pending':>9} {'in flight':>9} {'redelivered':>11}")
    for p in pos:
        print(f"{p.durable:24} {p.stream:12} {p.ack_floor_stream_seq:12d} "
              f"{p.delivered_stream_seq:12d} {p.num_pending:9d} {p.num_ack_pending:9d} "
              f"{p.num_redelivered:11d}")
    try:
        from projections.api import queries

        conn = await wiring.pg_connection(settings)
        try:
            waiting = await queries.tasks_waiting(conn)
        finally:
            await conn.close()
    except Exception as e:  # noqa: BLE001 - QuestDB down: say so, the rest is shown
        print(f"\ntasks waiting: unknown (QuestDB: {type(e).__name__})")
        return 0
    print(f"\n{'tasks waiting: tenant':24} {'kind':24} {'requested, not started':>22}")
    for tenant, kind, n in waiting:
        print(f"{tenant:24} {kind:24} {n:22d}")
    if not waiting:
        print("(none)")
    return 0
