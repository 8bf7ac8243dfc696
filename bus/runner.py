"""The one runner that does all I/O for processors and projections.

A **processor** is a pure ``handle(event, ctx) -> list[Event]``; a **projection** is a
``write(events)`` batch sink.  The runner pulls from the component's durable consumer,
decodes with the family's typed decoder, calls the component, publishes outputs, and
only then acks.  Error paths:

=====================  ===========================================================
malformed / invalid    dead-letter with the raw bytes and reason, then ``term``
transient failure      ``nak(delay)`` following the consumer's backoff
any failure on the     dead-letter with the last error, then ``term``
last allowed delivery
never acked, deliver-  the server's MAX_DELIVERIES advisory names the sequence; the
ies exhausted          runner fetches that message and dead-letters it
=====================  ===========================================================

Outputs get ids derived from the input's id (``Context.derive``), and publishing sets
``Nats-Msg-Id``: a message redelivered after a crash re-publishes the same ids, which
the stream drops as duplicates.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import APIError
from opentelemetry import trace

from bus import metrics, resources, tracing
from bus.publish import publish
from bus.outputs import OutputLog
from bus.pull import Puller
from bus.subjects import tenant_of_subject
from bus.components import Component, Context, Processor, Projection
from bus.topology import ConsumerSpec
from contracts.base import TENANT_RE, Event, derive_id, event_type, utc_now
from contracts.deadletters import MessageDeadLettered
from contracts.errors import ContractError, TransientError
from contracts.registry import decode

log = structlog.get_logger("tagus.runner")

_DONE = object()
_TRANSPORT_ERRORS = (
    nats.errors.TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoRespondersError,
    nats.errors.ConnectionReconnectingError, nats.errors.StaleConnectionError, APIError,
    asyncio.TimeoutError, TransientError, ConnectionError,
)


@dataclass
class RunnerStats:
    handled: int = 0
    published: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    retried: int = 0
    skipped: int = 0
    already: int = 0  # outputs not published again: an earlier delivery did (replays)
    batches: int = 0
    last_stream_seq: int = 0
    errors: list[str] = field(default_factory=list)


def tenant_mismatch(event: Event, subject: str) -> str | None:
    """Why an event may not be handled on ``subject``: its body names another tenant
    than its subject.  Subject permissions are what NATS enforces (a tenant's user may
    publish only its own subjects); the body must agree, or a tenant could write into
    another's data."""
    tenant = tenant_of_subject(subject)
    if tenant != event.tenant:
        return (f"the event says tenant {event.tenant!r} but was published on {subject!r} "
                f"(tenant {tenant!r}): refused")
    return None


class Runner:
    """Pull, decode, handle, publish, ack — for one component on one durable consumer."""

    def __init__(
        self, nc: Client, component: Component, consumer: ConsumerSpec, *,
        batch: int = 100, fetch_timeout_s: float = 1.0,
        select: Callable[[Msg], bool] | None = None, max_bytes: int | None = None,
    ) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.component = component
        self.consumer = consumer
        self.family = event_type(component.accepts[0]).split(".", 1)[0]
        cap = getattr(component, "max_batch", None)
        self.batch = min(batch, cap) if cap else batch
        self.fetch_timeout_s = fetch_timeout_s
        self.max_bytes = max_bytes  # per fetch (bus.pull.Puller: at least 16 MiB)
        self.loaders = getattr(component, "loaders", {})  # bound by the bootstrap
        self.outputs = OutputLog(self.js)
        self.select = select  # replay bounds: messages it refuses are acked, not handled
        self.stats = RunnerStats()
        self._last_error: dict[int, str] = {}
        self._log = log.bind(processor=component.name, stream=consumer.stream)
        # metric attributes: the consumer (a component may run on several, replays)
        self._attrs = {"component": consumer.durable, "stream": consumer.stream}

    # ------------------------------------------------------------ main loop

    async def run(self, stop: asyncio.Event) -> RunnerStats:
        """Run until ``stop`` is set; the batch in hand is finished before returning."""
        if isinstance(self.component, Projection) and self.component.prepare:
            await asyncio.to_thread(self.component.prepare)
        advisory = await self._watch_max_deliveries()
        puller = Puller(self.nc, self.consumer.stream, self.consumer.durable,
                        max_bytes=self.max_bytes)
        try:
            while not stop.is_set():
                try:
                    msgs = await puller.fetch(self.batch, timeout=self.fetch_timeout_s)
                except _TRANSPORT_ERRORS as e:
                    self._log.warning("fetch failed; retrying", error=repr(e))
                    await asyncio.sleep(0.5)
                    await puller.close()
                    continue
                if not msgs:
                    continue
                self.stats.batches += 1
                metrics.record("tagus.runner.batch.size", len(msgs), **self._attrs)
                if self.select is not None:
                    msgs = await self._skip_unselected(msgs)
                if isinstance(self.component, Processor):
                    # every message in hand is kept from timing out until it is settled
                    pending = {id(m): m for m in msgs}
                    await self._with_heartbeat(pending, self._process_batch(msgs, pending))
                else:
                    await self._sink(msgs)
        finally:
            if advisory is not None:
                await advisory.unsubscribe()
            await puller.close()
        return self.stats

    async def _skip_unselected(self, msgs: list[Msg]) -> list[Msg]:
        keep = []
        for msg in msgs:
            if self.select(msg):
                keep.append(msg)
            else:
                await msg.ack()
                self.stats.skipped += 1
        return keep

    # ------------------------------------------------------------ processors

    def _decode(self, msg: Msg) -> Event | tuple[str, str]:
        """The event, or (error_kind, reason) if the message cannot be handled."""
        try:
            event = decode(self.family, msg.data)
        except msgspec.ValidationError as e:
            return "invalid", f"breaks the {self.family} contract: {e}"
        except (msgspec.DecodeError, ContractError) as e:
            return "malformed", f"not a {self.family} event: {e}"
        if not isinstance(event, self.component.accepts):
            return "unroutable", (
                f"{event_type(event)} is not accepted by {self.component.name} "
                f"(accepts {[event_type(t) for t in self.component.accepts]})"
            )
        if (problem := tenant_mismatch(event, msg.subject)) is not None:
            return "invalid", problem
        return event

    async def _process_batch(self, msgs: list[Msg], pending: dict[int, Msg]) -> None:
        """Handle a batch: one at a time, or (``concurrency`` > 1) one lane per tenant,
        lanes overlapping up to ``concurrency`` events in hand; an event the component
        wants ``alone`` waits for the lanes before it and holds back the ones after."""
        decoded: list[tuple[Msg, Event]] = []
        for msg in msgs:
            d = self._decode(msg)
            if isinstance(d, tuple):
                await self._dead_letter_msg(msg, *d)
                pending.pop(id(msg), None)
            else:
                decoded.append((msg, d))
        width = self.component.concurrency
        alone = self.component.alone
        if width <= 1:
            for msg, event in decoded:
                await self._settle(msg, event, pending)
            return
        gate = asyncio.Semaphore(width)
        group: list[tuple[Msg, Event]] = []
        for msg, event in decoded:
            if alone is not None and alone(event):
                await self._lanes(group, gate, pending)
                group = []
                await self._settle(msg, event, pending)
            else:
                group.append((msg, event))
        await self._lanes(group, gate, pending)

    async def _lanes(self, group: list[tuple[Msg, Event]], gate: asyncio.Semaphore,
                     pending: dict[int, Msg]) -> None:
        lanes: dict[str, list[tuple[Msg, Event]]] = {}
        for msg, event in group:
            lanes.setdefault(event.tenant, []).append((msg, event))

        async def lane(items: list[tuple[Msg, Event]]) -> None:
            for msg, event in items:
                async with gate:
                    await self._settle(msg, event, pending)

        await asyncio.gather(*(lane(items) for items in lanes.values()))

    async def _settle(self, msg: Msg, event: Event, pending: dict[int, Msg]) -> None:
        try:
            await self._process(msg, event)
        except _TRANSPORT_ERRORS as e:  # the ack (or nak) did not reach the server
            self._log.warning("not settled; the server redelivers it after ack_wait",
                              event_id=event.event_id, error=repr(e))
        finally:
            pending.pop(id(msg), None)

    async def _process(self, msg: Msg, event: Event) -> None:
        """Handle one decoded event: ack, retry or dead-letter it.  Raises only when
        the server cannot be told (the message is then redelivered after ack_wait)."""
        meta = msg.metadata
        bound = self._log.bind(tenant=event.tenant, event_id=event.event_id,
                               subject=msg.subject, stream_seq=meta.sequence.stream)
        with tracing.tracer().start_as_current_span(
            f"{self.component.name} handle", context=tracing.extract(msg.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={"tagus.processor": self.component.name, "tagus.tenant": event.tenant,
                        "tagus.event_id": event.event_id, "messaging.destination": msg.subject},
        ):
            t0 = time.perf_counter()
            try:
                outputs = await self._handle_and_publish(event)
            except ContractError as e:
                await self._dead_letter_msg(msg, "invalid", f"handler rejected the event: {e}")
                return
            except Exception as e:  # noqa: BLE001 - every failure takes an explicit path
                await self._retry_or_dead_letter(msg, e, bound)
                return
            await msg.ack()
        metrics.record("tagus.runner.handle.duration", time.perf_counter() - t0, **self._attrs)
        metrics.add("tagus.runner.handled", 1, **self._attrs)
        self.stats.handled += 1
        self.stats.last_stream_seq = max(self.stats.last_stream_seq, meta.sequence.stream)
        bound.info("handled", outputs=outputs, deliveries=meta.num_delivered)

    async def _handle_and_publish(self, event: Event) -> int:
        """Call the handler off the event loop and publish each output as it comes.

        A handler may return a list or a generator; a generator is advanced in a worker
        thread one output at a time, so a large upload is never all in memory.
        """
        loaded = await resources.load(self.loaders, self.js, self.component.needs, event)
        try:
            ctx = Context(processor=self.component.name, now=utc_now(), input=event,
                          resources=loaded)
            result = await asyncio.to_thread(self.component.handle, event, ctx)
            it = iter(result)
            before = await self.outputs.get(
                self.component.name, event.tenant, event.event_id)
            ids: list[str] = []
            while True:
                out = await asyncio.to_thread(next, it, _DONE)
                if out is _DONE:
                    break
                if before is not None and len(ids) < len(before) \
                        and before[len(ids)] == out.event_id:
                    self.stats.already += 1  # in the stream since an earlier delivery
                else:
                    ack = await publish(self.js, out)
                    self.stats.published += 1
                    metrics.add("tagus.runner.published", 1, **self._attrs)
                    metrics.account_outputs(out)
                    self.stats.duplicates += int(bool(ack.duplicate))
                ids.append(out.event_id)
            if ids != before:
                await self.outputs.put(
                    self.component.name, event.tenant, event.event_id, ids)
            return len(ids)
        finally:
            resources.close(loaded)

    async def _with_heartbeat(self, msgs: list[Msg] | dict[int, Msg], work):
        """Await ``work``, telling the server every ack_wait/3 that ``msgs`` are in
        progress (a dict: the messages still unsettled, which the work shrinks)."""
        task = asyncio.ensure_future(work)
        interval = max(self.consumer.ack_wait_s / 3, 0.2)
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                return task.result()
            try:
                for msg in list(msgs.values() if isinstance(msgs, dict) else msgs):
                    await msg.in_progress()
            except _TRANSPORT_ERRORS:
                pass  # the work goes on; a lost heartbeat only risks a redelivery

    async def _retry_or_dead_letter(self, msg: Msg, error: Exception, bound) -> None:
        meta = msg.metadata
        reason = f"{type(error).__name__}: {error}"
        self._last_error[meta.sequence.stream] = reason
        metrics.add("tagus.runner.failures", 1, error=type(error).__name__, **self._attrs)
        if meta.num_delivered >= self.consumer.max_deliver:
            await self._dead_letter_msg(
                msg, "max_deliveries",
                f"failed on all {meta.num_delivered} deliveries; last error {reason}",
            )
            return
        delay = self.consumer.nak_delay_s(meta.num_delivered)
        self.stats.retried += 1
        bound.warning("handler failed; will retry", error=reason, delay_s=delay,
                      deliveries=meta.num_delivered)
        try:
            await msg.nak(delay=delay)
        except _TRANSPORT_ERRORS:
            pass  # without the nak the server redelivers after ack_wait anyway

    # ------------------------------------------------------------ projections

    async def _sink(self, msgs: list[Msg]) -> None:
        good: list[tuple[Msg, Event]] = []
        for msg in msgs:
            decoded = self._decode(msg)
            if isinstance(decoded, tuple):
                await self._dead_letter_msg(msg, *decoded)
            else:
                good.append((msg, decoded))
        if not good:
            return
        with tracing.tracer().start_as_current_span(
            f"{self.component.name} write", kind=trace.SpanKind.CONSUMER,
            context=tracing.extract(good[0][0].headers),
            attributes={"tagus.processor": self.component.name, "tagus.batch": len(good)},
        ):
            t0 = time.perf_counter()
            try:
                await self._with_heartbeat([m for m, _ in good],
                                           self._write([e for _, e in good]))
            except Exception as e:  # noqa: BLE001
                if len(good) > 1 and not isinstance(e, TransientError):
                    # isolate the poison: write one by one, each takes its own path
                    for msg, event in good:
                        await self._sink_one(msg, event)
                    return
                for msg, _ in good:
                    await self._retry_or_dead_letter(msg, e, self._log)
                return
        for msg, _ in good:
            await msg.ack()
        metrics.record("tagus.runner.handle.duration", time.perf_counter() - t0, **self._attrs)
        metrics.add("tagus.runner.handled", len(good), **self._attrs)
        self.stats.handled += len(good)
        self.stats.last_stream_seq = good[-1][0].metadata.sequence.stream
        self._log.info("batch written", events=len(good),
                       tenants=sorted({e.tenant for _, e in good}),
                       last_stream_seq=self.stats.last_stream_seq)

    async def _write(self, events: list[Event]) -> None:
        """A projection's write: a plain function runs in a worker thread; a coroutine
        function (a view kept in a KV bucket) runs here, with the JetStream context."""
        if inspect.iscoroutinefunction(self.component.write):
            await self.component.write(events, self.js)
        else:
            await asyncio.to_thread(self.component.write, events)

    async def _sink_one(self, msg: Msg, event: Event) -> None:
        try:
            await self._write([event])
        except ContractError as e:
            await self._dead_letter_msg(msg, "invalid", f"projection rejected the event: {e}")
            return
        except Exception as e:  # noqa: BLE001
            await self._retry_or_dead_letter(msg, e, self._log.bind(event_id=event.event_id))
            return
        await msg.ack()
        metrics.add("tagus.runner.handled", 1, **self._attrs)
        self.stats.handled += 1

    # ------------------------------------------------------------ dead letters

    async def _dead_letter_msg(self, msg: Msg, kind: str, reason: str) -> None:
        meta = msg.metadata
        await self._dead_letter(
            stream_seq=meta.sequence.stream, subject=msg.subject, payload=msg.data,
            headers=dict(msg.headers or {}), kind=kind, reason=reason,
            deliveries=meta.num_delivered,
        )
        await msg.term()

    async def _dead_letter(self, *, stream_seq: int, subject: str, payload: bytes,
                           headers: dict[str, str], kind: str, reason: str,
                           deliveries: int) -> None:
        tenant = tenant_of_subject(subject)
        now = utc_now()
        event = MessageDeadLettered(
            event_id=derive_id("deadletter", self.consumer.stream, self.consumer.durable,
                               stream_seq),
            tenant=tenant if tenant and TENANT_RE.match(tenant) else "unknown",
            occurred_at=now, recorded_at=now,
            causation_id=headers.get("Nats-Msg-Id"),
            stream=self.consumer.stream, consumer=self.consumer.durable,
            stream_seq=stream_seq, subject=subject, payload=payload, headers=headers,
            error_kind=kind, reason=reason, deliveries=deliveries,
        )
        ack = await publish(self.js, event)
        if ack.duplicate:  # the same message parked already (last delivery + advisory)
            return
        self.stats.dead_lettered += 1
        metrics.add("tagus.runner.dead_letters", 1, error_kind=kind, **self._attrs)
        self._log.error("dead-lettered", stream_seq=stream_seq, subject=subject,
                        error_kind=kind, reason=reason, deliveries=deliveries)

    async def _watch_max_deliveries(self):
        """Dead-letter messages the server gave up on (never acked: crashes, timeouts)."""
        subject = (f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES."
                   f"{self.consumer.stream}.{self.consumer.durable}")

        async def on_advisory(m: Msg) -> None:
            try:
                adv = json.loads(m.data)
                seq = int(adv["stream_seq"])
                raw = await self.js.get_msg(self.consumer.stream, seq)
                await self._dead_letter(
                    stream_seq=seq, subject=raw.subject, payload=raw.data or b"",
                    headers=dict(raw.headers or {}), kind="max_deliveries",
                    reason=self._last_error.pop(
                        seq, f"not acknowledged after {adv.get('deliveries')} deliveries "
                             "(worker crashed or exceeded ack_wait)"),
                    deliveries=int(adv.get("deliveries", 0)),
                )
            except Exception as e:  # noqa: BLE001 - an advisory we cannot act on is logged
                self._log.error("max-deliveries advisory not handled", error=repr(e),
                                advisory=m.data[:500].decode(errors="replace"))

        try:
            return await self.nc.subscribe(subject, cb=on_advisory)
        except _TRANSPORT_ERRORS as e:
            self._log.warning("cannot watch max-deliveries advisories", error=repr(e))
            return None
