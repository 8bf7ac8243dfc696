"""``tagus bench sync``: what ``sync_interval: always`` costs ingest, against the default.

nats-server acknowledges a JetStream write before it is on disk and fsyncs every two
minutes by default, so a power loss can lose acknowledged writes (FIELD-NOTES.md);
``TAGUS_NATS_SYNC_ALWAYS=true`` writes ``sync_interval: always`` into the server's
configuration (an fsync per write).  This bench starts two private nats-servers on free
ports (``--cluster``: two 3-node clusters, streams at R3), each with its own empty store
under a temporary directory, one with the default and one with ``sync_interval:
always``, and the stack's QuestDB (started if it is not running, as ``tagus stack up``
does).  In each of ``--runs`` rounds, in alternating
order (drift on the machine hits both equally), it times against each server:

- end to end, as ``tagus bench ingest`` does (``--sensors`` x 1-minute rows over
  ``--days`` in one CSV upload -> ``normalise`` -> ``questdb-readings`` -> WAL applied,
  the two components in this process, the row count checked);
- the JetStream ceilings of that bench on the same ReadingsNormalised batches
  (``publish_async``; one awaited publish at a time, as the runner publishes);
- ``--small`` small messages (~200 bytes, a reading's size) to each server, one awaited
  publish at a time, in blocks of 100 alternating between the two servers: the shape of
  per-push intake and of task and config events, where an fsync per write shows most.

The "always" server is checked to report ``sync_always`` on its monitor (``/varz``).

It prints each run, the medians per server and the ratio always / default.  ``--quick``
(the CI smoke run): one round of 20 sensors and 100 small messages.  The
private servers and their stores are removed at the end; the bench rows in QuestDB (days
of 2001, tenants ``bench-sync-*``) are dropped after every run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bus.topology import ensure_topology
from contracts.readings import ReadingsNormalised
from contracts.registry import family_of
from ops import wiring
from ops.dev import bench_ingest as bi
from ops.dev import stack
from ops.settings import Settings, load_settings
from projections.readings import projection

MODES = ("default", "always")
QUICK = {"sensors": 20, "runs": 1, "small": 100}


@dataclass
class Figures:
    e2e: list[float] = field(default_factory=list)  # readings/s, file -> rows queryable
    publish_async: list[float] = field(default_factory=list)  # readings/s
    publish_sync: list[float] = field(default_factory=list)  # readings/s
    small: list[float] = field(default_factory=list)  # messages/s, one at a time


def private_settings(base: Settings, root: Path, mode: str, replicas: int) -> Settings:
    """A nats-server (or with ``replicas`` 3 a 3-node cluster) of our own under
    ``root/<mode>`` on free ports; QuestDB the stack's (external here: never started or
    stopped by this bench)."""
    return base.model_copy(update={
        "data_dir": root / mode / "var", "nats_url": None, "nats_user": None,
        "nats_password": None, "nats_creds": None, "nats_port": stack.free_port(),
        "nats_monitor_port": stack.free_port(), "nats_mqtt_port": None,
        "nats_sync_always": mode == "always", "stream_replicas": replicas,
        "questdb_external": True})


SMALL_BLOCK = 100  # small messages per timed block


async def small_messages(servers: dict[str, Settings], n: int, run: int,
                         figs: dict[str, Figures]) -> None:
    """``n`` small messages to each server, one awaited publish at a time, in blocks of
    ``SMALL_BLOCK`` alternating between the servers (drift hits both alike); each
    block's messages/s is one figure."""
    stream, subject = f"BENCH_SYNC_SMALL_{run}", f"tagusbench.small{run}"
    async with contextlib.AsyncExitStack() as stack_:
        ncs = {m: await stack_.enter_async_context(wiring.nats(s, "tagus-bench-sync"))
               for m, s in servers.items()}
        for m, nc in ncs.items():
            await nc.jetstream().add_stream(name=stream, subjects=[subject],
                                            duplicate_window=120.0,
                                            num_replicas=servers[m].stream_replicas)
        try:
            body = b"x" * 200
            for block in range(max(1, n // SMALL_BLOCK)):
                for m in (MODES if (block + run) % 2 else MODES[::-1]):
                    js = ncs[m].jetstream()
                    t0 = time.perf_counter()
                    for i in range(SMALL_BLOCK):
                        ack = await js.publish(subject, body, timeout=30, headers={
                            "Nats-Msg-Id": f"small-{run}-{block}-{i}"})
                        if ack.duplicate:
                            raise SystemExit("bench: a small message was dropped as a "
                                             "duplicate")
                    figs[m].small.append(SMALL_BLOCK / (time.perf_counter() - t0))
        finally:
            for nc in ncs.values():
                await nc.jetstream().delete_stream(stream)


async def one_round(settings: Settings, mode: str, csv: Path, readings: int, args, run: int,
                    prefix: str, workdir: Path, fig: Figures) -> None:
    db = wiring.questdb(settings)
    tenant = f"{prefix}{mode}-{run}"
    stream, subject = f"BENCH_SYNC_{run}", f"tagusbench.sync{run}"
    async with wiring.nats(settings, "tagus-bench-sync") as nc:
        r = bi.E2E("inproc", args.days, tenant, readings)
        await bi.e2e(nc, settings, csv, r, args.batch, workdir)
        fig.e2e.append(r.rate)
        batches = await bi.fetch_batches(nc, tenant)
        await bi.make_bench_stream(nc, stream, subject + ".>")
        try:
            a, s = await bi.ceiling_jetstream(nc, batches, stream, f"{subject}.x", run)
            fig.publish_async.append(readings / a)
            fig.publish_sync.append(readings / s)
        finally:
            await nc.jetstream().delete_stream(stream)
    note = await bi.drop_bench_days(settings, db, prefix, args.days, args.tz)
    if note.startswith("kept"):
        print(f"  WARNING: {note}")
    print(f"  run {run} {mode:7}: e2e {fig.e2e[-1] / 1e3:7,.0f} k readings/s ({r.visible_s:.2f} s)"
          f"; publish_async {fig.publish_async[-1] / 1e3:7,.0f} k readings/s; one at a time "
          f"{fig.publish_sync[-1] / 1e3:7,.0f} k readings/s ({len(batches)} msgs)", flush=True)


def report(figs: dict[str, Figures], args, cmd: str) -> None:
    rows = (("end to end (file -> rows queryable)", "e2e", 1e3, "k readings/s"),
            ("JetStream publish_async, readings batches", "publish_async", 1e3, "k readings/s"),
            ("JetStream publish one at a time, batches", "publish_sync", 1e3, "k readings/s"),
            ("JetStream publish one at a time, small messages", "small", 1.0, "msg/s"))
    print(f"\nmedians of {args.runs} runs each (small messages: of "
          f"{len(figs[MODES[0]].small)} blocks of {SMALL_BLOCK}); {os.cpu_count()} CPUs, load "
          f"average {' '.join(f'{x:.2f}' for x in os.getloadavg())}:")
    print(f"  {'':50} {'default':>10} {'always':>10}   always/default")
    for label, attr, scale, unit in rows:
        d, a = (bi._median(getattr(figs[m], attr)) for m in MODES)
        print(f"  {label:50} {d / scale:10,.1f} {a / scale:10,.1f}   {a / d:5.2f}  ({unit})")
    print(f"reproduce: cd {bi.ROOT} && .venv/bin/{cmd.strip()}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tagus bench sync", description=__doc__.split("\n")[0])
    p.add_argument("--sensors", type=int, default=500)
    p.add_argument("--days", type=int, default=1)
    p.add_argument("--runs", type=int, default=5, help="rounds (each server once per round)")
    p.add_argument("--small", type=int, default=2000, help="small messages per run")
    p.add_argument("--batch", type=int, default=100, help="runners' fetch batch")
    p.add_argument("--cluster", action="store_true", help="each server a 3-node cluster "
                   "on loopback, streams at R3 (an ack = on a quorum)")
    p.add_argument("--tz", default="Europe/Madrid")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="CI smoke run: " + ", ".join(
        f"--{k} {v}" for k, v in QUICK.items()) + " (options given win)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)
    if min(args.sensors, args.days, args.runs, args.small) < 1:
        p.error("--sensors, --days, --runs and --small must be >= 1")
    cmd = " ".join(["tagus bench sync", *(argv if argv is not None else sys.argv[1:])])
    return asyncio.run(_main(load_settings(), args, cmd))


async def _main(base: Settings, args, cmd: str) -> int:
    print(f"tagus bench sync: {'3-node clusters, R3; ' if args.cluster else ''}"
          f"{args.sensors} sensors x {args.days} d of 1-minute rows, "
          f"{args.runs} rounds; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"  {await asyncio.to_thread(stack.questdb_up, base)}")  # the stack's QuestDB
    db = wiring.questdb(base)
    await asyncio.to_thread(projection(db).prepare)
    prefix = f"bench-sync-{datetime.now(UTC):%Y%m%d-%H%M%S}-"
    with tempfile.TemporaryDirectory(prefix="tagus-bench-sync-") as tmp:
        root = Path(tmp)
        servers = {m: private_settings(base, root, m, 3 if args.cluster else 1)
                   for m in MODES}
        try:
            for m, s in servers.items():
                line = await asyncio.to_thread(
                    stack.nats_up, s, cluster=3 if args.cluster else None, ports="free")
                line = line.replace("\n", "; ")
                raw = stack._http_get(f"http://{s.nats_host}:{s.nats_monitor_port}/varz")
                js_conf = (json.loads(raw or b"{}").get("jetstream") or {}).get("config") or {}
                if bool(js_conf.get("sync_always")) != (m == "always"):
                    raise SystemExit(f"bench: the {m} nats-server reports sync_always="
                                     f"{js_conf.get('sync_always')!r}; not what was asked")
                print(f"  {m}: {line} (sync_always={bool(js_conf.get('sync_always'))})")
                async with wiring.nats(s, "tagus-bench-sync") as nc:
                    for attempt in range(5):  # a fresh cluster under load: R3 streams
                        try:                  # can take longer than the API timeout
                            await ensure_topology(nc.jetstream(timeout=30),
                                                  wiring.topology(s))
                            break
                        except TimeoutError:
                            if attempt == 4:
                                raise
                            await asyncio.sleep(2)
            csv = root / f"bench-{args.sensors}x{args.days}d.csv"
            rows = await asyncio.to_thread(bi.write_csv, csv, sensors=args.sensors,
                                           days=args.days, tz=args.tz, seed=args.seed)
            csv.with_suffix(".yaml").write_bytes(bi.mapping_yaml(sensors=args.sensors,
                                                                 tz=args.tz))
            readings = rows * args.sensors
            print(f"file: {rows:,} rows x {args.sensors} = {readings:,} readings "
                  f"({csv.stat().st_size / 2**20:.1f} MB); stream of "
                  f"{family_of(ReadingsNormalised)} at R{3 if args.cluster else 1}")
            figs = {m: Figures() for m in MODES}
            note = await bi.drop_bench_days(base, db, "bench-", args.days, args.tz)
            if note.startswith("kept"):
                print(f"  WARNING: {note}")
            for run in range(1, args.runs + 1):
                order = MODES if run % 2 else MODES[::-1]
                for m in order:
                    await one_round(servers[m], m, csv, readings, args, run, prefix, root,
                                    figs[m])
                await small_messages(servers, args.small, run, figs)
                print(f"  run {run} small messages one at a time, medians: " + "; ".join(
                    f"{m} {bi._median(figs[m].small[-(args.small // SMALL_BLOCK or 1):]):,.0f}"
                    " msg/s" for m in MODES), flush=True)
            report(figs, args, cmd)
        finally:
            for s in servers.values():
                await asyncio.to_thread(stack.down, s)
            await bi.drop_bench_days(base, db, prefix, args.days, args.tz)
    return 0
