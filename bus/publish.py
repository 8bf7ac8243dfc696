"""Publishing events: one encoding, the event id as ``Nats-Msg-Id``, trace context."""

from __future__ import annotations

from collections.abc import Iterable

from nats.js import JetStreamContext
from nats.js.api import PubAck

from bus import tracing
from bus.subjects import subject_for
from contracts.base import Event, event_type
from contracts.registry import CONTENT_TYPE, encode

MSG_ID = "Nats-Msg-Id"
TYPE_HEADER = "Tagus-Type"


def headers_for(event: Event) -> dict[str, str]:
    headers = {
        MSG_ID: event.event_id,
        TYPE_HEADER: event_type(event),
        "Content-Type": CONTENT_TYPE,
    }
    return tracing.inject(headers)


async def publish(js: JetStreamContext, event: Event, *, timeout: float = 10.0) -> PubAck:
    """Publish one event and wait for the stream's ack.

    A retried publish of the same event (same ``event_id``) within the stream's
    duplicate window is acknowledged with ``duplicate=True`` and stored once.
    """
    return await js.publish(
        subject_for(event), encode(event), timeout=timeout, headers=headers_for(event)
    )


async def publish_all(js: JetStreamContext, events: Iterable[Event]) -> list[PubAck]:
    """Publish in order, each acknowledged before the next (outputs keep their order)."""
    return [await publish(js, e) for e in events]
