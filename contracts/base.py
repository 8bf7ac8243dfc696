"""The envelope every event carries, tenant ids, and deterministic event ids."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import msgspec

from contracts.errors import ContractError

TENANT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
# Namespace for uuid5 ids derived from other ids; never change it (ids would change).
_ID_NAMESPACE = uuid.UUID("6f1c6a52-3d0e-4d5e-9a43-2b8e8f1c7a10")


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Envelope shared by every event.

    - ``event_id``: unique; deterministic (``derive_id``) when derived from another event,
      so a re-processed input yields the same output ids and JetStream drops the copy.
    - ``tenant``: the utility this event belongs to; always a subject token too.
    - ``occurred_at``: event time (UTC), e.g. when an upload arrived or a batch was measured.
    - ``recorded_at``: when Tagus wrote this event (UTC).
    - ``causation_id``: the event this one was derived from (None for an origin event).
    - ``correlation_id``: the origin event of the whole chain (a trace of business work).
    - ``schema``: version of this event type's schema (see contracts/VERSIONING.md).

    Subclasses set ``tag="family.name"``: the family picks the stream, the name the
    last subject token.  Unknown fields are ignored on decode, so old consumers read
    new events.
    """

    event_id: str
    tenant: str
    occurred_at: datetime
    recorded_at: datetime
    causation_id: str | None = None
    correlation_id: str | None = None
    schema: int = 1

    def __post_init__(self) -> None:
        if not TENANT_RE.match(self.tenant):
            raise ContractError(
                f"tenant must match {TENANT_RE.pattern} (lower-case letters, digits, '-' "
                f"or '_', starting with a letter or digit); got {self.tenant!r}"
            )
        if self.occurred_at.tzinfo is None or self.recorded_at.tzinfo is None:
            raise ContractError("occurred_at and recorded_at must be timezone-aware UTC")


def event_type(cls_or_event) -> str:
    """The stable dotted tag of an event class or instance (``"readings.normalised"``)."""
    cls = cls_or_event if isinstance(cls_or_event, type) else type(cls_or_event)
    return cls.__struct_config__.tag


def new_id() -> str:
    return str(uuid.uuid4())


def derive_id(*parts: str | int) -> str:
    """Deterministic id from the parts (input event id, processor, output index...)."""
    return str(uuid.uuid5(_ID_NAMESPACE, "/".join(str(p) for p in parts)))


def utc_now() -> datetime:
    return datetime.now(UTC)


def validate_tenant(tenant: str) -> str:
    if not TENANT_RE.match(tenant):
        raise ContractError(f"invalid tenant id {tenant!r}: expected {TENANT_RE.pattern}")
    return tenant
