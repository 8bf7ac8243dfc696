"""The scheduler: requests every tenant's scheduled tasks, each slot exactly once.

It follows the configuration view (KV ``tagus-config``: each tenant's ``schedules``,
its time zone and suspension, and the versions of the kinds a task loads, pinned on
each request) and the shared cursors (``tagus-task-cursors``, see ``claims``).  Each
active schedule waits in a heap at its next slot; the loop sleeps until the earliest one
(or a change of configuration), so an idle scheduler costs nothing however many
schedules there are.

A slot is claimed ``claim_ahead_s`` before it is due (KV create-if-absent of
``<tenant>.<schedule>.<slot>``: one replica wins), its ``task.requested`` published at
the slot by the winner (event id derived from tenant, schedule and slot, so a repeat
within the stream's duplicate window is dropped; the requests of one instant go out
back to back, pipelined), then the schedule's cursor moves past it.  Crash windows:

- after the claim, before the publish: nobody moves the cursor; once the claim is older
  than ``lease_s`` another replica (or the restarted one) takes it over and publishes;
- after the publish, before the cursor moves: the taker looks for the task id in the
  TASKS stream (from the time of the stale claim) and publishes only if it is absent,
  so this holds after any downtime, not only within the duplicate window;
- a replica paused past its lease: it publishes only while its claim is younger than
  the lease minus the publish timeout, so a taker never races a live owner; a publish
  still in flight when its owner gave up lands within seconds of the taker's, inside
  the duplicate window.  (A replica frozen between that check and the publish itself
  for longer than the duplicate window could still duplicate; nothing short of fencing
  in the stream prevents that.)

After downtime each schedule's ``catch_up`` picks among the slots missed since its
cursor (``slots.choose``); a schedule seen for the first time starts from then.
A suspended tenant, or a disabled schedule, gets nothing; when it becomes active again
(or its cron or the tenant's time zone changes) it starts from that moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import heapq
import itertools
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
import nats.errors
import structlog
from nats.js.errors import BucketNotFoundError, NotFoundError

from bus.publish import headers_for
from bus.storage import CONFIG_BUCKET
from bus.subjects import stream_name, subject_for
from contracts.base import derive_id
from contracts.config import ScheduleEntry, parse_document
from contracts.errors import SetupError, TenantConfigError
from contracts.registry import decode, encode
from contracts.tasks import PINNED_KINDS, TaskRequested
from producers.scheduler import claims
from producers.scheduler.clock import CallableClock, Clock, SystemClock
from producers.scheduler.slots import choose, next_slot, slots_between

log = structlog.get_logger("tagus.scheduler")

_KIND_RE = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")  # becomes a subject token
_CLOCK_SKEW_S = 60.0  # tolerated between this host and the NATS server, for stream reads
_TASKS = stream_name("task")
# configuration kinds whose versions a request pins (as on-demand requests do,
# contracts.tasks.PINNED_KINDS); schedules are read for themselves
_PINNED = PINNED_KINDS


def task_id_for(tenant: str, schedule: str, slot: datetime) -> str:
    """The id of the request for one slot: the same on every replica and every restart."""
    return derive_id("task.requested", tenant, schedule, slot.astimezone(UTC).isoformat())


@dataclass(frozen=True)
class SchedulerOptions:
    """``lease_s``, ``claim_ahead_s``, ``max_sleep_s``, ``publish_timeout_s`` and
    ``claim_retention_s`` are real seconds; ``late_after_s`` and ``horizon_s`` are
    seconds of the scheduler's clock."""

    lease_s: float = 30.0  # a claim older than this, its cursor not past it: stale
    claim_ahead_s: float = 2.0  # claim this long before the slot
    late_after_s: float = 60.0  # a due slot older than this was missed (catch_up none)
    horizon_s: float = 7 * 86400.0  # catch_up all goes back at most this far
    max_sleep_s: float = 5.0  # wake at least this often (a clock that jumps is noticed)
    publish_timeout_s: float = 5.0
    concurrency: int = 256  # NATS requests in flight
    claim_retention_s: float = 14 * 86400.0  # claims recorded longer ago are purged
    purge_every_s: float = 3600.0
    tenants: str = "*"  # only tenants whose id matches this glob (benches; sharding)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> SchedulerOptions:
        """``TAGUS_SCHEDULER_LEASE_S``, ``_CLAIM_AHEAD_S``, ``_LATE_AFTER_S``,
        ``_MAX_SLEEP_S`` and ``_TENANTS`` (a glob) override the defaults."""
        names = {"lease_s": "LEASE_S", "claim_ahead_s": "CLAIM_AHEAD_S",
                 "late_after_s": "LATE_AFTER_S", "max_sleep_s": "MAX_SLEEP_S"}
        values = {}
        for attr, suffix in names.items():
            raw = environ.get(f"TAGUS_SCHEDULER_{suffix}")
            if raw:
                try:
                    values[attr] = float(raw)
                except ValueError:
                    raise SetupError(f"TAGUS_SCHEDULER_{suffix}: expected seconds, got "
                                     f"{raw!r}") from None
        if environ.get("TAGUS_SCHEDULER_TENANTS"):
            values["tenants"] = environ["TAGUS_SCHEDULER_TENANTS"]
        return cls(**values)


@dataclass
class SchedulerStats:
    requested: int = 0  # task.requested published by this replica
    already: int = 0  # found handled by another replica
    recovered: int = 0  # taken over and found in the stream: not published again
    taken_over: int = 0  # stale claims this replica took over
    held_elsewhere: int = 0  # slots another live replica held when this one tried
    skipped: int = 0  # due slots the catch-up policy skipped
    ticks: int = 0  # wake-ups that found slots due
    failures: int = 0  # schedule passes that failed (NATS down...): retried
    cpu_s: float = 0.0  # process CPU time from each tick to its last request, summed


@dataclass
class _Tenant:
    zone: str = "UTC"
    suspended: bool = False
    entries: tuple[ScheduleEntry, ...] = ()
    versions: dict[str, int] = field(default_factory=dict)
    active: set[str] = field(default_factory=set)  # names of its schedules running here


@dataclass(eq=False)
class _Schedule:
    key: str  # <tenant>.<schedule>
    tenant: str
    entry: ScheduleEntry
    zone: str
    gen: int = 0  # bumped on every reschedule: older heap entries are dropped
    busy: bool = False
    fresh: bool = False  # start the cursor from now (new, re-activated, re-timed)


class _Tick:
    """One wake-up that found work: its summary is logged when its last job ends."""

    def __init__(self, number: int, stats: SchedulerStats) -> None:
        self.number, self.stats = number, stats
        self.cpu0, self.jobs = time.process_time(), 0
        self.requested = self.late_max_s = 0.0

    def finished(self) -> None:
        self.jobs -= 1
        if self.jobs == 0:
            cpu = time.process_time() - self.cpu0
            self.stats.cpu_s += cpu
            (log.info if self.requested else log.debug)(
                "tick", tick=self.number, requested=int(self.requested),
                late_max_s=round(self.late_max_s, 3), cpu_ms=round(cpu * 1000, 1))


class _Outgoing:
    """One request waiting for its instant; ``outcome`` settles when it was sent."""

    __slots__ = ("schedule", "slot", "task_id", "claimed", "tick", "outcome")

    def __init__(self, schedule: _Schedule, slot: datetime, task_id: str, claimed: float,
                 tick: _Tick) -> None:
        self.schedule, self.slot, self.task_id = schedule, slot, task_id
        self.claimed, self.tick = claimed, tick  # monotonic time of the claim
        self.outcome: asyncio.Future = asyncio.get_running_loop().create_future()

    def resolve(self, value: tuple[str, float | None]) -> None:
        if not self.outcome.done():
            self.outcome.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self.outcome.done():
            self.outcome.set_exception(error)


class Scheduler:
    """``await Scheduler(js).run(stop)`` until ``stop`` is set.

    ``clock``: a ``Clock`` or a bare ``now()`` callable (default: the system clock).
    ``replica``: this process's name on its claims (default host-pid-random).
    """

    def __init__(self, js, *, clock: Clock | Callable[[], datetime] | None = None,
                 options: SchedulerOptions | None = None, replica: str | None = None) -> None:
        self.js = js
        if clock is None:
            clock = SystemClock()
        elif not hasattr(clock, "seconds_until"):
            clock = CallableClock(clock)
        self.clock: Clock = clock
        self.opts = options or SchedulerOptions()
        self.replica = replica or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
        self.stats = SchedulerStats()
        self.ready = asyncio.Event()  # set once the views are loaded (tests wait on it)
        self._tenants: dict[str, _Tenant] = {}
        self._schedules: dict[str, _Schedule] = {}
        self._heap: list[tuple[datetime, int, str, int]] = []  # (due, n, key, gen)
        self._rechecks: list[tuple[float, int, str, int]] = []  # (real epoch, n, key, gen)
        self._n = itertools.count()
        self._jobs: set[asyncio.Task] = set()
        self._live = False

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> SchedulerStats:
        self._stop, self._stopped_at = stop, None
        self._wake = asyncio.Event()
        self._sem = asyncio.Semaphore(self.opts.concurrency)
        self._alarms: dict[datetime, asyncio.Event] = {}
        self._batches: dict[datetime, list[_Outgoing]] = {}
        self._publishing = 0  # requests being published: cursor moves wait for them
        self._quiet = asyncio.Event()
        self._quiet.set()
        try:
            self._slots = await self.js.key_value(claims.SLOTS_BUCKET)
            cursors_kv = await self.js.key_value(claims.CURSORS_BUCKET)
            config_kv = await self.js.key_value(CONFIG_BUCKET)
        except (BucketNotFoundError, NotFoundError) as e:
            raise SetupError(f"the scheduler's KV buckets are missing ({e}): run `tagus "
                             f"topology` (or `tagus stack up`) first") from None
        self.cursors = claims.Cursors(cursors_kv, self.replica)
        cursor_watch = await cursors_kv.watchall()
        await self._initial(cursor_watch, self._on_cursor)
        config_watch = await config_kv.watchall()
        await self._initial(config_watch, self._on_config)
        for s in self._schedules.values():
            self._reschedule(s)
        self._live = True
        background = [
            asyncio.create_task(self._follow(claims.CURSORS_BUCKET, cursor_watch,
                                             self._on_cursor)),
            asyncio.create_task(self._follow(CONFIG_BUCKET, config_watch, self._on_config)),
            asyncio.create_task(self._purge(stop)),
            asyncio.create_task(self._relay(stop)),
        ]
        log.info("scheduler started", replica=self.replica, tenants=len(self._tenants),
                 schedules=len(self._schedules))
        self.ready.set()
        try:
            await self._loop(stop)
        finally:
            if self._jobs:  # slots claimed ahead: requested (or left to the lease)
                await asyncio.wait(self._jobs, timeout=self.opts.claim_ahead_s
                                   + 2 * self.opts.publish_timeout_s + 2)
            for task in background:
                task.cancel()
            await asyncio.wait(background, timeout=5)
        log.info("scheduler stopped", replica=self.replica, **vars(self.stats))
        return self.stats

    async def _relay(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopped_at = time.monotonic()
        self._wake.set()

    async def _loop(self, stop: asyncio.Event) -> None:
        ahead = self.opts.claim_ahead_s
        while not stop.is_set():
            self._wake.clear()
            tick = None
            while self._heap:
                due, _, key, gen = self._heap[0]
                s = self._schedules.get(key)
                if s is None or s.gen != gen or s.busy:
                    heapq.heappop(self._heap)
                    continue
                if self.clock.seconds_until(due) > ahead:
                    break
                heapq.heappop(self._heap)
                tick = tick or self._new_tick()
                self._spawn(s, tick)
            now_real = time.time()
            while self._rechecks and self._rechecks[0][0] <= now_real:
                _, _, key, gen = heapq.heappop(self._rechecks)
                s = self._schedules.get(key)
                if s is not None and s.gen == gen and not s.busy:
                    tick = tick or self._new_tick()
                    self._spawn(s, tick)
            wait = self.opts.max_sleep_s
            if self._heap:
                wait = min(wait, self.clock.seconds_until(self._heap[0][0]) - ahead)
            if self._rechecks:
                wait = min(wait, self._rechecks[0][0] - now_real)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            else:
                await asyncio.sleep(0)

    def _new_tick(self) -> _Tick:
        self.stats.ticks += 1
        return _Tick(self.stats.ticks, self.stats)

    def _spawn(self, s: _Schedule, tick: _Tick) -> None:
        s.busy = True
        tick.jobs += 1
        task = asyncio.create_task(self._job(s, tick))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    def _reschedule(self, s: _Schedule) -> None:
        """Put ``s`` in the heap at its next slot after its cursor (now, if it has none
        yet or must start afresh)."""
        s.gen += 1
        through = self.cursors.through(s.key)
        if s.fresh or through is None:
            due = self.clock.now()
        else:
            due = next_slot(s.entry.cron, s.zone, through)
        heapq.heappush(self._heap, (due, next(self._n), s.key, s.gen))
        self._wake.set()

    # ------------------------------------------------------------ one schedule

    async def _job(self, s: _Schedule, tick: _Tick) -> None:
        retry_at = None
        try:
            retry_at = await self._pass(s, tick)
        except (nats.errors.Error, TimeoutError, OSError) as e:
            self.stats.failures += 1
            log.warning("schedule pass failed; retrying", schedule=s.key, error=repr(e))
            retry_at = time.time() + 1.0
        except Exception as e:  # noqa: BLE001 - a bug must not stop every other schedule
            self.stats.failures += 1
            log.exception("schedule pass failed unexpectedly; retrying in 10 s",
                          schedule=s.key, error=repr(e))
            retry_at = time.time() + 10.0
        finally:
            s.busy = False
            tick.finished()
            if self._schedules.get(s.key) is s:
                if retry_at is None:
                    self._reschedule(s)
                else:
                    s.gen += 1
                    heapq.heappush(self._rechecks, (retry_at, next(self._n), s.key, s.gen))
                    self._wake.set()

    async def _pass(self, s: _Schedule, tick: _Tick) -> float | None:
        """Request what is due for ``s`` (and claim its next slot when it is near).
        Returns when to look again (real epoch) if a slot is held elsewhere, else None."""
        now = self.clock.now()
        through = self.cursors.through(s.key)
        if s.fresh or through is None:
            # from now on (to the second, so that schedules started together share the
            # cached slot arithmetic; cron slots fall on whole minutes: no slot is lost)
            start = now.replace(microsecond=0)
            await self._advance(s, start)
            s.fresh = False
            through = self.cursors.through(s.key) or start
        entry = s.entry
        first = next_slot(entry.cron, s.zone, through)  # cached: shared by many schedules
        due = slots_between(entry.cron, s.zone, through, now) if first <= now else []
        plan = choose(entry.catch_up, due, now, late_after_s=self.opts.late_after_s,
                      horizon=timedelta(seconds=self.opts.horizon_s))
        upcoming = next_slot(entry.cron, s.zone, due[-1]) if due else first
        if self.clock.seconds_until(upcoming) <= self.opts.claim_ahead_s:
            plan.append(upcoming)
        if not _KIND_RE.match(entry.task):
            log.error("schedule names a task kind that cannot be a subject token; skipped",
                      schedule=s.key, task=entry.task)
            plan = []
        retry_at = cap = None
        for i, slot in enumerate(plan):
            outcome, retry_at = await self._request(s, slot, tick)
            if outcome not in ("requested", "already"):
                cap = slot
                break
            if i < len(plan) - 1:  # a long catch-up: a crash midway does not redo it
                await self._advance(s, slot)
        handled = [x for x in due + plan if cap is None or x < cap]
        planned = set(plan)
        self.stats.skipped += sum(1 for x in due if x not in planned and (cap is None or x < cap))
        if handled and max(handled) > (self.cursors.through(s.key) or through):
            with contextlib.suppress(TimeoutError):  # the requests of the instant go first
                await asyncio.wait_for(self._quiet.wait(), 2.0)
            await self._advance(s, max(handled))
        return retry_at

    async def _advance(self, s: _Schedule, through: datetime) -> None:
        async with self._sem:
            await self.cursors.advance(s.key, through, time.time())

    async def _request(self, s: _Schedule, slot: datetime,
                       tick: _Tick) -> tuple[str, float | None]:
        """Claim ``slot`` and publish its request.  Returns (outcome, retry_at):
        ``requested``, ``already`` (handled elsewhere, or found in the stream),
        ``held`` (another live replica holds it: look again at ``retry_at``),
        ``abandoned`` (the schedule went away before the slot)."""
        entry = s.entry
        task_id = task_id_for(s.tenant, entry.name, slot)
        mine = claims.SlotClaim(task_id=task_id, tenant=s.tenant, schedule=entry.name,
                                slot=slot, by=self.replica, claimed_at=time.time())
        async with self._sem:
            revision = await claims.create_claim(self._slots, mine)
        stale_since = None
        if revision is None:
            through = self.cursors.through(s.key)
            if through is not None and through >= slot:
                self.stats.already += 1
                return "already", None
            key = claims.claim_key(s.tenant, entry.name, slot)
            async with self._sem:
                held = await claims.read_claim(self._slots, key)
            if held is None:  # purged meanwhile: try again shortly
                return "held", time.time() + 0.5
            theirs, their_revision = held
            if time.time() - theirs.claimed_at < self.opts.lease_s:
                self.stats.held_elsewhere += 1
                return "held", theirs.claimed_at + self.opts.lease_s + 0.1
            mine = msgspec.structs.replace(mine, claimed_at=time.time(),
                                           taken_over_from=theirs.by)
            async with self._sem:
                revision = await claims.take_over(self._slots, mine, their_revision)
            if revision is None:
                return "held", time.time() + 0.5
            stale_since = datetime.fromtimestamp(theirs.claimed_at - _CLOCK_SKEW_S, UTC)
            self.stats.taken_over += 1
            log.info("stale claim taken over", schedule=s.key, slot=slot.isoformat(),
                     from_replica=theirs.by, age_s=round(time.time() - theirs.claimed_at, 1))
        item = _Outgoing(s, slot, task_id, time.monotonic(), tick)
        if stale_since is not None:  # recovering a stale claim: alone, after a look
            if not await self._until(slot) or self._schedules.get(s.key) is not s:
                return "abandoned", None
            event = self._event(item)
            async with self._sem:
                found = await claims.already_published(
                    self.js, _TASKS, subject_for(event), task_id, stale_since)
            if found:
                self.stats.recovered += 1
                log.info("stale claim was requested already", schedule=s.key,
                         slot=slot.isoformat(), task_id=task_id)
                return "already", None
            await self._send([item])
        else:
            self._outbox(slot).append(item)
        return await item.outcome

    def _outbox(self, slot: datetime) -> list[_Outgoing]:
        """The requests of one instant, sent together at it by one coroutine."""
        batch = self._batches.get(slot)
        if batch is None:
            batch = self._batches[slot] = []
            task = asyncio.create_task(self._send_at(slot))
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)
        return batch

    async def _send_at(self, slot: datetime) -> None:
        on_time = await self._until(slot)
        batch = self._batches.pop(slot, [])
        if not on_time:  # stopping took too long: the leases decide
            for item in batch:
                item.resolve(("abandoned", None))
            return
        await self._send(batch)

    def _event(self, item: _Outgoing) -> TaskRequested:
        s, entry = item.schedule, item.schedule.entry
        tenant = self._tenants.get(s.tenant, _Tenant())
        return TaskRequested(
            event_id=item.task_id, tenant=s.tenant, occurred_at=item.slot,
            recorded_at=self.clock.now(), correlation_id=item.task_id, kind=entry.task,
            params=dict(entry.params), slot=item.slot, schedule=entry.name,
            requested_by="scheduler", config_versions=dict(tenant.versions),
            time_limit_s=entry.time_limit_s)

    async def _send(self, batch: list[_Outgoing]) -> None:
        """Publish ``batch`` back to back (pipelined: no request per message, a third of
        the client CPU of ``bus.publish``, same headers), then settle each item."""
        timeout_s = self._publish_timeout_s()
        self._publishing += 1
        self._quiet.clear()
        sent: dict[asyncio.Future, tuple[_Outgoing, TaskRequested]] = {}
        try:
            for i, item in enumerate(batch):
                if i % 64 == 63:
                    await asyncio.sleep(0)  # let the socket writer and the acks run
                if self._schedules.get(item.schedule.key) is not item.schedule:
                    item.resolve(("abandoned", None))  # the schedule went away
                    continue
                if time.monotonic() - item.claimed > self.opts.lease_s - timeout_s:
                    item.resolve(("held", time.time()))  # lease nearly spent: takeover path
                    continue
                event = self._event(item)
                try:
                    ack = await self.js.publish_async(subject_for(event), encode(event),
                                                      headers=headers_for(event))
                except (nats.errors.Error, OSError) as e:
                    item.fail(e)
                    continue
                sent[ack] = (item, event)
            if sent:
                await asyncio.wait(sent, timeout=timeout_s)
            for ack, (item, event) in sent.items():
                if not ack.done():
                    ack.cancel()
                    item.fail(TimeoutError(f"no ack for {event.event_id} in {timeout_s} s"))
                elif ack.exception() is not None:
                    item.fail(ack.exception())
                else:
                    self.stats.requested += 1
                    item.tick.requested += 1
                    late = (event.recorded_at - item.slot).total_seconds()
                    item.tick.late_max_s = max(item.tick.late_max_s, late)
                    item.resolve(("requested", None))
        finally:
            for item in batch:
                item.fail(RuntimeError("not sent"))  # no-op for the settled ones
            self._publishing -= 1
            if self._publishing == 0:
                self._quiet.set()

    def _publish_timeout_s(self) -> float:
        """A publish must end within the claim's lease: at most half of it."""
        return min(self.opts.publish_timeout_s, self.opts.lease_s / 2)

    async def _until(self, t: datetime) -> bool:
        """Sleep until the clock shows ``t``; False if stopping took too long for it."""
        while (wait := self.clock.seconds_until(t)) > 0:
            if self._stopped_at is not None and (
                    time.monotonic() - self._stopped_at > self.opts.claim_ahead_s + 1):
                return False
            if wait > self.opts.max_sleep_s:
                await asyncio.sleep(self.opts.max_sleep_s)
                continue
            with contextlib.suppress(TimeoutError):  # a clock set forward meanwhile
                await asyncio.wait_for(self._alarm(t).wait(), wait + self.opts.max_sleep_s)
        return True

    def _alarm(self, t: datetime) -> asyncio.Event:
        """One timer per instant: the requests of a slot wake together (one loop pass)."""
        alarm = self._alarms.get(t)
        if alarm is None:
            alarm = self._alarms[t] = asyncio.Event()

            def ring() -> None:
                self._alarms.pop(t, None)
                alarm.set()
            asyncio.get_running_loop().call_later(self.clock.seconds_until(t), ring)
        return alarm

    # ------------------------------------------------------------ views

    async def _initial(self, watcher, handler) -> None:
        while True:
            entry = await watcher.updates(timeout=60)
            if entry is None:
                return
            await handler(entry)

    async def _follow(self, bucket: str, watcher, handler) -> None:
        while True:
            try:
                entry = await watcher.updates(timeout=60)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(watcher.stop(), 2)
                raise
            except Exception as e:  # noqa: BLE001 - a broken watch is re-opened, not fatal
                log.warning("watch failed; re-opening", bucket=bucket, error=repr(e))
                await asyncio.sleep(1)
                with contextlib.suppress(Exception):
                    watcher = await (await self.js.key_value(bucket)).watchall()
                continue
            if entry is not None:
                try:
                    await handler(entry)
                except (nats.errors.Error, TimeoutError) as e:
                    log.warning("applying a watched change failed", bucket=bucket,
                                key=entry.key, error=repr(e))

    async def _on_cursor(self, entry) -> None:
        if entry.operation is not None:  # deleted or purged: keep what we know
            return
        if self.cursors.apply(entry.key, entry.value, entry.revision) and self._live:
            s = self._schedules.get(entry.key)
            if s is not None and not s.busy and not s.fresh:
                self._reschedule(s)  # another replica moved it: next slot after that

    async def _on_config(self, entry) -> None:
        tenant, _, kind = entry.key.partition(".")
        if kind != "schedules" and kind not in _PINNED:
            return
        if not fnmatch.fnmatchcase(tenant, self.opts.tenants):
            return
        t = self._tenants.setdefault(tenant, _Tenant())
        if entry.operation is not None or not entry.value:
            if kind == "schedules":
                t.entries = ()
            elif kind == "tenant":
                t.suspended = True  # a tenant removed from the view gets nothing
            t.versions.pop(kind, None)
        else:
            try:
                event = decode("config", entry.value)
                if event.version <= t.versions.get(kind, 0):
                    return  # a re-opened watch repeating what we have
                t.versions[kind] = event.version
                if kind == "tenant":
                    doc = parse_document("tenant", event.document)
                    t.zone, t.suspended = doc.timezone, doc.suspended
                elif kind == "schedules":
                    t.entries = tuple(parse_document("schedules", event.document).schedules)
                else:
                    return
            except (TenantConfigError, ValueError) as e:
                log.error("configuration unreadable; keeping the previous one",
                          tenant=tenant, kind=kind, error=str(e))
                return
        if kind in ("tenant", "schedules"):
            self._refresh(tenant)

    def _refresh(self, tenant: str) -> None:
        """Bring ``tenant``'s active schedules in line with its configuration."""
        t = self._tenants[tenant]
        wanted = {} if t.suspended else {e.name: e for e in t.entries if e.enabled}
        for name in t.active - wanted.keys():
            self._schedules.pop(claims.cursor_key(tenant, name), None)
        t.active = set(wanted)
        for name, e in wanted.items():
            key = claims.cursor_key(tenant, name)
            s = self._schedules.get(key)
            if s is None:
                s = self._schedules[key] = _Schedule(key, tenant, e, t.zone)
                s.fresh = self._live  # at start-up, a known cursor means downtime
            else:
                s.fresh = s.fresh or s.entry.cron != e.cron or s.zone != t.zone
                s.entry, s.zone = e, t.zone
            if self._live and not s.busy:
                self._reschedule(s)

    # ------------------------------------------------------------ housekeeping

    async def _purge(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.opts.purge_every_s)
                return
            try:
                await claims.purge_claims_before(
                    self.js, time.time() - self.opts.claim_retention_s)
            except (nats.errors.Error, TimeoutError) as e:
                log.warning("purging old claims failed", error=repr(e))

    # ------------------------------------------------------------ introspection

    def next_due(self) -> dict[str, datetime]:
        """Each active schedule's next slot (for ``tagus status`` and tests)."""
        out = {}
        for key, s in self._schedules.items():
            through = self.cursors.through(key)
            if through is not None:
                out[key] = next_slot(s.entry.cron, s.zone, through)
        return out
