"""Streams, durable consumers and buckets as data, and an idempotent ``ensure_topology``.

One stream per event family (``READINGS`` holds ``tagus.readings.>``).  Each processor
or projection owns one durable pull consumer on the stream of the events it accepts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import NotFoundError as JsNotFound

from bus.storage import BucketSpec, ensure_buckets
from bus.subjects import event_subjects, family_subjects, stream_name
from contracts.base import Event
from contracts.errors import ContractError, SetupError
from contracts.registry import FAMILIES, family_of


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]
    description: str = ""
    storage: str = "file"  # "file" | "memory"
    retention: str = "limits"  # "limits" | "interest" | "workqueue"
    replicas: int = 1
    duplicate_window_s: float = 120.0
    max_age_s: float = 0.0  # 0 = keep forever (events are the system of record)
    max_bytes: int = -1

    def config(self) -> js_api.StreamConfig:
        return js_api.StreamConfig(
            name=self.name,
            description=self.description or None,
            subjects=list(self.subjects),
            storage=js_api.StorageType(self.storage),
            retention=js_api.RetentionPolicy(self.retention),
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window_s,
            max_age=self.max_age_s,
            max_bytes=self.max_bytes,
            allow_direct=True,
        )


@dataclass(frozen=True)
class ConsumerSpec:
    """A durable pull consumer.

    ``backoff_s`` is the redelivery schedule for messages neither acked nor nak'd
    (a crashed or stuck worker); it overrides ``ack_wait_s`` on the server, so its
    first value should equal ``ack_wait_s``.  ``max_deliver`` must exceed its length.
    After ``max_deliver`` attempts the runner dead-letters the message.
    """

    stream: str
    durable: str
    filter_subjects: tuple[str, ...]
    description: str = ""
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    backoff_s: tuple[float, ...] = (30.0, 60.0, 120.0, 300.0)
    max_ack_pending: int = 1000

    def __post_init__(self) -> None:
        if self.backoff_s and self.max_deliver <= len(self.backoff_s):
            raise ContractError(
                f"consumer {self.durable}: max_deliver ({self.max_deliver}) must exceed "
                f"the number of backoff steps ({len(self.backoff_s)})"
            )

    def config(self) -> js_api.ConsumerConfig:
        return js_api.ConsumerConfig(
            durable_name=self.durable,
            description=self.description or None,
            ack_policy=js_api.AckPolicy.EXPLICIT,
            deliver_policy=js_api.DeliverPolicy.ALL,
            ack_wait=self.ack_wait_s,
            max_deliver=self.max_deliver,
            backoff=list(self.backoff_s) or None,
            filter_subjects=list(self.filter_subjects),
            max_ack_pending=self.max_ack_pending,
        )

    def nak_delay_s(self, num_delivered: int) -> float:
        """Delay before retrying a transient failure on delivery ``num_delivered``."""
        if not self.backoff_s:
            return self.ack_wait_s
        return self.backoff_s[min(num_delivered - 1, len(self.backoff_s) - 1)]


@dataclass(frozen=True)
class Topology:
    streams: tuple[StreamSpec, ...]
    consumers: tuple[ConsumerSpec, ...] = field(default=())
    buckets: tuple[BucketSpec, ...] = field(default=())

    def stream(self, name: str) -> StreamSpec:
        for s in self.streams:
            if s.name == name:
                return s
        raise ContractError(f"no stream {name!r} in topology ({[s.name for s in self.streams]})")

    def consumer(self, durable: str) -> ConsumerSpec:
        for c in self.consumers:
            if c.durable == durable:
                return c
        raise ContractError(f"no consumer {durable!r} in topology")

    def with_consumers(self, *consumers: ConsumerSpec) -> Topology:
        return Topology(self.streams, self.consumers + tuple(consumers), self.buckets)


def family_streams(**overrides) -> tuple[StreamSpec, ...]:
    """One stream per contract family; keyword overrides apply to every stream."""
    return tuple(
        StreamSpec(
            name=stream_name(f),
            subjects=(family_subjects(f),),
            description=f"Tagus {f} events",
            **overrides,
        )
        for f in FAMILIES
    )


def consumer_for(durable: str, accepts: tuple[type[Event], ...], **overrides) -> ConsumerSpec:
    """A consumer on the stream of ``accepts``' family, filtered to exactly those types."""
    families = {family_of(t) for t in accepts}
    if len(families) != 1:
        raise ContractError(f"{durable}: accepted events span families {sorted(families)}")
    (family,) = families
    filters = sorted({event_subjects(t) for t in accepts})
    wide = [f for f in filters if f.endswith(".*.*")]  # a keyed type takes every name:
    if wide:                                             # the others would overlap it
        filters = wide[:1]
    return ConsumerSpec(
        stream=stream_name(family),
        durable=durable,
        filter_subjects=tuple(filters),
        **overrides,
    )


# ---------------------------------------------------------------- ensure


def _stream_diff(want: js_api.StreamConfig, have: js_api.StreamConfig) -> list[str]:
    diffs = []
    for attr in ("description", "storage", "retention", "num_replicas", "max_bytes"):
        if getattr(want, attr) != getattr(have, attr):
            diffs.append(attr)
    if sorted(want.subjects or []) != sorted(have.subjects or []):
        diffs.append("subjects")
    for attr in ("duplicate_window", "max_age"):
        if abs((getattr(want, attr) or 0) - (getattr(have, attr) or 0)) > 1e-6:
            diffs.append(attr)
    return diffs


def _consumer_diff(want: js_api.ConsumerConfig, have: js_api.ConsumerConfig) -> list[str]:
    diffs = []
    for attr in ("description", "max_deliver", "max_ack_pending"):
        if getattr(want, attr) != getattr(have, attr):
            diffs.append(attr)
    if abs((want.ack_wait or 0) - (have.ack_wait or 0)) > 1e-6:
        diffs.append("ack_wait")
    if [round(b, 6) for b in want.backoff or []] != [round(b, 6) for b in have.backoff or []]:
        diffs.append("backoff")
    have_filters = sorted(have.filter_subjects or ([have.filter_subject] if have.filter_subject else []))
    if sorted(want.filter_subjects or []) != have_filters:
        diffs.append("filter_subjects")
    return diffs


async def ensure_topology(js: JetStreamContext, topology: Topology) -> list[str]:
    """Create or update every stream and consumer; return what changed (empty if nothing)."""
    changes: list[str] = []
    for spec in topology.streams:
        want = spec.config()
        try:
            info = await js.stream_info(spec.name)
        except JsNotFound:
            await js.add_stream(want)
            changes.append(f"created stream {spec.name}")
            continue
        diffs = _stream_diff(want, info.config)
        if "storage" in diffs:
            raise SetupError(
                f"stream {spec.name} is stored as {info.config.storage}, topology wants "
                f"{want.storage}: storage cannot change in place (back up, delete, recreate)"
            )
        if diffs:
            await js.update_stream(want)
            changes.append(f"updated stream {spec.name}: {', '.join(diffs)}")
    for spec in topology.consumers:
        want = spec.config()
        try:
            info = await js.consumer_info(spec.stream, spec.durable)
        except JsNotFound:
            await js.add_consumer(spec.stream, want)
            changes.append(f"created consumer {spec.stream}/{spec.durable}")
            continue
        diffs = _consumer_diff(want, info.config)
        if diffs:
            await js.add_consumer(spec.stream, want)
            changes.append(f"updated consumer {spec.stream}/{spec.durable}: {', '.join(diffs)}")
    changes += await ensure_buckets(js, topology.buckets)
    return changes
