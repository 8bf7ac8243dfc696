"""Builders and bus helpers shared by the tests."""

from __future__ import annotations

import asyncio
import time

import msgspec
from nats.aio.client import Client
from nats.js.errors import NotFoundError

from contracts.base import derive_id, utc_now
from contracts.readings import ReadingsReported, Series

T0_NS = 1_546_300_800_000_000_000  # 2019-01-01T00:00:00Z


def reported(i: int, *, tenant: str = "acme", n: int = 3, unit: str = "l/s") -> ReadingsReported:
    now = utc_now()
    return ReadingsReported(
        event_id=derive_id("test-input", tenant, i), tenant=tenant, occurred_at=now,
        recorded_at=now, source="test",
        series=[Series(sensor_id=f"s{i % 5}", unit=unit,
                       timestamps_ns=[T0_NS + (i * n + k) * 60_000_000_000 for k in range(n)],
                       values=[float(i + k) for k in range(n)])])


async def reset_jetstream(nc: Client) -> None:
    """Delete every stream (and with them consumers, KV and object buckets)."""
    js = nc.jetstream()
    for name in await js.streams_info():
        await js.delete_stream(name.config.name)


async def stream_messages(nc: Client, stream: str, subject: str | None = None):
    """Every message stored in ``stream`` (optionally one subject filter), in order."""
    js = nc.jetstream()
    info = await js.stream_info(stream)
    out = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        try:
            m = await js.get_msg(stream, seq)
        except NotFoundError:
            continue
        if subject is None or _matches(subject, m.subject):
            out.append(m)
    return out


def _matches(pattern: str, subject: str) -> bool:
    p, s = pattern.split("."), subject.split(".")
    for i, tok in enumerate(p):
        if tok == ">":
            return len(s) > i
        if i >= len(s) or (tok != "*" and tok != s[i]):
            return False
    return len(p) == len(s)


async def eventually(check, timeout_s: float = 30.0, interval_s: float = 0.05, what: str = ""):
    """Await ``check()`` (sync or async) until truthy; fail with ``what`` after timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or check}: last={last!r}")


def decode_any(data: bytes):
    return msgspec.msgpack.decode(data)
