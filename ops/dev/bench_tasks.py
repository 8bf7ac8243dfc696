"""``tagus bench tasks``: scheduling latency and the scheduler's CPU, 1,000 tenants x 5
hourly schedules, against the running stack (``tagus stack up``, or ``TAGUS_*``).

How (so the figures mean what they say):

- **Tenants**: ``bench<run>-0000``... each with a tenant document (zones cycle through
  five whole-hour zones) and 5 hourly schedules at minutes 0, 12, 24, 36, 48 (1,000 slots
  every 12 minutes), or ``--aligned``: all five at minute 0 (5,000 slots at once, the
  worst case).  Their configuration view is written straight into KV ``tagus-config``
  (``config.changed`` events built from validated documents; writing 2,000 versions
  through the config service would also append them to the CONFIG stream of the
  developer's stack for nothing); everything the run created is purged at the end.
- **Scheduler**: one ``tagus run scheduler`` process (as operators run it), restricted to
  the run's tenants (``TAGUS_SCHEDULER_TENANTS``) on a **window clock**
  (``TAGUS_SCHEDULER_CLOCK=window,...``): real speed for a few seconds around each slot
  instant, then a jump to the next one.  Inside a window the clock runs at real speed,
  so every latency below is in real seconds; three simulated hours take a minute or two.
- **Latencies** from the slot's real instant: to the request's ``recorded_at`` (the
  scheduler's clock when it built the request, after its claim), to the message's
  timestamp in the TASKS stream (stored = acknowledged: "requested"), and to the moment
  a subscriber receives it ("visible to a consumer": a push subscription standing in
  for a task worker; ``task.started`` depends on the worker's own queueing and is not
  measured here).
- **CPU**: the scheduler's own per-tick figure (process CPU from the wake-up to the last
  request of that slot instant, from its ``tick`` log lines), and the whole process per
  window and while idle (psutil).

``--quick`` (CI smoke run): 50 tenants, 2 simulated hours, short windows; the target is
reported, not enforced (a shared CI machine's latency is not the scheduler's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import psutil
from nats.js import api as js_api

from bus.storage import CONFIG_BUCKET
from bus.topology import ensure_topology
from contracts.base import derive_id
from contracts.config import ConfigChanged, parse_document
from contracts.registry import decode, encode
from contracts.tasks import TaskRequested, kind_token
from ops import wiring
from ops.settings import Settings, load_settings
from producers.scheduler import CURSORS_BUCKET, SLOTS_BUCKET, WindowClock

KIND = "bench.noop"  # a task kind no worker takes
ZONES = ("Europe/Rome", "Europe/Madrid", "Europe/London", "Europe/Lisbon", "UTC")
SPREAD = (0, 12, 24, 36, 48)
START = datetime(2025, 6, 2, 6, 0, tzinfo=UTC)  # the first slot instant (a Monday)
REPO = Path(__file__).resolve().parents[2]


def _doc_event(tenant: str, kind: str, document: dict) -> ConfigChanged:
    doc = parse_document(kind, document).model_dump(mode="json")
    now = datetime.now(UTC)
    return ConfigChanged(event_id=derive_id("bench", tenant, kind), tenant=tenant,
                         occurred_at=now, recorded_at=now, kind=kind, version=1,
                         sha256="0" * 64, document=doc, author="bench")


async def _gather(coros, limit: int = 128):
    sem = asyncio.Semaphore(limit)

    async def one(c):
        async with sem:
            return await c
    return await asyncio.gather(*(one(c) for c in coros))


async def _configure(js, tenants: list[str], minutes: tuple[int, ...]) -> None:
    kv = await js.key_value(CONFIG_BUCKET)
    puts = []
    for i, t in enumerate(tenants):
        tenant = _doc_event(t, "tenant", {"display_name": t, "timezone": ZONES[i % len(ZONES)]})
        schedules = _doc_event(t, "schedules", {"schedules": [
            {"name": f"s{k}", "task": KIND, "cron": f"{m} * * * *"}
            for k, m in enumerate(minutes)]})
        puts += [kv.put(f"{t}.tenant", encode(tenant)), kv.put(f"{t}.schedules", encode(schedules))]
    await _gather(puts)


async def _purge(js, tenants: list[str]) -> None:
    """Remove everything the run's tenants left: requests, claims, cursors, configuration."""
    jobs = []
    for t in tenants:
        jobs += [js.purge_stream("TASKS", subject=f"tagus.task.{t}.>"),
                 js.purge_stream(f"KV_{SLOTS_BUCKET}", subject=f"$KV.{SLOTS_BUCKET}.{t}.>"),
                 js.purge_stream(f"KV_{CURSORS_BUCKET}", subject=f"$KV.{CURSORS_BUCKET}.{t}.>"),
                 js.purge_stream(f"KV_{CONFIG_BUCKET}", subject=f"$KV.{CONFIG_BUCKET}.{t}.>")]
    await _gather(jobs)


def _spawn(settings: Settings, env_extra: dict[str, str], log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, TAGUS_LOG_LEVEL="INFO", **env_extra)
    user, password = settings.nats_auth()
    if user and not os.environ.get("TAGUS_NATS_USER"):
        env.update(TAGUS_NATS_USER=user, TAGUS_NATS_PASSWORD=password or "")
    with open(log_path, "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "ops.cli", "run", "scheduler"], cwd=REPO,
                                env=env, stdout=log, stderr=subprocess.STDOUT)


def _log_lines(path: Path) -> list[dict]:
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _row(name: str, seconds: list[float]) -> str:
    if not seconds:
        return f"  {name:<34} n=0"
    a = np.asarray(seconds)
    return (f"  {name:<34} {len(a):>6} {np.percentile(a, 50):8.3f} {np.percentile(a, 99):8.3f}"
            f" {a.max():8.3f}")


async def _bench(settings: Settings, args) -> int:
    minutes = (0,) * 5 if args.aligned else SPREAD
    period_s = 3600.0 if args.aligned else 720.0
    instants = int(args.hours * 3600 / period_s)
    lead = args.lead_s
    run = secrets.token_hex(2)
    tenants = [f"bench{run}-{i:04d}" for i in range(args.tenants)]
    # aligned: the five schedules of every tenant at each instant; spread: one of them
    expected = args.tenants * instants * (5 if args.aligned else 1)
    t0 = time.time() + args.startup_s
    clock = WindowClock(t0, START - timedelta(seconds=lead), period_s, args.window_s)
    spec = (f"window,t0={t0},start={(START - timedelta(seconds=lead)).isoformat()},"
            f"period={period_s},window={args.window_s}")
    log_dir = Path(settings.data_dir) / "bench"
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"tasks-scheduler-{run}.log"
    load_before = os.getloadavg()

    nc = await wiring.nats_connection(settings, "tagus-bench-tasks",
                                      first_connect_timeout_s=settings.cli_timeout_s)
    js = nc.jetstream()
    received: list[tuple[float, TaskRequested, float]] = []

    async def seen(msg) -> None:
        received.append((time.time(), decode("task", msg.data),
                         msg.metadata.timestamp.timestamp()))

    proc = None
    try:
        await ensure_topology(js, wiring.topology(settings))
        sub = await js.subscribe(f"tagus.task.*.{kind_token(KIND)}", stream="TASKS", cb=seen,
                                 ordered_consumer=True,
                                 deliver_policy=js_api.DeliverPolicy.NEW)
        spawned = time.time()
        proc = _spawn(settings, {
            "TAGUS_SCHEDULER_CLOCK": spec, "TAGUS_SCHEDULER_TENANTS": f"bench{run}-*",
            "TAGUS_SCHEDULER_CLAIM_AHEAD_S": str(max(0.5, lead - 0.5))}, log_path)
        print(f"configuring {len(tenants)} tenants x 5 hourly schedules "
              f"({'all at minute 0' if args.aligned else 'minutes ' + ','.join(map(str, minutes))})"
              f" straight into KV {CONFIG_BUCKET}...", file=sys.stderr)
        c0 = time.perf_counter()
        await _configure(js, tenants, minutes)
        print(f"  done in {time.perf_counter() - c0:.1f} s; scheduler starting "
              f"(log {log_path})", file=sys.stderr)
        ps = psutil.Process(proc.pid)
        want_cursors, prefix = len(tenants) * 5, f"$KV.{CURSORS_BUCKET}.bench{run}-"
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the scheduler exited with {proc.returncode}:\n"
                                 + log_path.read_text(errors="replace")[-2000:])
            info = await js.stream_info(f"KV_{CURSORS_BUCKET}",
                                        subjects_filter=f"$KV.{CURSORS_BUCKET}.>")
            have = sum(1 for s in (info.state.subjects or {}) if s.startswith(prefix))
            if have >= want_cursors:
                break
            if time.time() > t0 - 1:
                raise SystemExit(f"the scheduler was not ready (cursors {have}/{want_cursors}) "
                                 f"before the first slot: raise --startup-s "
                                 f"(now {args.startup_s:g})")
            await asyncio.sleep(0.5)
        ready_s = time.time() - spawned
        print(f"  scheduler ready (every cursor created) {ready_s:.1f} s after it was spawned",
              file=sys.stderr)
        idle_from, idle_cpu0 = time.time(), _cpu(ps)
        await asyncio.sleep(max(0.0, t0 - 0.2 - time.time()))
        idle_s, idle_cpu = time.time() - idle_from, _cpu(ps) - idle_cpu0
        print(f"running {instants} slot instants in windows of {args.window_s:g} s "
              f"({args.hours:g} simulated hours)...", file=sys.stderr)
        window_cpu = []
        for k in range(instants):
            cpu0 = _cpu(ps)
            await asyncio.sleep(max(0.0, t0 + (k + 1) * args.window_s - time.time()))
            window_cpu.append(_cpu(ps) - cpu0)
            print(f"  instant {k + 1}/{instants}: {len(received)} requests seen",
                  file=sys.stderr)
        await sub.unsubscribe()
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if not args.keep:
            await _purge(js, tenants)
        await nc.drain()
    load_after = os.getloadavg()

    slot_real = {}
    recorded, stored, visible = [], [], []
    per_slot: dict[tuple[str, str, datetime], int] = {}
    for recv, event, stored_at in received:
        key = (event.tenant, event.schedule, event.slot)
        per_slot[key] = per_slot.get(key, 0) + 1
        r = slot_real.setdefault(event.slot, clock.real_at(event.slot))
        recorded.append((event.recorded_at - event.slot).total_seconds())
        stored.append(stored_at - r)
        visible.append(recv - r)
    ticks = [line for line in _log_lines(log_path) if line.get("event") == "tick"]
    tick_cpu = [line["cpu_ms"] for line in ticks if line.get("requested")]
    requested_in_ticks = sum(line.get("requested", 0) for line in ticks)
    dupes = sum(1 for n in per_slot.values() if n > 1)

    print()
    print(f"tagus bench tasks: {args.tenants} tenants x 5 hourly schedules "
          f"({'aligned at :00' if args.aligned else 'at :00, :12, :24, :36, :48'}), "
          f"{args.hours:g} simulated hours = {instants} slot instants of "
          f"{expected // max(instants, 1)} requests")
    print(f"  clock: window clock, real speed inside {args.window_s:g} s windows, a jump of "
          f"{period_s - args.window_s:g} s between: latencies are real seconds")
    print(f"  scheduler: one `tagus run scheduler` process, claims {max(0.5, lead - 0.5):g} s "
          f"ahead; configuration written straight into KV (not through the config service)")
    print(f"  start-up: ready {ready_s:.1f} s after spawn (imports, {len(tenants)} tenants' "
          f"configuration, {len(tenants) * 5} cursors)")
    print(f"  machine: {os.cpu_count()} CPUs, load average {load_before[0]:.2f} before, "
          f"{load_after[0]:.2f} after (the bench, NATS and the scheduler share them)")
    print(f"  requests: {expected} expected, {len(received)} seen, {len(per_slot)} distinct "
          f"slots, {dupes} slots seen more than once")
    print(f"  {'latency (s) from the slot':<34} {'n':>6} {'p50':>8} {'p99':>8} {'max':>8}")
    print(_row("-> recorded_at (scheduler)", recorded))
    print(_row("-> stored in TASKS (requested)", stored))
    print(_row("-> visible to a consumer", visible))
    per_slot_ms = (sum(window_cpu) / max(len(received), 1)) * 1000
    if tick_cpu:
        a = np.asarray(tick_cpu)
        print(f"  scheduler CPU per tick (its own measure, {len(a)} ticks, "
              f"{requested_in_ticks / len(a):.0f} requests each): p50 {np.percentile(a, 50):.0f} "
              f"ms, max {a.max():.0f} ms")
    if window_cpu:
        w = np.asarray(window_cpu) * 1000
        print(f"  scheduler process CPU per window (psutil): p50 {np.percentile(w, 50):.0f} ms, "
              f"max {w.max():.0f} ms; per request {per_slot_ms:.3f} ms; idle "
              f"{100 * idle_cpu / max(idle_s, 1e-9):.2f} % of a core over {idle_s:.1f} s")
    p99 = float(np.percentile(stored, 99)) if stored else float("inf")
    ok = p99 <= args.target_s and len(per_slot) == expected and dupes == 0
    verdict = "met" if ok else "MISSED"
    print(f"  target p99 slot -> requested <= {args.target_s:g} s, every slot once: {verdict} "
          f"(p99 {p99:.3f} s){' [quick: reported, not enforced]' if args.quick else ''}")
    return 0 if ok or args.quick else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tagus bench tasks", description=__doc__.split("\n")[0])
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--hours", type=float, default=3.0, help="simulated hours")
    p.add_argument("--aligned", action="store_true",
                   help="all five schedules at minute 0 (5 x tenants slots at once)")
    p.add_argument("--window-s", type=float, default=None,
                   help="real seconds around each slot instant (default 6, aligned 10)")
    p.add_argument("--lead-s", type=float, default=None,
                   help="seconds into each window the slot falls (default 2.5, aligned 4)")
    p.add_argument("--startup-s", type=float, default=None,
                   help="real seconds before the first window: the scheduler starts and "
                        "loads (default 45, quick 10)")
    p.add_argument("--target-s", type=float, default=1.0, help="p99 slot -> requested")
    p.add_argument("--keep", action="store_true", help="keep the run's tenants and requests")
    p.add_argument("--quick", action="store_true",
                   help="50 tenants, 2 simulated hours, 2 s windows; target not enforced")
    args = p.parse_args(argv)
    if args.quick:
        args.tenants, args.hours = min(args.tenants, 50), min(args.hours, 2.0)
        args.window_s = args.window_s or 2.0
        args.lead_s = args.lead_s or 1.5
        args.startup_s = args.startup_s or 10.0
    args.window_s = args.window_s or (10.0 if args.aligned else 6.0)
    args.lead_s = args.lead_s or (4.0 if args.aligned else 2.5)
    args.startup_s = args.startup_s or 45.0
    if not 0 < args.lead_s < args.window_s:
        p.error("--lead-s must be within the window")
    return asyncio.run(_bench(load_settings(), args))
