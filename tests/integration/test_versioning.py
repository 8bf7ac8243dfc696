"""A breaking change is a new tag with a version: it gets a valid subject, travels through
JetStream and reaches handlers upcast (contracts/VERSIONING.md, rule 3)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.publish import publish
from bus.subjects import event_subjects, parse_subject, subject_for
from contracts import registry
from contracts.base import Event
from tests.helpers import stream_messages

pytestmark = pytest.mark.servers
T = datetime(2024, 1, 1, tzinfo=UTC)


class GaugeRead(Event, frozen=True, kw_only=True, tag="readings.gauge"):
    """Version 1: a level in metres above the gauge's own zero."""

    sensor_id: str
    value_m: float


class GaugeReadV2(Event, frozen=True, kw_only=True, tag="readings.gauge.v2"):
    """Version 2: the level with the datum it is measured from."""

    schema: int = 2
    sensor_id: str
    level_m: float
    datum: str = "gauge zero"


def upcast(old: GaugeRead) -> GaugeReadV2:
    return GaugeReadV2(event_id=old.event_id, tenant=old.tenant, occurred_at=old.occurred_at,
                       recorded_at=old.recorded_at, causation_id=old.causation_id,
                       correlation_id=old.correlation_id, sensor_id=old.sensor_id,
                       level_m=old.value_m)


@pytest.fixture
def versioned_family(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, "readings",
                        (*registry.FAMILIES["readings"], GaugeRead, GaugeReadV2))
    monkeypatch.setitem(registry.UPCASTERS, GaugeRead, upcast)
    registry.decoder_for.cache_clear()
    yield
    registry.decoder_for.cache_clear()


def test_a_versioned_tag_gives_a_four_token_subject():
    v2 = GaugeReadV2(event_id="e", tenant="acme", occurred_at=T, recorded_at=T,
                     sensor_id="T1", level_m=2.5)
    assert subject_for(v2) == "tagus.readings.acme.gauge-v2"
    assert parse_subject(subject_for(v2)) == ("readings", "acme", "gauge-v2")
    assert event_subjects(GaugeReadV2) == "tagus.readings.*.gauge-v2"


async def test_v1_and_v2_round_trip_through_the_stream_as_v2(nc, versioned_family):
    js = nc.jetstream()
    old = GaugeRead(event_id="g1", tenant="acme", occurred_at=T, recorded_at=T,
                    sensor_id="T1", value_m=2.5)
    new = GaugeReadV2(event_id="g2", tenant="acme", occurred_at=T, recorded_at=T,
                      sensor_id="T1", level_m=2.6, datum="tank bottom")
    for event in (old, new):
        await publish(js, event)
    stored = await stream_messages(nc, "READINGS")
    assert [parse_subject(m.subject) for m in stored] == [
        ("readings", "acme", "gauge"), ("readings", "acme", "gauge-v2")]
    decoded = [registry.decode("readings", m.data) for m in stored]
    assert decoded == [upcast(old), new]
    assert all(type(e) is GaugeReadV2 for e in decoded)
