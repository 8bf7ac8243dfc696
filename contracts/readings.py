"""Readings: sensor values as reported by a source, normalised to SI, or rejected.

Readings travel in batches (one message holds many series), never one message per
reading.  A series is one sensor's values; timestamps are UTC epoch nanoseconds.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

import msgspec

from contracts.base import Event

# The one rule for sensor ids, whatever door readings come through (and what the API
# accepts in its paths): a letter or digit, then letters, digits, _ . : - ; 128 at most.
SENSOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def sensor_id_problem(sensor_id: object) -> str | None:
    """Why ``sensor_id`` is not a valid sensor id, or None if it is."""
    if not isinstance(sensor_id, str):
        return f"expected text, got {type(sensor_id).__name__}"
    if not SENSOR_ID_RE.match(sensor_id):
        shown = sensor_id if len(sensor_id) <= 40 else sensor_id[:40] + "..."
        return (f"sensor id {shown!r} ({len(sensor_id)} characters) must match "
                f"{SENSOR_ID_RE.pattern}: a letter or digit, then letters, digits, "
                f"'_', '.', ':' or '-', at most 128 characters")
    return None


class Series(msgspec.Struct, frozen=True, kw_only=True):
    """One sensor's readings in one batch.

    ``unit`` is the unit the values are in (as reported, or the SI unit after
    normalisation); ``timestamps_ns`` are UTC epoch ns, one per value;
    ``quality`` is empty (all good) or one flag per value (see ``Quality``).
    """

    sensor_id: str
    unit: str
    timestamps_ns: list[int]
    values: list[float]
    quality: list[int] = []

    def __post_init__(self) -> None:
        if len(self.timestamps_ns) != len(self.values):
            raise ValueError(
                f"series {self.sensor_id!r}: {len(self.timestamps_ns)} timestamps "
                f"but {len(self.values)} values"
            )
        if self.quality and len(self.quality) != len(self.values):
            raise ValueError(
                f"series {self.sensor_id!r}: {len(self.quality)} quality flags "
                f"for {len(self.values)} values"
            )


class Quality:
    """Quality flags (int codes, stable)."""

    GOOD = 0
    SUSPECT = 1  # accepted but flagged (e.g. interpolated by the source)


class ReadingsReported(Event, frozen=True, kw_only=True, tag="readings.reported"):
    """A source reported readings in its own units (a push endpoint, a poller, a demo)."""

    source: str
    series: list[Series]


class ReadingsNormalised(Event, frozen=True, kw_only=True, tag="readings.normalised"):
    """Readings accepted and converted to SI units (``unit`` says which)."""

    source: str
    series: list[Series]

    @property
    def reading_count(self) -> int:
        return sum(len(s.values) for s in self.series)


# Why a value was not accepted: one list for every door (file, line protocol, JSON push,
# poller, readings.reported).  Stable codes: dashboards and alerts count them.
RejectReason = Literal[
    "missing",                 # blank, null, NaN or one of the mapping's missing-value markers
    "non_numeric",             # not a number in the source's notation (or infinite)
    "out_of_range",            # outside the sensor's physical range
    "duplicate",               # this upload already has a value for this sensor and instant
    "unparseable_time",        # the time cannot be read in the expected format
    "naive_time",              # a wall-clock time without offset, and no zone configured
    "nonexistent_local_time",  # the wall-clock time falls in the spring-forward gap
    "ambiguous_local_time",    # the repeated autumn hour, and the policy is to refuse it
    "implausible_time",        # before 1970 or further in the future than the window allows
    "invalid_sensor_id",       # the sensor id breaks SENSOR_ID_RE
    "unknown_unit",            # no unit, or one without an SI conversion
    "unknown_column",          # a file column the mapping does not name
    "unknown_sensor",          # a long-layout sensor code the mapping does not name
    "malformed_row",           # a row, line or item that cannot be read at all
    "truncated_row",           # an unterminated last line: the file was probably cut
]
REJECT_REASONS: tuple[str, ...] = get_args(RejectReason)


class RejectedReading(msgspec.Struct, frozen=True, kw_only=True):
    """Why input was not accepted.  ``reason`` is a stable code, ``detail`` says more.

    One entry stands for ``count`` values (a whole series rejected for an unknown unit
    is one entry with ``count`` = its length), so accepted + rejected = received holds
    by summing ``count``.
    """

    row: int | None
    sensor_id: str | None
    raw: str
    reason: str
    detail: str = ""
    count: int = 1


class ReadingsRejected(Event, frozen=True, kw_only=True, tag="readings.rejected"):
    """Input that could not become readings, with one reason per rejected item."""

    source: str
    rejected: list[RejectedReading]
