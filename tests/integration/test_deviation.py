"""Deviation through the real runner: a planted off-schedule pump reading against a
released schedule becomes ``schedule.deviated``; the runner loads the schedule as of the
batch and the bindings from the tenant's configuration."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from bus.publish import publish
from bus.topology import Topology
from contracts.base import derive_id, utc_now
from contracts.readings import ReadingsNormalised, Series
from contracts.registry import decode
from contracts.schedules import ScheduleDeviated
from ops import wiring
from ops.config_service import ConfigStore
from ops.service import runner_for, wait_caught_up
from tests.helpers import stream_messages
from tests.schedule_support import released

pytestmark = pytest.mark.servers
START = datetime(2024, 5, 1, 0, 0, tzinfo=UTC)


def pump_readings(tenant: str, i: int, hour: int, status: float) -> ReadingsNormalised:
    now = utc_now()
    t0 = START + timedelta(hours=hour)
    return ReadingsNormalised(
        event_id=derive_id("test-pump-readings", tenant, i), tenant=tenant, occurred_at=now,
        recorded_at=now, source="scada", series=[Series(
            sensor_id="pmp1_on", unit="1", values=[status] * 6,
            timestamps_ns=[int((t0 + timedelta(minutes=10 * k)).timestamp()) * 10**9
                           for k in range(6)])])


async def test_a_planted_off_schedule_reading_becomes_schedule_deviated(nc, fast_settings,
                                                                         shared_data):
    tenant = f"dev-{uuid.uuid4().hex[:6]}"

    async def sensors(t: str) -> set[str]:
        return {"pmp1_on"}

    store = ConfigStore(nc.jetstream(), known_sensors=sensors)
    await store.create_tenant(tenant, display_name="Van Zyl", timezone="Europe/Lisbon",
                              author="test")
    await store.put(tenant, "network", (shared_data / "pumpsched" / "vanzyl" / "van_zyl.inp")
                    .read_bytes(), author="test")
    await store.put(tenant, "assets", {"bindings": [
        {"sensor": "pmp1_on", "role": "pump_status", "element": "pmp1"}]}, author="test")
    schedule = released(tenant, 2, START, {"pmp1": [1.0, 1.0, 0.0], "pmp2": [0.0, 1.0, 1.0]})
    await publish(nc.jetstream(), schedule)
    for i, (hour, status) in enumerate([(0, 1.0), (1, 0.0), (2, 0.0)]):  # 01:00-02:00 off
        await publish(nc.jetstream(), pump_readings(tenant, i, hour, status))

    component = wiring.components(fast_settings)["deviation"]
    spec = wiring.topology(fast_settings).consumer("deviation")
    stop = asyncio.Event()
    runner = runner_for(nc, component, spec)
    task = asyncio.create_task(runner.run(stop))
    try:
        await wait_caught_up(nc, Topology(streams=(), consumers=(spec,)), timeout_s=30)
    finally:
        stop.set()
        await task
    assert runner.stats.handled == 3 and runner.stats.dead_lettered == 0
    deviated = [decode("schedule", m.data) for m in await stream_messages(
        nc, "SCHEDULE", f"tagus.schedule.{tenant}.deviated")]
    (event,) = deviated
    assert isinstance(event, ScheduleDeviated)
    assert (event.pump, event.expected, event.observed, event.sensor) == ("pmp1", 1.0, 0.0,
                                                                          "pmp1_on")
    assert event.period_start == START + timedelta(hours=1)
    assert event.schedule_id == schedule.schedule_id
    assert event.detail.startswith("pump pmp1 should have been on from 2024-05-01 02:00 to "
                                   "03:00 (Europe/Lisbon)")
