"""Raw intake: every upload first becomes an immutable event, its bytes in an object store.

A parser or mapping fix is applied to old data by replaying ``intake.received``:
the bytes are still there, addressed by content hash.
"""

from __future__ import annotations

from contracts.base import Event


class RawIntakeReceived(Event, frozen=True, kw_only=True, tag="intake.received"):
    """An upload arrived.  Its bytes are object ``object_name`` in bucket ``bucket``.

    ``source``: how it came (``file``, ``drop-folder``, ``line-protocol``,
    ``json-push``, ``poller:<name>``).  ``content_type``: ``text/csv``,
    ``application/vnd.openxmlformats-officedocument.spreadsheetml.sheet``,
    ``text/x-influx-line-protocol``, ``application/json``.  ``mapping_id`` names the
    tenant's source mapping to parse it with; ``mapping_version`` is the sha256 of the
    mapping text at upload time.  ``params``: format options (e.g. ``precision``).
    """

    source: str
    filename: str | None = None
    bucket: str
    object_name: str
    sha256: str
    size_bytes: int
    content_type: str
    mapping_id: str | None = None
    mapping_version: str | None = None
    params: dict[str, str] = {}


class IntakeParsed(Event, frozen=True, kw_only=True, tag="intake.parsed"):
    """The accounting of one upload after parsing: nothing is dropped silently.

    Rows: ``rows_received = rows_accepted + rows_rejected`` (a row is accepted when at
    least one of its values is).  Values (one per sensor cell):
    ``values_received = values_accepted + values_rejected + values_missing``.
    ``reasons`` counts rejected and missing values by reason code.
    """

    intake_id: str
    mapping_version: str | None = None
    source: str | None = None
    filename: str | None = None
    rows_received: int
    rows_accepted: int
    rows_rejected: int
    values_received: int
    values_accepted: int
    values_rejected: int
    values_missing: int
    reasons: dict[str, int] = {}
    sensors: list[str] = []
    first_ts_ns: int | None = None
    last_ts_ns: int | None = None


# the counters of an upload's accounting, as named on IntakeParsed (and ParsedChunk)
COUNTERS = ("rows_received", "rows_accepted", "rows_rejected", "values_received",
            "values_accepted", "values_rejected", "values_missing")


class IntakeFailed(Event, frozen=True, kw_only=True, tag="intake.failed"):
    """An upload could not be parsed at all (empty, garbage, wrong mapping...)."""

    intake_id: str
    reason: str
    detail: str
    source: str | None = None
    filename: str | None = None
