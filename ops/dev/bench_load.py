"""``tagus bench load``: simulated utilities pushing readings through the intake service.

``--tenants`` utilities, each with ``--sensors`` meters, push one reading per meter every
``--interval-s`` (60: 1-minute resolution) for ``--minutes``, through the real push
doors of `tagus serve intake` over HTTP (even tenants: line protocol ``/api/v2/write``;
odd: JSON push ``/v1/readings``).  Tenants are spread evenly over the interval, so the
offered load is steady: tenants x sensors / interval readings/s.  ``--replicas`` (2)
`tagus run normalise` and as many `tagus run questdb-readings` run as subprocesses on
the same durable consumers, each with its metrics listener (``TAGUS_METRICS_PORT``).

Prints: offered and sustained readings/s (readings queryable / the time from the first
push due to the last row queryable: below the offered rate when the pipeline or the load
generator falls behind), latency from a push being due (the utility's clock: the bench's own
delay in starting the request, at most ``--concurrency`` in flight, is counted and shown)
to all its rows being queryable in QuestDB (p50/p90/p99/max; measured by polling QuestDB
every ``--poll-s``, so a latency is late by up to one poll), consumer lag over time (from
the consumers' info every 2 s) and
whether it grew, CPU (% of one core) and peak RSS of every process (the servers
included).  Exit code 1 if a push failed, a row was lost or duplicated, or a process
died; p99 <= 2 s is reported, not enforced.

Readings are stamped on a synthetic timeline from 2001-03-05 00:00 UTC (elapsed time since
the start, ms precision, unique per push), so the rows land in day partitions no real
tenant touches; those partitions are dropped afterwards when only bench tenants (``load-``)
hold rows there, and the bench tenants' subjects, uploads and output records are purged.
``--keep`` leaves it all.  ``--quick``: the CI smoke run (4 tenants x 10 sensors, a push
every 5 s for 20 s, one replica each: tens of seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from nats.js.errors import NotFoundError as JsNotFound

from bus.outputs import OUTPUTS_BUCKET, OutputLog
from bus.storage import INTAKE_BUCKET, SEEN_BUCKET
from bus.subjects import stream_name, tenant_subjects
from bus.tokens import TokenStore
from contracts.registry import FAMILIES
from ops import wiring
from ops.dev.bench_ingest import ProcSampler, _watch_servers
from ops.settings import Settings, load_settings
from projections.readings import TABLE

ROOT = Path(__file__).resolve().parents[2]
BASE = datetime(2001, 3, 5, tzinfo=UTC)  # a Monday of 2001: no real tenant's data
BASE_MS = int(BASE.timestamp() * 1000)
PREFIX = "load-"
COMPONENTS = ("normalise", "questdb-readings")
QUICK = {"tenants": 4, "sensors": 10, "minutes": 20 / 60, "interval_s": 5.0, "replicas": 1}
P99_TARGET_S = 2.0

# values bound over PG wire; the table name is the projection's constant
SEEN_SQL = (f"SELECT tenant, ts, count() FROM {TABLE} WHERE ts >= $1 AND ts <= $2 "
            "GROUP BY tenant, ts")
WAL_SQL = "SELECT writerTxn, sequencerTxn FROM wal_tables() WHERE name = $1"
HELD_SQL = f"SELECT tenant, count() FROM {TABLE} WHERE ts >= $1 AND ts < $2 GROUP BY tenant"


@dataclass
class Push:
    tenant: str
    ts_ms: int
    readings: int
    due: float = 0.0  # monotonic: when the utility sends it (latency counts from here)
    sent: float = 0.0  # the request started (later than due when --concurrency are busy)
    answered: float = 0.0
    seen: float = 0.0  # all its rows queryable
    intake_id: str = ""


@dataclass
class Run:
    pushes: list[Push] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    retries: int = 0  # pushes sent again after a transport error (same Idempotency-Key)
    lag: list[tuple[float, dict[str, int]]] = field(default_factory=list)
    t0: float = 0.0


# ---------------------------------------------------------------- bodies


def line_protocol(sensors: int, ts_ms: int, rng: random.Random) -> bytes:
    return "".join(f"flow,site=s{j:04d},unit=l/s value={rng.uniform(5, 200):.3f} {ts_ms}\n"
                   for j in range(sensors)).encode()


def json_push(sensors: int, ts_ms: int, rng: random.Random) -> bytes:
    return json.dumps({"series": [
        {"sensor": f"s{j:04d}", "unit": "l/s", "ts": [ts_ms],
         "values": [round(rng.uniform(5, 200), 3)]} for j in range(sensors)]}).encode()


# ---------------------------------------------------------------- processes


class Processes:
    """The intake service and the component replicas as `tagus` subprocesses."""

    def __init__(self, logdir: Path, env: dict[str, str]) -> None:
        self.logdir, self.env = logdir, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, args: list[str], port_var: str) -> None:
        from ops.dev.stack import free_port

        port = free_port()
        with open(self.logdir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ops.cli", *args], cwd=ROOT,
                env={**os.environ, **self.env, port_var: str(port)},
                stdout=log, stderr=subprocess.STDOUT)
        self.ports[name] = port

    def check(self) -> None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                tail = (self.logdir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise SystemExit(f"bench: {name} (`tagus {' '.join(p.args[3:])}`) exited with "
                                 f"code {p.returncode}:\n{tail}")

    async def ready(self, http: httpx.AsyncClient, timeout_s: float) -> None:
        """Wait until every process answers ``/readyz`` with 200."""
        deadline = time.monotonic() + timeout_s
        waiting = dict(self.ports)
        while waiting:
            self.check()
            for name, port in list(waiting.items()):
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                        del waiting[name]
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: not ready after {timeout_s:.0f} s: {sorted(waiting)}")
            await asyncio.sleep(0.2)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(10)


# ---------------------------------------------------------------- the load


def idempotency_key(push: Push) -> str:
    return f"{push.tenant}-{push.ts_ms}"


async def _push(http: httpx.AsyncClient, url: str, tokens: dict[str, str], push: Push,
                body: bytes, door: str, run: Run, inflight: asyncio.Semaphore) -> None:
    async with inflight:  # never queue in httpx's pool: its queue is quadratic
        await _request(http, url, tokens, push, body, door, run)


async def _request(http: httpx.AsyncClient, url: str, tokens: dict[str, str], push: Push,
                   body: bytes, door: str, run: Run) -> None:
    """One push, retried once on a transport error (a keep-alive connection the server
    closed as it was reused) with the same ``Idempotency-Key``: stored once either way."""
    push.sent = time.monotonic()
    headers = {"Idempotency-Key": idempotency_key(push)}
    if door == "lp":
        path, params = "/api/v2/write", {"precision": "ms"}
        headers["Authorization"] = f"Token {tokens[push.tenant]}"
    else:
        path, params = "/v1/readings", {}
        headers |= {"Authorization": f"Bearer {tokens[push.tenant]}",
                    "Content-Type": "application/json"}
    for attempt in (1, 2):
        try:
            r = await http.post(f"{url}{path}", params=params, content=body, headers=headers)
            break
        except httpx.TransportError as e:
            if attempt == 2:
                run.failures.append(f"{push.tenant} at {push.ts_ms}: {type(e).__name__}: {e}")
                return
            run.retries += 1
    push.answered = time.monotonic()
    if r.status_code not in (202, 204):
        run.failures.append(f"{push.tenant} at {push.ts_ms}: HTTP {r.status_code} {r.text[:200]}")
        return
    push.intake_id = r.headers.get("X-Tagus-Intake-Id", "")


async def generate(http: httpx.AsyncClient, url: str, tokens: dict[str, str], args,
                   run: Run, procs: Processes) -> None:
    """Every tenant pushes every ``interval_s``, tenants spread evenly over the interval."""
    tenants = sorted(tokens)
    rng = random.Random(7)
    rounds = max(1, round(args.minutes * 60 / args.interval_s))
    step = args.interval_s / len(tenants)
    pending: set[asyncio.Task] = set()
    inflight = asyncio.Semaphore(args.concurrency)
    run.t0 = time.monotonic()
    for r in range(rounds):
        for i, tenant in enumerate(tenants):
            at = run.t0 + r * args.interval_s + i * step
            if (delay := at - time.monotonic()) > 0:
                await asyncio.sleep(delay)
            if not i:
                procs.check()
            ts_ms = BASE_MS + round((time.monotonic() - run.t0) * 1000)
            door = "lp" if i % 2 == 0 else "json"
            body = (line_protocol if door == "lp" else json_push)(args.sensors, ts_ms, rng)
            push = Push(tenant, ts_ms, args.sensors, due=at)
            run.pushes.append(push)
            task = asyncio.create_task(_push(http, url, tokens, push, body, door, run, inflight))
            pending.add(task)
            task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


async def watch_rows(settings: Settings, run: Run, done: asyncio.Event, poll_s: float) -> None:
    """Mark each push seen when QuestDB returns all its rows (polled every ``poll_s``)."""
    conn = await wiring.pg_connection(settings)
    try:
        while True:
            finished = done.is_set()
            open_ = [p for p in run.pushes if p.answered and not p.seen]
            if open_:
                lo = min(p.ts_ms for p in open_)
                hi = max(p.ts_ms for p in open_)
                rows = await conn.fetch(SEEN_SQL, _naive(lo), _naive(hi))
                now = time.monotonic()
                counts = {(t, int(ts.replace(tzinfo=UTC).timestamp() * 1000)): n
                          for t, ts, n in rows}
                for p in open_:
                    if counts.get((p.tenant, p.ts_ms), 0) >= p.readings:
                        p.seen = now
            elif finished:
                return
            if finished and all(p.seen or not p.answered for p in run.pushes):
                return
            await asyncio.sleep(poll_s)
    finally:
        await conn.close()


async def watch_lag(nc, settings: Settings, run: Run, stop: asyncio.Event,
                    every_s: float = 2.0) -> None:
    """Every ``every_s``: each consumer's unacknowledged messages, and the WAL transactions
    of the readings table QuestDB has committed but not yet applied (rows not queryable)."""
    js, topo = nc.jetstream(), wiring.topology(settings)
    conn = await wiring.pg_connection(settings)
    try:
        while not stop.is_set():
            lag = {}
            for name in COMPONENTS:
                spec = topo.consumer(name)
                with contextlib.suppress(Exception):
                    info = await js.consumer_info(spec.stream, spec.durable)
                    lag[name] = (info.num_pending or 0) + (info.num_ack_pending or 0)
            with contextlib.suppress(Exception):
                row = await conn.fetchrow(WAL_SQL, TABLE)
                lag["wal"] = row[1] - row[0]
            run.lag.append((time.monotonic(), lag))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), every_s)
    finally:
        await conn.close()


def _naive(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC).replace(tzinfo=None)


# ---------------------------------------------------------------- clean-up


async def drop_days(settings: Settings, db, first: datetime, last: datetime,
                    only: set[str] | None = None) -> str:
    """Drop the day partitions [first day, last day] when only ``load-`` tenants hold rows
    (``only``: only these tenants -- at the end of a run, so it never drops the rows of
    another run started meanwhile on the same stack)."""
    lo = datetime(first.year, first.month, first.day, tzinfo=UTC)
    hi = datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)
    conn = await wiring.pg_connection(settings)
    try:
        held = await conn.fetch(HELD_SQL, lo.replace(tzinfo=None), hi.replace(tzinfo=None))
    finally:
        await conn.close()
    if not held:
        return ""
    others = [t for t, _ in held
              if not t.startswith(PREFIX) or (only is not None and t not in only)]
    span = f"{lo:%Y-%m-%d}..{hi:%Y-%m-%d}"
    if others:
        return f"kept {TABLE} partitions {span}: they also hold rows of {others[:5]}"
    # DDL cannot bind values: formatted only from datetimes computed here
    await asyncio.to_thread(
        db.exec, f"ALTER TABLE {TABLE} DROP PARTITION WHERE ts >= "
                 f"'{lo:%Y-%m-%dT%H:%M:%S.%fZ}' AND ts < '{hi:%Y-%m-%dT%H:%M:%S.%fZ}'")
    await asyncio.to_thread(db.wait_for_wal, TABLE, 120.0)
    return f"dropped {TABLE} partitions {span} (bench rows only)"


async def cleanup(nc, tenants: list[str], pushes: list[Push]) -> str:
    js = nc.jetstream()
    for t in tenants:
        for family in FAMILIES:
            with contextlib.suppress(JsNotFound):
                await js.purge_stream(stream_name(family), subject=tenant_subjects(family, t))
    store = await js.object_store(INTAKE_BUCKET)
    mine = set(tenants)
    deleted = 0
    with contextlib.suppress(Exception):  # nats-py raises NotFoundError on an empty store
        for o in await store.list():
            if not o.deleted and o.name.split("/", 1)[0] in mine:
                await store.delete(o.name)
                deleted += 1
    with contextlib.suppress(JsNotFound):
        outputs, seen = await js.key_value(OUTPUTS_BUCKET), await js.key_value(SEEN_BUCKET)
        for p in pushes:
            if p.intake_id:
                with contextlib.suppress(Exception):
                    await outputs.purge(OutputLog.key("normalise", p.tenant, p.intake_id))
            key = hashlib.sha256(idempotency_key(p).encode()).hexdigest()
            with contextlib.suppress(Exception):  # producers.intake's key of a keyed push
                await seen.purge(f"{p.tenant}.request.{key}")
    return (f"purged {len(tenants)} bench tenants from every stream, {deleted} uploads, "
            "their idempotency keys and output records")


# ---------------------------------------------------------------- report


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * len(xs) + 0.5) - 1))]


def report(args, run: Run, ps: ProcSampler, wall_s: float, cmd: str) -> bool:
    """Print the figures; True when nothing failed or went missing."""
    answered = [p for p in run.pushes if p.answered]
    seen = [p for p in answered if p.seen]
    readings = sum(p.readings for p in seen)
    offered = args.tenants * args.sensors / args.interval_s
    lat = [p.seen - p.due for p in seen]
    http = [p.answered - p.sent for p in answered]
    late = [p.sent - p.due for p in answered]
    first = min((p.due for p in run.pushes), default=run.t0)
    last_seen = max((p.seen for p in seen), default=first)
    push_span = max((p.due for p in run.pushes), default=first) - first + args.interval_s / \
        max(1, args.tenants)
    print(f"\npushes: {len(run.pushes):,} sent, {len(answered):,} accepted, "
          f"{len(run.failures)} failed ({run.retries} retried once); {readings:,} readings "
          "queryable of "
          f"{sum(p.readings for p in answered):,} accepted")
    for f in run.failures[:5]:
        print(f"  failed: {f}")
    print(f"offered {offered:,.0f} readings/s ({args.tenants} tenants x {args.sensors} sensors "
          f"every {args.interval_s:g} s for {push_span:.0f} s); sustained "
          f"{readings / max(last_seen - first, push_span, 1e-9):,.0f} readings/s ({readings:,} "
          f"readings, the last queryable {last_seen - first:.1f} s after the first push was "
          "due)")
    print(f"latency push due -> rows queryable (n={len(lat):,}, QuestDB polled every "
          f"{args.poll_s:g} s): p50 {_pct(lat, 50):.2f} s  p90 {_pct(lat, 90):.2f} s  "
          f"p99 {_pct(lat, 99):.2f} s  max {max(lat, default=float('nan')):.2f} s; "
          f"p99 <= {P99_TARGET_S:g} s: {'met' if _pct(lat, 99) <= P99_TARGET_S else 'MISSED'}")
    steady = [p.seen - p.due for p in seen if p.due >= first + args.interval_s]
    if steady:  # every tenant's first push warms its caches (mapping, configuration)
        print(f"  the same after the first round (n={len(steady):,}): p50 "
              f"{_pct(steady, 50):.2f} s  p90 {_pct(steady, 90):.2f} s  p99 "
              f"{_pct(steady, 99):.2f} s  max {max(steady):.2f} s; p99 <= {P99_TARGET_S:g} s: "
              f"{'met' if _pct(steady, 99) <= P99_TARGET_S else 'MISSED'}")
    print(f"intake HTTP answer: p50 {_pct(http, 50) * 1e3:.0f} ms  p99 "
          f"{_pct(http, 99) * 1e3:.0f} ms; request start after its due time (the bench's own "
          f"delay, included above): p99 {_pct(late, 99) * 1e3:.0f} ms  max "
          f"{max(late, default=float('nan')) * 1e3:.0f} ms")
    print("lag over time: consumers' messages not yet acknowledged; QuestDB WAL transactions "
          f"of {TABLE} committed but not yet applied (rows not queryable yet):")
    samples = [(t - run.t0, lag) for t, lag in run.lag]
    shown = max(1, len(samples) // 12)
    for t, lag in samples[::shown]:
        print(f"  t={t:6.1f} s  " + "  ".join(f"{n} {lag.get(n, '?')}"
                                              for n in (*COMPONENTS, "wal")))
    if samples:
        print("  max over the run (sampled every 2 s): " + "; ".join(
            f"{n} {max(lag.get(n, 0) for _, lag in samples)}" for n in (*COMPONENTS, "wal")))
    during = [s for s in samples if 0 <= s[0] <= push_span]
    if len(during) >= 6:
        third = len(during) // 3
        verdict = []
        for n in (*COMPONENTS, "wal"):
            a = statistics.mean(s[1].get(n, 0) for s in during[:third])
            b = statistics.mean(s[1].get(n, 0) for s in during[-third:])
            verdict.append(f"{n} {a:.1f} -> {b:.1f}" + (" GROWING" if b > 2 * a + 5 else ""))
        print("  mean lag first third -> last third of the pushing: " + "; ".join(verdict))
    print(f"processes over {wall_s:.0f} s (CPU % of one core, {os.cpu_count()} cores; peak RSS "
          "sampled every 0.5 s):")
    for name, cpu in ps.cpu.items():
        rss = ps.peak.get(name)
        print(f"  {name:28} CPU {100 * cpu / wall_s:6.1f} %" +
              (f"   RSS {rss / 2**20:6.0f} MB" if rss else ""))
    print(f"reproduce: cd {ROOT} && .venv/bin/{cmd.strip()}")
    lost = len(answered) - len(seen)
    if lost:
        print(f"FAILED: {lost} accepted pushes never became fully queryable")
    return not run.failures and not lost


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tagus bench load", description=__doc__.split("\n")[0])
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--sensors", type=int, default=100, help="per tenant")
    p.add_argument("--minutes", type=float, default=3.0, help="how long the utilities push")
    p.add_argument("--interval-s", type=float, default=60.0,
                   help="each utility pushes every this many seconds (60: 1-minute data)")
    p.add_argument("--replicas", type=int, default=2, help="of normalise and questdb-readings")
    p.add_argument("--batch", type=int, default=100, help="runners' fetch batch")
    p.add_argument("--poll-s", type=float, default=0.2, help="QuestDB poll for latency")
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight at most")
    p.add_argument("--drain-s", type=float, default=300.0,
                   help="after the last push, wait at most this long for the last rows")
    p.add_argument("--keep", action="store_true", help="leave the bench data in place")
    p.add_argument("--quick", action="store_true", help="CI smoke run: " + ", ".join(
        f"--{k.replace('_', '-')} {v:g}" for k, v in QUICK.items()) + " (options given win)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)
    if min(args.tenants, args.sensors, args.replicas, args.batch, args.concurrency) < 1 \
            or args.minutes <= 0 or args.interval_s <= 0 or args.poll_s <= 0:
        p.error("--tenants, --sensors, --replicas, --batch, --concurrency must be >= 1; --minutes, "
                "--interval-s, --poll-s > 0")
    cmd = " ".join(["tagus bench load", *(argv if argv is not None else sys.argv[1:])])
    return asyncio.run(_main(load_settings(), args, cmd))


async def _main(settings: Settings, args, cmd: str) -> int:
    from ops.dev import stack

    # SIGTERM cancels the run: the finally blocks stop the subprocesses and clean up
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, asyncio.current_task().cancel)
    print(f"tagus bench load: {args.tenants} tenants x {args.sensors} sensors, a push each "
          f"every {args.interval_s:g} s for {args.minutes:g} min, {args.replicas} replica(s) "
          f"of {', '.join(COMPONENTS)}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for line in await asyncio.to_thread(stack.up, settings):
        print(f"  {line}")
    stamp = datetime.now(UTC).strftime("%m%d%H%M%S")
    tenants = [f"{PREFIX}{stamp}-{i:04d}" for i in range(args.tenants)]
    store = TokenStore([])
    tokens = {t: store.issue(t, "bench", ("write",)) for t in tenants}
    db = wiring.questdb(settings)
    run = Run()
    ok = False
    with tempfile.TemporaryDirectory(prefix="tagus-bench-load-") as tmp:
        tmpdir = Path(tmp)
        store.save(tmpdir / "tokens.yaml")
        env = {"TAGUS_TOKENS_FILE": str(tmpdir / "tokens.yaml"), "TAGUS_MAIL_POLLER": "off",
               "TAGUS_DROP_DIR": str(tmpdir / "drop"), "TAGUS_LOG_LEVEL": "WARNING",
               "TAGUS_METRICS_POLL_S": "2"}
        procs = Processes(tmpdir, env)
        async with wiring.nats(settings, "tagus-bench-load") as nc:
            from bus.topology import ensure_topology
            from projections.readings import projection

            await ensure_topology(nc.jetstream(), wiring.topology(settings))
            await asyncio.to_thread(projection(db).prepare)
            note = await drop_days(settings, db, BASE, BASE)
            if note.startswith("kept"):
                print(f"  WARNING: {note}")
            stop = asyncio.Event()
            try:
                procs.start("intake", ["serve", "intake"], "TAGUS_INTAKE_HTTP_PORT")
                for k in range(args.replicas):
                    for name in COMPONENTS:
                        procs.start(f"{name} #{k + 1}", ["run", name, "--batch", str(args.batch)],
                                    "TAGUS_METRICS_PORT")
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                async with httpx.AsyncClient(timeout=60, limits=limits) as http:
                    t = time.monotonic()
                    await procs.ready(http, 120.0)
                    print(f"  {len(procs.procs)} processes ready in {time.monotonic() - t:.1f} s; "
                          f"logs in {tmpdir} while running")
                    with ProcSampler(interval_s=0.5) as ps:
                        ps.watch("bench (load + polls)", os.getpid())
                        for name, proc in procs.procs.items():
                            ps.watch(name, proc.pid)
                        _watch_servers(ps, settings)
                        lagger = asyncio.create_task(watch_lag(nc, settings, run, stop))
                        done = asyncio.Event()
                        rows = asyncio.create_task(watch_rows(settings, run, done, args.poll_s))
                        t_wall = time.monotonic()
                        await generate(http, f"http://127.0.0.1:{procs.ports['intake']}",
                                       tokens, args, run, procs)
                        done.set()
                        try:
                            await asyncio.wait_for(asyncio.shield(rows), args.drain_s)
                        except TimeoutError:
                            print(f"  WARNING: rows still missing {args.drain_s:g} s after the "
                                  "last push")
                            rows.cancel()
                        procs.check()
                        wall = time.monotonic() - t_wall
                        stop.set()
                        await lagger
                    ok = report(args, run, ps, wall, cmd)
                    ok = await _exact(settings, run) and ok
            finally:
                stop.set()
                procs.stop()
                if args.keep:
                    print(f"kept: tenants {PREFIX}{stamp}-* (--keep)")
                else:
                    notes = [await cleanup(nc, tenants, run.pushes)]
                    notes.append(await drop_days(settings, db, BASE, BASE, set(tenants)))
                    print("clean-up: " + "; ".join(n for n in notes if n))
    return 0 if ok else 1


async def _exact(settings: Settings, run: Run) -> bool:
    """Every accepted push's readings are in QuestDB exactly once."""
    if not run.pushes:
        return False
    await asyncio.to_thread(wiring.questdb(settings).wait_for_wal, TABLE, 120.0)
    lo = min(p.ts_ms for p in run.pushes)
    hi = max(p.ts_ms for p in run.pushes)
    conn = await wiring.pg_connection(settings)
    try:
        rows = await conn.fetch(SEEN_SQL, _naive(lo), _naive(hi))
    finally:
        await conn.close()
    mine = {p.tenant for p in run.pushes}
    got = sum(n for t, _, n in rows if t in mine)
    want = sum(p.readings for p in run.pushes if p.answered)
    print(f"rows in QuestDB: {got:,} of {want:,} accepted readings "
          f"({'exact' if got == want else 'MISMATCH: lost or duplicated'})")
    return got == want
