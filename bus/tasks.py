"""The runner of task workers: fair, bounded in time, cancellable, exactly once per task.

A ``TaskWorker`` (``bus/components.py``) names pure handlers per task kind.  The
``TaskRunner`` pulls ``task.requested`` of those kinds from its durable consumer and:

- **fairness**: runs at most ``concurrency`` tasks and ``per_tenant`` of one tenant at
  once; requests it cannot start yet are held (a few) or deferred (``nak`` with a short
  delay) so the server hands it other tenants' requests meanwhile, and among the held
  ones the tenant that started least recently goes first: one tenant's burst of fifty
  requests delays another tenant's task by at most one task's duration;
- **isolation**: each task runs in a child process (``forkserver``), so a time limit
  ("timed out") or a cancel can stop it, and two tasks use two cores;
- **exactly once**: the task's state lives in KV ``tagus-task-state`` (``<tenant>.<task
  id>``: attempts, state); a redelivered request whose task finished is only acked; a
  worker killed mid-task is redelivered and the task runs again with the same output ids
  (derived from the request), which are not published twice (``bus.outputs.OutputLog``);
- **outcomes**: ``task.started`` per attempt, the handler's outputs and progress, then
  ``task.completed`` (output ids), ``task.failed`` (reason; ``retryable``) or
  ``task.cancelled``.  Bad configuration or parameters (``TenantConfigError``,
  ``ContractError``) fail at once; anything else is retried with backoff up to
  ``max_attempts``; past its time limit a task fails "timed out".

The handler sees ``ctx.now`` = the request's ``recorded_at``: what it produces depends
only on its inputs, so a replay reproduces it byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

from bus import metrics, resources
from bus.components import Blob, Context, TaskWorker
from bus.outputs import OutputLog
from bus.publish import publish
from bus.pull import Puller
from bus.runner import tenant_mismatch
from bus.storage import TASK_STATE_BUCKET
from bus.topology import ConsumerSpec
from contracts.base import Event, derive_id, utc_now
from contracts.errors import ContractError, TenantConfigError
from contracts.registry import decode
from contracts.tasks import (
    TaskCancelled, TaskCancelRequested, TaskCompleted, TaskFailed, TaskProgressed,
    TaskRequested, TaskStarted,
)

log = structlog.get_logger("tagus.tasks")

STATE_BUCKET = TASK_STATE_BUCKET
FINISHED = ("completed", "failed", "cancelled")
DEFER_S = 2.0  # a request that cannot start yet comes back after this
HOLD_MAX = 64  # requests held in memory (heartbeated) waiting for a free slot
HOLD_PER_TENANT = 4  # of one tenant; the rest are deferred, so others get through
_PERMANENT = (TenantConfigError, ContractError)


class TaskState(msgspec.Struct, kw_only=True):
    state: str = "queued"  # queued, running, completed, failed, cancelled, cancel_requested
    attempts: int = 0
    worker: str = ""
    updated_ns: int = 0
    cancel_by: str = ""
    cancel_reason: str = ""


def state_key(tenant: str, task_id: str) -> str:
    return f"{tenant}.{task_id}"


class TaskStates:
    """Compare-and-set updates of a task's state in KV."""

    def __init__(self, js) -> None:
        self.js = js
        self._kv = None

    async def kv(self):
        if self._kv is None:
            self._kv = await self.js.key_value(STATE_BUCKET)
        return self._kv

    async def get(self, tenant: str, task_id: str) -> tuple[TaskState, int]:
        kv = await self.kv()
        try:
            entry = await kv.get(state_key(tenant, task_id))
        except KeyNotFoundError:
            return TaskState(), 0
        return msgspec.msgpack.decode(entry.value, type=TaskState), entry.revision

    async def change(self, tenant: str, task_id: str, update) -> TaskState:
        """Apply ``update(state) -> state | None`` atomically (retried on a race)."""
        kv = await self.kv()
        key = state_key(tenant, task_id)
        for _ in range(20):
            current, revision = await self.get(tenant, task_id)
            new = update(current)
            if new is None:
                return current
            new.updated_ns = time.time_ns()
            value = msgspec.msgpack.encode(new)
            try:
                if revision:
                    await kv.update(key, value, last=revision)
                else:
                    await kv.create(key, value)
                return new
            except KeyWrongLastSequenceError:
                continue  # somebody else changed it: read again
        raise RuntimeError(f"task {task_id}: state kept changing under us")


async def request_cancel(js, tenant: str, task_id: str, kind: str, *, by: str,
                         reason: str = "") -> str:
    """Ask for a task to be cancelled; returns its state as it was (a finished task stays
    as it is).  The worker holding it, or the one that picks it up, cancels it."""
    states = TaskStates(js)

    def mark(s: TaskState) -> TaskState | None:
        if s.state in FINISHED or s.state == "cancel_requested":
            return None
        return TaskState(state="cancel_requested", attempts=s.attempts, worker=s.worker,
                         cancel_by=by, cancel_reason=reason)

    before, _ = await states.get(tenant, task_id)
    await states.change(tenant, task_id, mark)
    if before.state not in FINISHED:
        now = utc_now()
        await publish(js, TaskCancelRequested(
            event_id=derive_id(task_id, "cancel", by, reason), tenant=tenant, occurred_at=now,
            recorded_at=now, causation_id=task_id, correlation_id=task_id, task_id=task_id,
            kind=kind, by=by, reason=reason))
    return before.state


# ---------------------------------------------------------------- the child process


def _child(handle, event: Event, processor: str, loaded: dict, conn) -> None:
    """Run one task's handler, sending each output, then ("done",) or ("error", ...)."""
    try:
        ctx = Context(processor=processor, now=event.recorded_at, input=event,
                      resources=loaded)
        for out in handle(event, ctx):
            conn.send(("event", out))
        conn.send(("done",))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
        permanent = isinstance(e, _PERMANENT)
        conn.send(("error", type(e).__name__, str(e)[:2000], permanent))
    finally:
        conn.close()


_CONTEXT: dict[tuple[str, ...], Any] = {}


def _mp_context(preload: tuple[str, ...]):
    ctx = _CONTEXT.get(preload)
    if ctx is None:
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["bus.components", "contracts.registry", *preload])
        _CONTEXT[preload] = ctx
    return ctx


# ---------------------------------------------------------------- the runner


@dataclass
class TaskStats:
    started: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    retried: int = 0
    deferred: int = 0
    published: int = 0
    dead_lettered: int = 0
    starts: list[tuple[str, str, float]] = field(default_factory=list)  # tenant, task, t

    @property
    def handled(self) -> int:
        return self.completed + self.failed + self.cancelled


@dataclass
class _Held:
    msg: Msg
    event: TaskRequested
    since: float


class TaskRunner:
    def __init__(self, nc: Client, worker: TaskWorker, consumer: ConsumerSpec, *,
                 fetch_timeout_s: float = 0.5, grace_s: float = 20.0,
                 worker_id: str | None = None) -> None:
        self.nc, self.js = nc, nc.jetstream()
        self.worker, self.consumer = worker, consumer
        self.fetch_timeout_s, self.grace_s = fetch_timeout_s, grace_s
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{worker.name}"
        self.states = TaskStates(self.js)
        self.outputs = OutputLog(self.js)
        self.stats = TaskStats()
        self._held: list[_Held] = []
        self._running: dict[str, tuple[asyncio.Task, Msg, str]] = {}
        self._last_start: dict[str, float] = {}
        self._log = log.bind(worker=worker.name)

    # ------------------------------------------------------------ loop

    async def run(self, stop: asyncio.Event) -> TaskStats:
        puller = Puller(self.nc, self.consumer.stream, self.consumer.durable)
        beat = asyncio.create_task(self._heartbeat(stop))
        try:
            while not stop.is_set():
                room = HOLD_MAX - len(self._held)
                if room > 0:
                    wait = 0.05 if (self._running or self._held) else self.fetch_timeout_s
                    try:
                        msgs = await puller.fetch(room, timeout=wait)
                    except Exception as e:  # noqa: BLE001 - transport trouble: retry
                        self._log.warning("fetch failed; retrying", error=repr(e))
                        await asyncio.sleep(0.5)
                        await puller.close()
                        msgs = []
                    for msg in msgs:
                        await self._admit(msg)
                await self._defer_surplus()
                await self._start_runnable()
                if self._running:
                    await asyncio.wait([t for t, _, _ in self._running.values()],
                                       timeout=0.2, return_when=asyncio.FIRST_COMPLETED)
                elif not self._held:
                    await asyncio.sleep(0)
                else:
                    await asyncio.sleep(0.05)
        finally:
            await self._shutdown()
            beat.cancel()
            with contextlib.suppress(BaseException):
                await beat
            await puller.close()
        return self.stats

    async def _admit(self, msg: Msg) -> None:
        try:
            event = decode("task", msg.data)
        except (msgspec.DecodeError, ContractError) as e:
            await self._dead_letter(msg, f"not a task event: {e}")
            return
        if (problem := tenant_mismatch(event, msg.subject)) is not None:
            await self._dead_letter(msg, problem)
            return
        if not isinstance(event, TaskRequested) or event.kind not in self.worker.handlers:
            await self._dead_letter(msg, f"{type(event).__name__} kind "
                                         f"{getattr(event, 'kind', '?')!r} is not done by "
                                         f"{self.worker.name}")
            return
        if event.not_before is not None:
            wait = (event.not_before - utc_now()).total_seconds()
            if wait > 0:  # not yet: it comes back when it may start
                with contextlib.suppress(Exception):
                    await msg.nak(delay=min(wait, 30.0))
                return
        state, _ = await self.states.get(event.tenant, event.event_id)
        if state.state in FINISHED:
            await msg.ack()  # a repeated request of a finished task: nothing to do
            return
        if state.state == "cancel_requested":
            await self._cancelled(event, state, while_running=False)
            await msg.ack()
            return
        if event.event_id in self._running or any(h.event.event_id == event.event_id
                                                  for h in self._held):
            return  # a redelivery of what we hold: the heartbeat keeps it ours
        self._held.append(_Held(msg, event, time.monotonic()))

    def _runnable(self) -> _Held | None:
        busy: dict[str, int] = {}
        for _, _, tenant in self._running.values():
            busy[tenant] = busy.get(tenant, 0) + 1
        candidates = [h for h in self._held
                      if busy.get(h.event.tenant, 0) < self.worker.per_tenant]
        if not candidates:
            return None
        # the tenant that started least recently first; then the oldest request
        return min(candidates, key=lambda h: (self._last_start.get(h.event.tenant, 0.0),
                                              h.since))

    async def _start_runnable(self) -> None:
        while len(self._running) < self.worker.concurrency:
            chosen = self._runnable()
            if chosen is None:
                return
            self._held.remove(chosen)
            e = chosen.event
            self._last_start[e.tenant] = time.monotonic()
            task = asyncio.create_task(self._execute(chosen.msg, e))
            self._running[e.event_id] = (task, chosen.msg, e.tenant)
            task.add_done_callback(lambda _, tid=e.event_id: self._running.pop(tid, None))

    async def _defer_surplus(self) -> None:
        """Hold at most ``HOLD_PER_TENANT`` waiting requests of one tenant; give the rest
        back for a while, so the next fetches bring other tenants' requests."""
        count: dict[str, int] = {}
        for h in sorted(self._held, key=lambda h: h.since):
            count[h.event.tenant] = count.get(h.event.tenant, 0) + 1
            if count[h.event.tenant] > HOLD_PER_TENANT:
                self._held.remove(h)
                with contextlib.suppress(Exception):
                    await h.msg.nak(delay=DEFER_S)
                self.stats.deferred += 1

    async def _heartbeat(self, stop: asyncio.Event) -> None:
        interval = max(self.consumer.ack_wait_s / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            msgs = [h.msg for h in self._held] + [m for _, m, _ in self._running.values()]
            for msg in msgs:
                with contextlib.suppress(Exception):
                    await msg.in_progress()

    async def _shutdown(self) -> None:
        for h in self._held:
            with contextlib.suppress(Exception):
                await h.msg.nak()
        self._held.clear()
        if self._running:
            tasks = [t for t, _, _ in self._running.values()]
            done, pending = await asyncio.wait(tasks, timeout=self.grace_s)
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=10)

    # ------------------------------------------------------------ one task

    async def _execute(self, msg: Msg, event: TaskRequested) -> None:
        from opentelemetry import trace

        from bus import tracing

        with tracing.tracer().start_as_current_span(
                f"{self.worker.name} {event.kind}", context=tracing.extract(msg.headers),
                kind=trace.SpanKind.CONSUMER,
                attributes={"tagus.processor": self.worker.name, "tagus.tenant": event.tenant,
                            "tagus.task_id": event.event_id, "tagus.kind": event.kind}):
            await self._execute_traced(msg, event)

    async def _execute_traced(self, msg: Msg, event: TaskRequested) -> None:
        tenant, task_id = event.tenant, event.event_id
        bound = self._log.bind(tenant=tenant, task_id=task_id, kind=event.kind)

        def begin(s: TaskState) -> TaskState | None:
            if s.state in FINISHED or s.state == "cancel_requested":
                return None
            return TaskState(state="running", attempts=s.attempts + 1, worker=self.worker_id)

        state = await self.states.change(tenant, task_id, begin)
        if state.state in FINISHED:
            await msg.ack()
            return
        if state.state == "cancel_requested":
            await self._cancelled(event, state, while_running=False)
            await msg.ack()
            return
        attempt = state.attempts
        if attempt > self.worker.max_attempts:
            await self._fail(event, attempt, "gave up", f"{attempt - 1} attempts did not end "
                             "(the worker crashed or was killed each time)", retryable=True)
            await msg.ack()
            return
        started = time.monotonic()
        queued = max(0.0, (utc_now() - event.recorded_at).total_seconds())
        await self._publish(self._transition(event, TaskStarted, f"started/{attempt}",
                                             worker=self.worker_id, attempt=attempt,
                                             queued_s=round(queued, 3)))
        self.stats.started += 1
        self.stats.starts.append((tenant, task_id, time.time()))
        metrics.record("tagus.task.queued", queued, kind=event.kind,
                       component=self.consumer.durable)
        bound.info("task started", attempt=attempt, queued_s=round(queued, 3))
        limit = event.time_limit_s or self.worker.time_limit_s
        try:
            outcome, detail, ids = await self._run_child(event, limit)
        except asyncio.CancelledError:  # the runner stops: someone else will do it
            with contextlib.suppress(Exception):
                await self.states.change(tenant, task_id, _requeue)
                await msg.nak()
            raise
        duration = round(time.monotonic() - started, 3)
        metrics.record("tagus.task.duration", duration, kind=event.kind,
                       component=self.consumer.durable,
                       outcome={"done": "completed"}.get(outcome, outcome))
        if outcome == "done":
            await self._publish(self._transition(event, TaskCompleted, "completed",
                                                 outputs=ids, duration_s=duration))
            await self.states.change(tenant, task_id, _finish("completed"))
            self.stats.completed += 1
            metrics.add("tagus.task.outcomes", 1, kind=event.kind,
                        component=self.consumer.durable, outcome="completed")
            bound.info("task completed", outputs=len(ids), duration_s=duration)
            await msg.ack()
        elif outcome == "cancelled":
            current, _ = await self.states.get(tenant, task_id)
            await self._cancelled(event, current, while_running=True)
            await msg.ack()
        elif outcome == "timed out":
            await self._fail(event, attempt, "timed out", f"exceeded its time limit of "
                             f"{limit:g} s", retryable=True)
            await msg.ack()
        elif outcome == "permanent":
            await self._fail(event, attempt, detail.split(":", 1)[0], detail, retryable=False)
            await msg.ack()
        elif attempt < self.worker.max_attempts:  # transient: again, after a while
            delay = min(2.0 * 4 ** (attempt - 1), 300.0)
            await self.states.change(tenant, task_id, _requeue)
            self.stats.retried += 1
            metrics.add("tagus.task.outcomes", 1, kind=event.kind,
                        component=self.consumer.durable, outcome="retried")
            bound.warning("task failed; will retry", error=detail, delay_s=delay,
                          attempt=attempt)
            with contextlib.suppress(Exception):
                await msg.nak(delay=delay)
        else:
            await self._fail(event, attempt, detail.split(":", 1)[0], detail, retryable=True)
            await msg.ack()

    async def _run_child(self, event: TaskRequested, limit: float
                         ) -> tuple[str, str, list[str]]:
        """(outcome, detail, output ids): outcome done, cancelled, timed out, permanent,
        transient."""
        loaded = await resources.load(self.worker.loaders, self.js, self.worker.needs, event)
        ctx = _mp_context(self.worker.preload)
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, daemon=True, args=(
            self.worker.handlers[event.kind], event, self.worker.name, loaded, child))
        before = await self.outputs.get(
                self.worker.name, event.tenant, event.event_id)
        ids: list[str] = []  # every output, as the output log keeps them
        domain: list[str] = []  # what the task produced (progress reports left out)
        deadline = time.monotonic() + limit
        next_cancel_check = 0.0
        try:
            proc.start()
            child.close()
            while True:
                if time.monotonic() > deadline:
                    return "timed out", "", ids
                if time.monotonic() > next_cancel_check:
                    next_cancel_check = time.monotonic() + 0.5
                    state, _ = await self.states.get(event.tenant, event.event_id)
                    if state.state == "cancel_requested":
                        return "cancelled", "", ids
                if not await asyncio.to_thread(parent.poll, 0.25):
                    if not proc.is_alive() and not parent.poll():
                        return "transient", f"the task's process died (exit code " \
                                            f"{proc.exitcode})", ids
                    continue
                try:
                    item = parent.recv()
                except EOFError:
                    return "transient", f"the task's process died (exit code " \
                                        f"{proc.exitcode})", ids
                if item[0] == "event" and isinstance(item[1], Blob):
                    await self._store(item[1])
                    continue
                if item[0] == "event":
                    out = item[1]
                    if not (before and len(ids) < len(before)
                            and before[len(ids)] == out.event_id):
                        await self._publish(out)
                    ids.append(out.event_id)
                    if not isinstance(out, TaskProgressed):
                        domain.append(out.event_id)
                elif item[0] == "done":
                    if ids != before:
                        await self.outputs.put(
                    self.worker.name, event.tenant, event.event_id, ids)
                    return "done", "", domain
                else:
                    _, name, message, permanent = item
                    return ("permanent" if permanent else "transient"), f"{name}: {message}", ids
        finally:
            resources.close(loaded)
            if proc.is_alive():
                proc.kill()
            proc.join(timeout=5)
            parent.close()

    async def _store(self, blob: Blob) -> None:
        from nats.js.errors import NotFoundError as JsNotFound
        from nats.js.errors import ObjectNotFoundError

        store = await self.js.object_store(blob.bucket)
        try:
            await store.get_info(blob.name)
        except (ObjectNotFoundError, JsNotFound):
            await store.put(blob.name, blob.data)

    # ------------------------------------------------------------ outcomes

    def _transition(self, event: TaskRequested, cls, key: str, **fields) -> Event:
        now = utc_now()
        return cls(event_id=derive_id(event.event_id, self.worker.name, key), tenant=event.tenant,
                   occurred_at=now, recorded_at=now, causation_id=event.event_id,
                   correlation_id=event.correlation_id or event.event_id,
                   task_id=event.event_id, kind=event.kind, **fields)

    async def _publish(self, event: Event) -> None:
        await publish(self.js, event)
        self.stats.published += 1

    async def _fail(self, event: TaskRequested, attempt: int, reason: str, detail: str, *,
                    retryable: bool) -> None:
        await self._publish(self._transition(event, TaskFailed, "failed", reason=reason,
                                             detail=detail, retryable=retryable,
                                             attempt=attempt))
        await self.states.change(event.tenant, event.event_id, _finish("failed"))
        self.stats.failed += 1
        metrics.add("tagus.task.outcomes", 1, kind=event.kind,
                    component=self.consumer.durable, outcome="failed")
        self._log.warning("task failed", tenant=event.tenant, task_id=event.event_id,
                          reason=reason, detail=detail[:300], retryable=retryable)

    async def _cancelled(self, event: TaskRequested, state: TaskState, *,
                         while_running: bool) -> None:
        await self._publish(self._transition(event, TaskCancelled, "cancelled",
                                             by=state.cancel_by, reason=state.cancel_reason,
                                             while_running=while_running))
        await self.states.change(event.tenant, event.event_id, _finish("cancelled"))
        self.stats.cancelled += 1
        metrics.add("tagus.task.outcomes", 1, kind=event.kind,
                    component=self.consumer.durable, outcome="cancelled")

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        from contracts.base import TENANT_RE
        from contracts.deadletters import MessageDeadLettered
        from bus.subjects import tenant_of_subject

        meta = msg.metadata
        tenant = tenant_of_subject(msg.subject)
        now = utc_now()
        await publish(self.js, MessageDeadLettered(
            event_id=derive_id("deadletter", self.consumer.stream, self.consumer.durable,
                               meta.sequence.stream),
            tenant=tenant if tenant and TENANT_RE.match(tenant) else "unknown",
            occurred_at=now, recorded_at=now, stream=self.consumer.stream,
            consumer=self.consumer.durable, stream_seq=meta.sequence.stream,
            subject=msg.subject, payload=msg.data, headers=dict(msg.headers or {}),
            error_kind="unroutable", reason=reason, deliveries=meta.num_delivered))
        await msg.term()
        self.stats.dead_lettered += 1
        metrics.add("tagus.runner.dead_letters", 1, error_kind="unroutable",
                    component=self.consumer.durable, stream=self.consumer.stream)


def _requeue(s: TaskState) -> TaskState | None:
    if s.state != "running":
        return None
    return TaskState(state="queued", attempts=s.attempts, worker="")


def _finish(outcome: str):
    def update(s: TaskState) -> TaskState | None:
        if s.state in FINISHED:
            return None
        return TaskState(state=outcome, attempts=s.attempts, worker=s.worker,
                         cancel_by=s.cancel_by, cancel_reason=s.cancel_reason)
    return update
