from __future__ import annotations

import pytest

from bus.topology import ConsumerSpec, consumer_for, family_streams
from contracts.errors import ContractError
from contracts.intake import RawIntakeReceived
from contracts.readings import ReadingsNormalised, ReadingsReported
from ops import wiring
from ops.settings import Settings


def test_one_stream_per_family_with_dedup_window():
    streams = {s.name: s for s in family_streams()}
    assert streams["READINGS"].subjects == ("tagus.readings.>",)
    assert all(s.duplicate_window_s == 120.0 and s.max_age_s == 0 for s in streams.values())


def test_consumer_filters_exactly_the_accepted_types():
    spec = consumer_for("p", (ReadingsReported, ReadingsNormalised))
    assert spec.stream == "READINGS"
    assert spec.filter_subjects == ("tagus.readings.*.normalised", "tagus.readings.*.reported")
    with pytest.raises(ContractError, match="span families"):
        consumer_for("p", (ReadingsReported, RawIntakeReceived))


def test_max_deliver_must_exceed_backoff_steps():
    with pytest.raises(ContractError, match="max_deliver"):
        ConsumerSpec(stream="S", durable="d", filter_subjects=("a",), max_deliver=2,
                     backoff_s=(1.0, 2.0))


def test_backoff_follows_settings_and_nak_delay_walks_it():
    s = Settings(consumer_ack_wait_s=30, consumer_max_deliver=5)
    assert wiring.backoff_s(s) == (30.0, 60.0, 120.0, 240.0)
    spec = wiring.topology(s).consumer("normalise-units")
    assert [spec.nak_delay_s(n) for n in (1, 2, 4, 9)] == [30.0, 60.0, 240.0, 240.0]
