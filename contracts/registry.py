"""Which events exist, how they are encoded, and one typed decoder per family.

The family is the first part of an event's tag (``readings`` in ``readings.normalised``)
and maps one-to-one to a stream.  A stream's decoder only knows its own family's
events, so a new event type in one family cannot break consumers of another.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Union

import msgspec

from contracts.alerts import ALERT_EVENTS
from contracts.base import Event, event_type
from contracts.config import ConfigChanged
from contracts.forecasts import ForecastIssued, ForecastModelTrained
from contracts.kpis import KpiComputed
from contracts.schedules import (
    ScheduleAcknowledged, ScheduleApproved, ScheduleDeviated, ScheduleProposed,
    ScheduleReleased,
)
from contracts.simulations import SimulationCompleted
from contracts.weather import WeatherForecastReceived
from contracts.tasks import (
    TaskCancelled, TaskCancelRequested, TaskCompleted, TaskFailed, TaskProgressed,
    TaskRequested, TaskStarted,
)
from contracts.deadletters import MessageDeadLettered
from contracts.errors import ContractError
from contracts.intake import IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.readings import ReadingsNormalised, ReadingsRejected, ReadingsReported

# family -> every event type (all versions) that may appear on that family's stream
FAMILIES: dict[str, tuple[type[Event], ...]] = {
    "intake": (RawIntakeReceived, IntakeParsed, IntakeFailed),
    "readings": (ReadingsReported, ReadingsNormalised, ReadingsRejected),
    "deadletter": (MessageDeadLettered,),
    "config": (ConfigChanged,),
    "kpi": (KpiComputed,),
    "forecast": (ForecastModelTrained, ForecastIssued),
    "weather": (WeatherForecastReceived,),
    "schedule": (ScheduleProposed, ScheduleApproved, ScheduleReleased, ScheduleAcknowledged,
                 ScheduleDeviated),
    "simulation": (SimulationCompleted,),
    "task": (TaskRequested, TaskStarted, TaskProgressed, TaskCompleted, TaskFailed,
             TaskCancelled, TaskCancelRequested),
    "alert": ALERT_EVENTS,
}

# old event type -> pure function returning the current event (breaking changes only)
UPCASTERS: dict[type[Event], Callable[[Event], Event]] = {}

CONTENT_TYPE = "application/msgpack"
_encoder = msgspec.msgpack.Encoder()


def family_of(cls_or_event) -> str:
    return event_type(cls_or_event).split(".", 1)[0]


def all_event_types() -> list[type[Event]]:
    return [t for types in FAMILIES.values() for t in types]


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


@cache
def decoder_for(family: str) -> msgspec.msgpack.Decoder:
    try:
        types = FAMILIES[family]
    except KeyError:
        raise ContractError(f"unknown event family {family!r}; known: {sorted(FAMILIES)}")
    union = types[0] if len(types) == 1 else Union[types]  # noqa: UP007 - runtime union
    return msgspec.msgpack.Decoder(union)


def decode(family: str, data: bytes) -> Event:
    """Decode one message of ``family`` and upcast it to the current version.

    Raises ``msgspec.DecodeError`` for malformed bytes and ``msgspec.ValidationError``
    for a message that breaks the contract (both are subclasses of msgspec.DecodeError).
    """
    event = decoder_for(family).decode(data)
    while type(event) in UPCASTERS:
        event = UPCASTERS[type(event)](event)
    return event
