"""The scheduler's shared memory in JetStream KV: slot claims and per-schedule cursors.

- ``tagus-task-slots``: ``<tenant>.<schedule>.<slot stamp>`` -> ``SlotClaim``.  Created
  if absent (``KV create``): the replica whose create succeeds owns the slot and is the
  only one that publishes its ``task.requested``.  A claim whose owner has not moved the
  cursor past it within the lease is stale: another replica takes it over with an update
  conditional on the claim's revision, then looks in the TASKS stream for the request
  before publishing it (the owner may have published and died before moving the cursor,
  longer ago than the stream's 2-minute duplicate window).
- ``tagus-task-cursors``: ``<tenant>.<schedule>`` -> ``Cursor``: every slot at or
  before ``through`` was requested (or deliberately skipped by the catch-up policy).  It
  only moves forward (updates conditional on the revision read).  A schedule without a
  cursor is new: its cursor starts at the instant it was first seen, so it does not catch
  up on the past.

Claims are purged ``retention`` after they were recorded (the cursors keep the
progress); the scheduler never claims a slot older than its catch-up horizon, which is
shorter.  Values are JSON, readable with ``nats kv get``.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime

import msgspec
from nats.js import api as js_api
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

from producers.scheduler.slots import slot_stamp

SLOTS_BUCKET = "tagus-task-slots"
CURSORS_BUCKET = "tagus-task-cursors"


class SlotClaim(msgspec.Struct, frozen=True, kw_only=True):
    """Who owns a slot.  ``claimed_at``: real wall-clock epoch seconds of the claim (or
    of the takeover), whatever clock the scheduler runs on; ``taken_over_from``: the
    replica whose stale claim this one replaced."""

    task_id: str
    tenant: str
    schedule: str
    slot: datetime
    by: str
    claimed_at: float
    taken_over_from: str | None = None


class Cursor(msgspec.Struct, frozen=True, kw_only=True):
    """Every slot of the schedule at or before ``through`` is handled; ``by``/``at``
    (real epoch seconds): the replica that moved it last, and when."""

    through: datetime
    by: str
    at: float


_encode = msgspec.json.Encoder().encode
_claim_decoder = msgspec.json.Decoder(SlotClaim)
_cursor_decoder = msgspec.json.Decoder(Cursor)


def claim_key(tenant: str, schedule: str, slot: datetime) -> str:
    return f"{tenant}.{schedule}.{slot_stamp(slot)}"


def cursor_key(tenant: str, schedule: str) -> str:
    return f"{tenant}.{schedule}"


def decode_cursor(value: bytes) -> Cursor:
    return _cursor_decoder.decode(value)


async def create_claim(kv, claim: SlotClaim) -> int | None:
    """Claim the slot; its revision, or None if somebody holds it already."""
    try:
        return await kv.create(claim_key(claim.tenant, claim.schedule, claim.slot),
                               _encode(claim))
    except KeyWrongLastSequenceError:
        return None


async def read_claim(kv, key: str) -> tuple[SlotClaim, int] | None:
    try:
        entry = await kv.get(key)
    except KeyNotFoundError:
        return None
    return _claim_decoder.decode(entry.value), entry.revision


async def take_over(kv, claim: SlotClaim, last_revision: int) -> int | None:
    """Replace a stale claim (revision ``last_revision``) by ``claim``; None when another
    replica changed it first."""
    try:
        return await kv.update(claim_key(claim.tenant, claim.schedule, claim.slot),
                               _encode(claim), last=last_revision)
    except KeyWrongLastSequenceError:
        return None


class Cursors:
    """Every schedule's cursor, kept current by a watch and by this replica's own moves."""

    def __init__(self, kv, replica: str) -> None:
        self.kv, self.replica = kv, replica
        self._held: dict[str, tuple[Cursor, int]] = {}

    def through(self, key: str) -> datetime | None:
        held = self._held.get(key)
        return held[0].through if held else None

    def apply(self, key: str, value: bytes | None, revision: int) -> bool:
        """Take a watched entry in; True when it moved the cursor forward."""
        if not value:
            return False
        held = self._held.get(key)
        if held and held[1] >= revision:
            return False
        cursor = decode_cursor(value)
        self._held[key] = (cursor, revision)
        return held is None or cursor.through > held[0].through

    async def advance(self, key: str, through: datetime, now_real: float) -> bool:
        """Move ``key``'s cursor forward to ``through`` (never back); True if this call
        moved it, False if it already was there or beyond."""
        value = _encode(Cursor(through=through, by=self.replica, at=now_real))
        for _ in range(20):
            held = self._held.get(key)
            if held and held[0].through >= through:
                return False
            try:
                if held is None:
                    revision = await self.kv.create(key, value)
                else:
                    revision = await self.kv.update(key, value, last=held[1])
            except KeyWrongLastSequenceError:
                await self._reload(key)
                continue
            self._held[key] = (Cursor(through=through, by=self.replica, at=now_real), revision)
            return True
        raise RuntimeError(f"cursor {key}: 20 conflicting updates in a row")

    async def _reload(self, key: str) -> None:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            self._held.pop(key, None)
            return
        self._held[key] = (decode_cursor(entry.value), entry.revision)


async def already_published(js, stream: str, subject: str, msg_id: str,
                            since: datetime, *, timeout_s: float = 10.0) -> bool:
    """Whether ``stream`` holds a message with ``Nats-Msg-Id`` ``msg_id`` on ``subject``
    stored at or after ``since`` (reads headers only, from that time on)."""
    config = js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.BY_START_TIME, opt_start_time=since,
        ack_policy=js_api.AckPolicy.NONE, headers_only=True, inactive_threshold=30.0)
    sub = await js.pull_subscribe(subject, stream=stream, config=config)
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except TimeoutError:  # nats-py raises asyncio's (the builtin) or its own
                return False  # nothing more after ``since``
            for m in msgs:
                if (m.headers or {}).get("Nats-Msg-Id") == msg_id:
                    return True
            if msgs and msgs[-1].metadata.num_pending == 0:
                return False
        raise TimeoutError(f"could not read {subject} in {stream} within {timeout_s} s")
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


async def purge_claims_before(js, before_real: float) -> int:
    """Drop every claim recorded before real epoch second ``before_real``; returns the
    first sequence kept (0 when nothing was purged)."""
    stream = f"KV_{SLOTS_BUCKET}"
    config = js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
        opt_start_time=datetime.fromtimestamp(before_real, UTC),
        ack_policy=js_api.AckPolicy.NONE, headers_only=True, inactive_threshold=30.0)
    try:
        sub = await js.pull_subscribe(f"$KV.{SLOTS_BUCKET}.>", stream=stream, config=config)
    except NotFoundError:
        return 0
    try:
        try:
            msgs = await sub.fetch(1, timeout=2.0)
        except TimeoutError:
            msgs = []
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    if msgs:
        first_kept = msgs[0].metadata.sequence.stream
    else:  # nothing recorded since: everything before is old
        first_kept = (await js.stream_info(stream)).state.last_seq + 1
    if first_kept <= 1:
        return 0
    await js.purge_stream(stream, seq=first_kept)
    return first_kept
