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
    """Delete every stream (and with them consumers, KV and object buckets), except
    nats-server's own MQTT streams (``$MQTT_*``): without them its MQTT listener stops
    answering until the server restarts."""
    js = nc.jetstream()
    for name in await js.streams_info():
        if not name.config.name.startswith("$MQTT_"):
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


async def stream_events(nc: Client, stream: str, family: str, subject: str | None = None,
                        *, timeout_s: float = 120.0):
    """Every event in ``stream`` (decoded), fast: one ephemeral pull consumer, big fetches.
    Done when the consumer has nothing pending, not at the first slow fetch (a loaded
    machine or a leader change would otherwise return part of the stream, and the
    invariant below would check fewer uploads without saying so)."""
    from nats.errors import TimeoutError as NatsTimeout
    from nats.js.errors import NotFoundError as JsNotFound, ServiceUnavailableError

    from contracts.registry import decode

    js = nc.jetstream()
    try:
        info = await js.stream_info(stream)
    except JsNotFound:
        return []
    if info.state.messages == 0:
        return []
    sub = await js.pull_subscribe(subject or f"tagus.{family}.>", stream=stream)
    out = []
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                msgs = await sub.fetch(1000, timeout=2)
            except (NatsTimeout, TimeoutError, ServiceUnavailableError):
                msgs = []
            for m in msgs:
                out.append(decode(family, m.data))
                await m.ack()
            try:
                if (await sub.consumer_info()).num_pending == 0:
                    break
            except (ServiceUnavailableError, NatsTimeout, TimeoutError):
                pass  # a cluster electing a leader answers again shortly: read on
            if time.monotonic() > deadline:
                raise AssertionError(f"{stream}: {len(out)} events read in {timeout_s:g} s, "
                                     f"more pending")
    finally:
        await sub.unsubscribe()
    return out


async def assert_accepted_were_stored(nc: Client, settings) -> int:
    """The invariant of the readings path, checked after every test that uses the bus:
    for every upload, the readings ``intake.parsed`` counts as accepted were published as
    ``readings.normalised`` (a weather-forecast upload's: as the values of its
    ``weather.forecast_received``); and when the ``questdb-readings`` projection has
    caught up, every reading is a row in QuestDB.  Returns the number of uploads checked."""
    from nats.js.errors import NotFoundError as JsNotFound

    from contracts.intake import IntakeParsed
    from contracts.readings import ReadingsNormalised
    from ops.wiring import pg_connection

    parsed = [e for e in await stream_events(nc, "INTAKE", "intake")
              if isinstance(e, IntakeParsed)]
    if not parsed:
        return 0
    readings = [e for e in await stream_events(nc, "READINGS", "readings", "tagus.readings.*.normalised")
                if isinstance(e, ReadingsNormalised)]
    by_cause: dict[str, list] = {}
    for e in readings:
        by_cause.setdefault(e.causation_id, []).append(e)
    forecast_values: dict[str, int] = {}
    for e in await stream_events(nc, "WEATHER", "weather"):
        forecast_values[e.causation_id] = forecast_values.get(e.causation_id, 0) + sum(
            v == v for ws in e.series for v in ws.values)  # NaN: not a value
    versions: dict[str, int] = {}
    for p in parsed:
        versions[p.intake_id] = versions.get(p.intake_id, 0) + 1
    for p in parsed:
        if versions[p.intake_id] > 1:
            continue  # re-parsed under another mapping: its outputs cannot be told apart
        published = (sum(e.reading_count for e in by_cause.get(p.intake_id, []))
                     + forecast_values.get(p.intake_id, 0))
        assert published == p.values_accepted, (
            f"upload {p.intake_id} ({p.tenant}): intake.parsed says {p.values_accepted} "
            f"accepted, {published} readings were published")
    js = nc.jetstream()
    try:
        info = await js.consumer_info("READINGS", "questdb-readings")
    except JsNotFound:
        return len(parsed)
    if info.num_pending or info.num_ack_pending:
        return len(parsed)  # the test stopped the projection before it caught up
    from ops.wiring import questdb

    questdb(settings).wait_for_wal("readings", timeout_s=60)
    want: dict[tuple[str, str], set[int]] = {}
    for p in parsed:
        for e in by_cause.get(p.intake_id, []):
            for s in e.series:
                want.setdefault((e.tenant, s.sensor_id), set()).update(
                    t // 1000 for t in s.timestamps_ns)  # QuestDB keeps microseconds
    conn = await pg_connection(settings)
    try:
        for (tenant, sensor), instants in want.items():
            lo, hi = min(instants), max(instants)
            rows = await conn.fetch(
                "SELECT ts FROM readings WHERE tenant = $1 AND sensor = $2 "
                "AND ts >= $3 AND ts <= $4", tenant, sensor, _utc(lo), _utc(hi))
            have = {_us(r["ts"]) for r in rows}
            missing = instants - have
            assert not missing, (
                f"{len(missing)} accepted readings of {tenant}/{sensor} are not in QuestDB, "
                f"e.g. {sorted(missing)[:3]} (µs)")
    finally:
        await conn.close()
    return len(parsed)


def _utc(us: int):
    from datetime import UTC, datetime, timedelta

    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)).replace(tzinfo=None)


def _us(ts) -> int:
    from datetime import datetime

    return (ts - datetime(1970, 1, 1)) // __import__("datetime").timedelta(microseconds=1)
