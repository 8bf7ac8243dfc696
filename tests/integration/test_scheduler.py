"""The scheduler against the real NATS: DST days, catch-up after an outage, the crash
windows between claiming and requesting, and three ``tagus run scheduler`` processes
(one SIGKILLed and restarted) requesting each slot once.

Clocks: a ``FastClock`` runs a day in seconds, a ``ManualClock`` jumps where the test
says; the processes read theirs from ``TAGUS_SCHEDULER_CLOCK``.  Where a test counts
messages, the TASKS stream's duplicate window is cut to 100 ms first, so the server's
deduplication cannot hide a second request of the same slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from nats.js import api as js_api

from bus.publish import publish
from contracts.registry import decode
from contracts.tasks import TaskRequested
from ops.config_service import ConfigStore
from producers.scheduler import (
    CURSORS_BUCKET, SLOTS_BUCKET, FastClock, ManualClock, Scheduler, SchedulerOptions,
    task_id_for,
)
from producers.scheduler.claims import (
    SlotClaim, claim_key, create_claim, purge_claims_before, read_claim,
)
from tests.conftest import REPO
from tests.helpers import eventually

pytestmark = pytest.mark.servers


def utc(*a) -> datetime:
    return datetime(*a, tzinfo=UTC)


def _tenant(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:6]}"


def hourly(name: str, catch_up: str = "all", cron: str = "0 * * * *") -> dict:
    return {"name": name, "task": "kpi.compute", "cron": cron, "catch_up": catch_up}


async def configure(js, tenant: str, zone: str, schedules: list[dict]) -> ConfigStore:
    store = ConfigStore(js)
    await store.create_tenant(tenant, display_name=tenant, timezone=zone, author="test")
    await store.put(tenant, "schedules", {"schedules": schedules}, author="test")
    return store


async def requests(nc, tenant: str = "*") -> list[TaskRequested]:
    """Every ``task.requested`` stored for ``tenant`` (all messages, duplicates too)."""
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        f"tagus.task.{tenant}.>", stream="TASKS",
        config=js_api.ConsumerConfig(ack_policy=js_api.AckPolicy.NONE, inactive_threshold=30))
    out = []
    try:
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=0.5)
            except TimeoutError:  # nats-py raises the builtin one here
                break
            out += [decode("task", m.data) for m in msgs]
            if msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return [e for e in out if isinstance(e, TaskRequested)]


def slots_of(reqs: list[TaskRequested], schedule: str) -> list[datetime]:
    return sorted(r.slot for r in reqs if r.schedule == schedule)


async def short_dedup_window(js) -> None:
    """Cut TASKS' duplicate window to the server's minimum, 100 ms (this test's stream)."""
    config = (await js.stream_info("TASKS")).config
    config.duplicate_window = 0.1
    await js.update_stream(config)


@contextlib.asynccontextmanager
async def scheduler(nc, clock, replica: str = "r1", **options):
    opts = SchedulerOptions(**{"max_sleep_s": 0.05, "claim_ahead_s": 0.05, "lease_s": 2.0,
                               **options})
    s = Scheduler(nc.jetstream(), clock=clock, options=opts, replica=replica)
    stop = asyncio.Event()
    task = asyncio.create_task(s.run(stop))
    ready = asyncio.create_task(s.ready.wait())
    await asyncio.wait({task, ready}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()  # raises what stopped it
    assert s.ready.is_set(), "scheduler not ready within 30 s"
    try:
        yield s
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


# ---------------------------------------------------------------- DST days


def local_day(zone: str, y: int, m: int, d: int) -> tuple[datetime, datetime]:
    tz = ZoneInfo(zone)
    return (datetime(y, m, d, tzinfo=tz).astimezone(UTC),
            (datetime(y, m, d, tzinfo=tz) + timedelta(days=1)).astimezone(UTC))


@pytest.mark.parametrize("zone, day, hours", [("Europe/Rome", (2025, 3, 30), 23),
                                              ("Europe/Madrid", (2025, 10, 26), 25)])
async def test_dst_days_daily_0230_once_hourly_23_and_25(nc, zone, day, hours):
    js = nc.jetstream()
    tenant = _tenant("dst")
    await configure(js, tenant, zone, [hourly("hourly"),
                                       hourly("nightly", cron="30 2 * * *")])
    first, end = local_day(zone, *day)
    clock = FastClock(first - timedelta(hours=3), speed=36000)  # a day in 2.4 s
    async with scheduler(nc, clock):
        async def through_the_day():
            if clock.now() < end + timedelta(minutes=30):
                return False
            return len([r for r in await requests(nc, tenant) if first <= r.slot < end]) \
                >= hours + 1
        await eventually(through_the_day, timeout_s=30, interval_s=0.2,
                         what="the local day scheduled")
    reqs = [r for r in await requests(nc, tenant) if first <= r.slot < end]
    nightly, every_hour = slots_of(reqs, "nightly"), slots_of(reqs, "hourly")
    assert len(every_hour) == len(set(every_hour)) == hours
    assert all(b - a == timedelta(hours=1) for a, b in zip(every_hour, every_hour[1:]))
    local = [t.astimezone(ZoneInfo(zone)).strftime("%H:%M%z") for t in nightly]
    assert local == (["03:00+0200"] if hours == 23 else ["02:30+0200"])  # once, DST rule
    r = next(r for r in reqs if r.schedule == "nightly")
    assert (r.kind, r.requested_by, r.occurred_at, r.event_id) == (
        "kpi.compute", "scheduler", r.slot, task_id_for(tenant, "nightly", r.slot))
    assert r.config_versions == {"tenant": 1, "schedules": 1}


# ---------------------------------------------------------------- catch-up after downtime


async def test_catch_up_policies_after_a_three_hour_outage(nc):
    js = nc.jetstream()
    tenant, suspended = _tenant("catchup"), _tenant("suspended")
    store = await configure(js, tenant, "Europe/Rome", [
        hourly("every", "all"), hourly("latest", "latest"), hourly("none", "none")])
    await configure(js, suspended, "Europe/Rome", [hourly("every", "all")])
    await store.set_suspended(suspended, True, author="test")
    clock = ManualClock(utc(2025, 6, 1, 9, 0, 30))

    async with scheduler(nc, clock, replica="before") as s:
        await eventually(lambda: len(s.next_due()) == 3, timeout_s=10, what="cursors made")
        clock.set(utc(2025, 6, 1, 10, 0, 0, 500000))
        await eventually(lambda: _count(nc, tenant, 3), timeout_s=10, what="10:00 requested")
    # outage: 11:00, 12:00 and 13:00 pass unseen; meanwhile a schedule is added
    schedules = (await store.document(tenant, "schedules")).model_dump(mode="json")
    schedules["schedules"].append(hourly("added", "all"))
    await store.put(tenant, "schedules", schedules, author="test")
    clock.set(utc(2025, 6, 1, 13, 20))
    async with scheduler(nc, clock, replica="after") as s:
        await eventually(lambda: _count(nc, tenant, 3 + 3 + 1), timeout_s=10,
                         what="catch-up requests")
        await asyncio.sleep(0.3)  # nothing more comes for 'none' or 'added'
        assert s.stats.skipped == 2 + 3  # 'latest' skipped 11 and 12, 'none' all three
        clock.set(utc(2025, 6, 1, 14, 0, 0, 500000))
        await eventually(lambda: _count(nc, tenant, 7 + 4), timeout_s=10, what="14:00")
    reqs = await requests(nc, tenant)
    h = [utc(2025, 6, 1, x) for x in range(10, 15)]
    assert slots_of(reqs, "every") == h  # 10, then 11, 12, 13 caught up, then 14
    assert slots_of(reqs, "latest") == [h[0], h[3], h[4]]
    assert slots_of(reqs, "none") == [h[0], h[4]]
    assert slots_of(reqs, "added") == [h[4]]  # new during the outage: no catch-up
    assert await requests(nc, suspended) == []


async def test_live_configuration_changes_and_suspension(nc):
    js = nc.jetstream()
    tenant = _tenant("live")
    store = await configure(js, tenant, "UTC", [hourly("first", "latest")])
    clock = ManualClock(utc(2025, 6, 1, 9, 30))

    async def put(*names: str) -> None:
        await store.put(tenant, "schedules", {"schedules": [hourly(n, "latest") for n in names]},
                        author="test")

    async with scheduler(nc, clock) as s:
        def next_of(name: str):
            return s.next_due().get(f"{tenant}.{name}")

        await eventually(lambda: next_of("first") == utc(2025, 6, 1, 10), timeout_s=10,
                         what="cursor made")
        clock.set(utc(2025, 6, 1, 10, 0, 30))
        await eventually(lambda: _count(nc, tenant, 1), timeout_s=10, what="10:00")
        await put("first", "second")  # added at 10:00:30: its first slot is 11:00
        await eventually(lambda: next_of("second") == utc(2025, 6, 1, 11), timeout_s=10,
                         what="the added schedule seen")
        clock.set(utc(2025, 6, 1, 11, 0, 0, 500000))
        await eventually(lambda: _count(nc, tenant, 3), timeout_s=10, what="11:00 for both")
        await store.set_suspended(tenant, True, author="test")
        await eventually(lambda: s.next_due() == {}, timeout_s=10, what="suspension seen")
        clock.set(utc(2025, 6, 1, 12, 0, 0, 500000))
        await asyncio.sleep(0.5)  # suspended: nothing at 12:00
        clock.set(utc(2025, 6, 1, 12, 30))
        await put("second")  # 'first' removed
        await store.set_suspended(tenant, False, author="test")  # resumed: from now on
        await eventually(lambda: next_of("second") == utc(2025, 6, 1, 13) and not next_of(
            "first"), timeout_s=10, what="resumption seen")
        clock.set(utc(2025, 6, 1, 13, 0, 0, 500000))
        await eventually(lambda: _count(nc, tenant, 4), timeout_s=10, what="13:00")
        await asyncio.sleep(0.3)
    reqs = await requests(nc, tenant)
    assert slots_of(reqs, "first") == [utc(2025, 6, 1, 10), utc(2025, 6, 1, 11)]
    assert slots_of(reqs, "second") == [utc(2025, 6, 1, 11), utc(2025, 6, 1, 13)]


async def _count(nc, tenant: str, n: int) -> bool:
    return len(await requests(nc, tenant)) >= n


# ---------------------------------------------------------------- crash windows


async def test_stale_claims_are_taken_over_once_even_after_the_dedup_window(nc):
    """A replica died (a) after claiming 10:00 but before requesting it, (b) after
    requesting it but before moving the cursor, longer ago than the duplicate window.
    (c) A live replica holds a fresh claim and finishes it: not taken over."""
    js = nc.jetstream()
    await short_dedup_window(js)
    tenant = _tenant("crash")
    await configure(js, tenant, "UTC", [hourly("lost"), hourly("published"),
                                        hourly("held")])
    nine, ten = utc(2025, 6, 1, 9), utc(2025, 6, 1, 10)
    cursors, slots = await js.key_value(CURSORS_BUCKET), await js.key_value(SLOTS_BUCKET)
    lease_s = 3.0

    async def claimed(name: str, by: str, age_s: float) -> None:
        await create_claim(slots, SlotClaim(
            task_id=task_id_for(tenant, name, ten), tenant=tenant, schedule=name, slot=ten,
            by=by, claimed_at=time.time() - age_s))

    for name in ("lost", "published", "held"):
        await cursors.create(f"{tenant}.{name}",
                             f'{{"through":"{nine.isoformat()}","by":"dead","at":0}}'.encode())
    await claimed("lost", "dead", 60)
    await claimed("published", "dead", 60)
    already = TaskRequested(
        event_id=task_id_for(tenant, "published", ten), tenant=tenant, occurred_at=ten,
        recorded_at=ten, kind="kpi.compute", slot=ten, schedule="published",
        requested_by="scheduler")
    await publish(js, already)
    await asyncio.sleep(0.3)  # the duplicate window has passed
    await claimed("held", "alive", 0)
    held_since = time.time()

    clock = ManualClock(ten + timedelta(seconds=30))
    async with scheduler(nc, clock, lease_s=lease_s) as s:
        await eventually(lambda: s.stats.taken_over == 2 and s.stats.held_elsewhere >= 1,
                         timeout_s=10, what="two takeovers, one claim left to its owner")
        # the live owner of 'held' finishes: requests it and moves the cursor
        await publish(js, TaskRequested(
            event_id=task_id_for(tenant, "held", ten), tenant=tenant, occurred_at=ten,
            recorded_at=ten, kind="kpi.compute", slot=ten, schedule="held"))
        entry = await cursors.get(f"{tenant}.held")
        await cursors.update(f"{tenant}.held", f'{{"through":"{ten.isoformat()}",'
                             f'"by":"alive","at":0}}'.encode(), last=entry.revision)
        await asyncio.sleep(max(0.0, held_since + lease_s + 0.5 - time.time()))
        assert (s.stats.taken_over, s.stats.recovered, s.stats.requested) == (2, 1, 1)
    reqs = await requests(nc, tenant)
    assert Counter((r.schedule, r.slot) for r in reqs) == {
        ("lost", ten): 1, ("published", ten): 1, ("held", ten): 1}
    claim, _ = await read_claim(slots, claim_key(tenant, "lost", ten))
    assert (claim.by, claim.taken_over_from) == ("r1", "dead")
    # without the stream check, a second request would have been stored: the window is gone
    assert not (await publish(js, already)).duplicate


async def test_old_claims_are_purged_and_recent_ones_kept(nc):
    js = nc.jetstream()
    slots = await js.key_value(SLOTS_BUCKET)
    ten = utc(2025, 6, 1, 10)

    async def claim(name: str) -> None:
        await create_claim(slots, SlotClaim(task_id=task_id_for("acme", name, ten),
                                            tenant="acme", schedule=name, slot=ten, by="r",
                                            claimed_at=time.time()))
    await claim("old")
    await asyncio.sleep(1.1)
    cutoff = time.time()
    await claim("recent")
    assert await purge_claims_before(js, cutoff - 5) == 0  # nothing that old
    assert await purge_claims_before(js, cutoff) > 0
    assert await read_claim(slots, claim_key("acme", "old", ten)) is None
    assert (await read_claim(slots, claim_key("acme", "recent", ten)))[0].schedule == "recent"


# ---------------------------------------------------------------- three processes, one killed


def _scheduler_process(settings, data_dir: Path, clock_spec: str, name: str):
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "TAGUS_NATS_URL"}
    env.update(TAGUS_DATA_DIR=str(data_dir), TAGUS_NATS_HOST=settings.nats_host,
               TAGUS_NATS_PORT=str(settings.nats_port), TAGUS_LOG_LEVEL="INFO",
               TAGUS_SCHEDULER_CLOCK=clock_spec, TAGUS_SCHEDULER_LEASE_S="2",
               TAGUS_SCHEDULER_CLAIM_AHEAD_S="0.2", TAGUS_SCHEDULER_MAX_SLEEP_S="0.5")
    if settings.nats_url:
        env["TAGUS_NATS_URL"] = settings.nats_url
    user, password = settings.nats_auth()
    if user:
        env.update(TAGUS_NATS_USER=user, TAGUS_NATS_PASSWORD=password or "")
    log = open(data_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "run", "scheduler"], cwd=REPO,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    proc.log_file = log
    return proc


def _started(data_dir: Path, name: str) -> bool:
    path = data_dir / f"{name}.log"
    return path.exists() and "scheduler started" in path.read_text(errors="replace")


def _tail(data_dir: Path, name: str) -> str:
    path = data_dir / f"{name}.log"
    return "\n".join(path.read_text(errors="replace").splitlines()[-20:]) if path.exists() else ""


async def test_three_scheduler_processes_one_killed_and_restarted_request_each_slot_once(
        nc, fast_settings, tmp_path):
    js = nc.jetstream()
    await short_dedup_window(js)
    tenants = [_tenant("replicas") for _ in range(3)]
    for t in tenants:
        await configure(js, t, "Europe/Rome", [
            hourly("a", "all", cron="* * * * *"), hourly("b", "all", cron="* * * * *")])
    # one clock for all: a minute per real second, from 5 s from now
    start, t0 = utc(2025, 6, 1, 8), time.time() + 5
    spec = f"fast,start={start.isoformat()},speed=60,t0={t0}"
    procs = {n: _scheduler_process(fast_settings, tmp_path, spec, n) for n in ("r0", "r1", "r2")}
    try:
        await eventually(lambda: all(_started(tmp_path, n) for n in procs), timeout_s=60,
                         interval_s=0.3, what="three scheduler processes started")
        await eventually(lambda: _count(nc, "*", 12), timeout_s=20, interval_s=0.3,
                         what="requests flowing from the three processes")
        await asyncio.sleep(2)
        procs["r0"].kill()  # SIGKILL: whatever it claimed stays claimed
        procs["r0"].wait(10)
        await asyncio.sleep(2)
        procs["r0b"] = _scheduler_process(fast_settings, tmp_path, spec, "r0b")
        await eventually(lambda: _started(tmp_path, "r0b"), timeout_s=60, interval_s=0.3,
                         what="the restarted process up")
        await asyncio.sleep(3)
        for n in ("r1", "r2", "r0b"):
            assert procs[n].poll() is None, f"{n} exited:\n{_tail(tmp_path, n)}"
            procs[n].send_signal(signal.SIGTERM)
        for n in ("r1", "r2", "r0b"):
            assert await asyncio.to_thread(procs[n].wait, 20) == 0, _tail(tmp_path, n)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
            p.log_file.close()
    reqs = await requests(nc, "*")
    per_slot = Counter((r.tenant, r.schedule, r.slot) for r in reqs)
    assert per_slot and max(per_slot.values()) == 1, [k for k, n in per_slot.items() if n > 1]
    for t in tenants:
        for name in ("a", "b"):
            slots = slots_of([r for r in reqs if r.tenant == t], name)
            assert len(slots) >= 10, (t, name, slots)
            gaps = [(a, b) for a, b in zip(slots, slots[1:]) if b - a != timedelta(minutes=1)]
            assert gaps == [], (t, name, gaps)  # none missed across the kill
    stopped = "\n".join(_tail(tmp_path, n) for n in ("r1", "r2", "r0b"))
    assert "scheduler: requested" in stopped
