"""Dead letters: messages a consumer could not handle, kept with the reason."""

from __future__ import annotations

from contracts.base import Event


class MessageDeadLettered(Event, frozen=True, kw_only=True, tag="deadletter.recorded"):
    """A message was taken out of circulation (``term``) and parked here.

    ``payload`` and ``headers`` are the original message as stored, so it can be
    inspected, fixed and re-published.  ``error_kind``: ``malformed`` (not decodable),
    ``invalid`` (decoded but breaks the contract), ``max_deliveries`` (failed or timed
    out on every allowed delivery), ``unroutable`` (no handler accepts its type).
    """

    stream: str
    consumer: str
    stream_seq: int
    subject: str
    payload: bytes
    headers: dict[str, str] = {}
    error_kind: str
    reason: str
    deliveries: int = 1
