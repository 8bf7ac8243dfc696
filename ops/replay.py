"""`tagus replay`: re-deliver part of a stream through a processor or into a projection.

    tagus replay --into normalise --tenant ltown --since 2026-11-01T00:00Z
    tagus replay --into questdb-readings --from-seq 1 --to-seq 50000

A temporary durable consumer (``replay-<component>-<id>``, removed afterwards and by the
server after 10 idle minutes if the replay dies) starts at the requested sequence or
time, filtered to the component's event types and optionally to one tenant or subject;
the component runs through the same runner as in production.  Messages beyond
``--to-seq``/``--until`` are skipped.  Replays are safe to repeat: processors derive
output ids from their inputs (and normalise from the mapping version), projections are
idempotent through QuestDB dedup keys.  Events published during the replay are not part
of it: the upper bound is the stream's last sequence when the replay starts.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from nats.aio.client import Client
from nats.js import api as js_api
from tqdm import tqdm

from bus.runner import Runner, RunnerStats
from bus.subjects import ROOT
from bus.topology import ConsumerSpec, ensure_topology
from contracts.base import validate_tenant
from contracts.errors import ContractError, NotFoundError
from ops import wiring
from ops.service import components_running
from ops.settings import Settings


@dataclass(frozen=True)
class ReplayRequest:
    into: str
    tenant: str | None = None
    subject: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    from_seq: int | None = None
    to_seq: int | None = None
    downstream: bool = False  # also run the regular consumers until they catch up


@dataclass(frozen=True)
class ReplaySummary:
    component: str
    stream: str
    filter_subjects: tuple[str, ...]
    first_seq: int
    last_seq: int
    matched: int
    stats: RunnerStats
    elapsed_s: float

    def lines(self) -> list[str]:
        s = self.stats
        rate = s.handled / self.elapsed_s if self.elapsed_s else 0.0
        return [
            f"replayed {self.stream} seq {self.first_seq}..{self.last_seq} "
            f"({', '.join(self.filter_subjects)}) into {self.component}",
            f"  messages {self.matched}: handled {s.handled}, skipped (out of range) "
            f"{s.skipped}, dead-lettered {s.dead_lettered}, retried {s.retried}",
            f"  outputs published {s.published} ({s.duplicates} dropped as duplicates "
            "within the stream's window)",
            f"  {self.elapsed_s:.1f} s, {rate:.0f} messages/s",
        ]


def _filters(base: ConsumerSpec, req: ReplayRequest) -> tuple[str, ...]:
    if req.subject:
        if not req.subject.startswith(f"{ROOT}."):
            raise ContractError(f"--subject must start with '{ROOT}.', got {req.subject!r}")
        return (req.subject,)
    if req.tenant:
        validate_tenant(req.tenant)
        return tuple(f.replace(".*.", f".{req.tenant}.", 1) for f in base.filter_subjects)
    return base.filter_subjects


async def replay(settings: Settings, req: ReplayRequest, *, progress: bool = True,
                 nc: Client | None = None) -> ReplaySummary:
    comps = wiring.components(settings)
    if req.into not in comps:
        raise NotFoundError(f"no component {req.into!r}; known: {sorted(comps)}")
    topo = wiring.topology(settings)
    base = topo.consumer(req.into)
    own = nc is None
    nc = nc or await wiring.nats_connection(settings, name=f"tagus-replay-{req.into}")
    js = nc.jetstream()
    durable = f"replay-{req.into}-{uuid.uuid4().hex[:8]}"
    try:
        await ensure_topology(js, topo)
        info = await js.stream_info(base.stream)
        last_seq = min(req.to_seq or info.state.last_seq, info.state.last_seq)
        filters = _filters(base, req)
        cfg = js_api.ConsumerConfig(
            durable_name=durable, description=f"tagus replay into {req.into}",
            ack_policy=js_api.AckPolicy.EXPLICIT, ack_wait=base.ack_wait_s,
            max_deliver=base.max_deliver, backoff=list(base.backoff_s) or None,
            filter_subjects=list(filters), max_ack_pending=base.max_ack_pending,
            inactive_threshold=600.0, **_start(req))
        await js.add_consumer(base.stream, cfg)
        matched = (await js.consumer_info(base.stream, durable)).num_pending or 0
        spec = ConsumerSpec(stream=base.stream, durable=durable, filter_subjects=filters,
                            ack_wait_s=base.ack_wait_s, max_deliver=base.max_deliver,
                            backoff_s=base.backoff_s)
        until_ns = int(req.until.timestamp() * 1e9) if req.until else None

        def in_range(msg) -> bool:
            meta = msg.metadata
            if meta.sequence.stream > last_seq:
                return False
            return until_ns is None or meta.timestamp is None or _ts_ns(meta.timestamp) <= until_ns

        runner = Runner(nc, comps[req.into], spec, batch=100, select=in_range)
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(runner.run(stop))
        bar = tqdm(total=matched, unit="msg", desc=f"replay into {req.into}",
                   disable=not progress, leave=True)
        try:
            while True:
                ci = await js.consumer_info(base.stream, durable)
                done = runner.stats.handled + runner.stats.skipped + runner.stats.dead_lettered
                bar.update(done - bar.n)
                if (ci.num_pending or 0) == 0 and (ci.num_ack_pending or 0) == 0:
                    break
                if (ci.ack_floor.stream_seq or 0) >= last_seq:
                    break
                if task.done():
                    task.result()  # surface the runner's crash
                await asyncio.sleep(0.2)
        finally:
            stop.set()
            await task
            bar.close()
        elapsed = time.monotonic() - started
        if req.downstream:
            await _run_downstream(nc, settings, topo, progress)
        return ReplaySummary(req.into, base.stream, filters, _first(req), last_seq, matched,
                             runner.stats, elapsed)
    finally:
        try:
            await js.delete_consumer(base.stream, durable)
        except Exception:  # noqa: BLE001 - inactive_threshold removes it anyway
            pass
        if own:
            await nc.drain()


def _first(req: ReplayRequest) -> int:
    return req.from_seq or 1


def _start(req: ReplayRequest) -> dict:
    if req.from_seq:
        return dict(deliver_policy=js_api.DeliverPolicy.BY_START_SEQUENCE,
                    opt_start_seq=req.from_seq)
    if req.since:
        return dict(deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
                    opt_start_time=req.since)
    return dict(deliver_policy=js_api.DeliverPolicy.ALL)


def _ts_ns(ts) -> int:
    if isinstance(ts, datetime):
        return int(ts.timestamp() * 1e9)
    return int(ts)


async def _run_downstream(nc: Client, settings: Settings, topo, progress: bool) -> None:
    """Run the regular consumers here until everything the replay produced is processed."""
    async with components_running(nc, settings, topo):
        pass
