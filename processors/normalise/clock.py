"""One DST clock for every door: timestamps -> UTC epoch ns, or a fault with a reason.

Input is the timestamp cells of each row (text, spreadsheet datetimes, numbers), read as
the mapping's ``timestamp`` says: ``format`` (``iso``, ``auto`` = ISO text or epoch-ms
numbers, ``excel-serial``, ``epoch-s|ms|us|ns``, or a strptime pattern) and
``timezone`` (the wall clock's IANA zone; ``None`` on a push door means only times with
an offset are known, wall-clock ones are ``naive_time``).  Times carrying an offset are
taken as they are.  Wall-clock times go through the zone: the spring-forward gap is
``nonexistent_local_time``; the repeated autumn hour follows ``ambiguous``: ``infer``
(the first pass is summer time, per sensor key), ``dst``, ``standard`` or ``reject``
(``ambiguous_local_time``); unset, the door's default applies (files ``infer``: a file
holds both passes in order; push doors ``reject``: one push cannot tell which pass).  Unreadable: ``unparseable_time``.

Pure.
"""

from __future__ import annotations

import math
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from contracts.mapping import TimestampSpec
from processors.normalise.numbers import Numbers, stamp_text
from processors.normalise.rules import DAY_NS, NAT

_EXCEL_EPOCH_DAYS = 25_569  # 1899-12-30 .. 1970-01-01
# readable instants: what int64 ns (pandas) can hold; plausibility is the window's job
_FIRST_NS, _LAST_NS = pd.Timestamp.min.value + 1, pd.Timestamp.max.value
_EPOCH_NS = {"epoch-s": 10**9, "epoch-ms": 10**6, "epoch-us": 10**3, "epoch-ns": 1}

class Clock:
    """Raw timestamp cells -> UTC epoch ns, resolving the repeated autumn hour across chunks.

    ``infer`` takes the first pass through an ambiguous hour as summer time and switches
    to winter time when the wall clock goes back (per sensor in long layout); a file in
    descending time order is recognised and resolved the other way round.
    """

    def __init__(self, spec: TimestampSpec, numbers: Numbers, *,
                 ambiguous: str = "infer") -> None:
        self.spec, self.numbers = spec, numbers
        self.ambiguous = spec.ambiguous or ambiguous
        self.prev: dict[Any, int] = {}  # last valid wall time per key
        self.folds: dict[tuple[Any, int], list] = {}  # (key, local day) -> [last, switched, desc]
        self.shifts = False  # does the zone change its offset over the year?
        if spec.timezone is not None:
            zone = ZoneInfo(spec.timezone)
            offsets = {zone.utcoffset(datetime(y, mo, 1)) for y in (2000, 2024) for mo in (1, 7)}
            self.shifts = len(offsets) > 1

    def to_utc(self, stamps: list[tuple | None], keys: list | None
               ) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
        """UTC epoch ns per row (NAT where a fault is given) and the fault (reason, detail)."""
        n = len(stamps)
        wall = np.full(n, NAT, np.int64)
        fixed = np.full(n, NAT, np.int64)  # instants that carry their own offset (epoch, %z)
        texts: list[str] = []
        where: list[int] = []
        for k, cells in enumerate(stamps):
            if cells is None:
                continue
            if len(cells) == 1 and type(cells[0]) is str:
                texts.append(cells[0].strip())
                where.append(k)
                continue
            native = self._native(cells)
            if native is None:
                texts.append(stamp_text(cells))
                where.append(k)
            elif native[0]:
                fixed[k] = native[1]
            else:
                wall[k] = native[1]
        if texts:
            w, f = self._parse_texts(texts)
            wall[where], fixed[where] = w, f
        utc, faults = self._localize(wall, keys)
        utc = np.where(fixed != NAT, fixed, utc)
        detail = f"expected a time in format {self.spec.format!r}"
        for k in np.flatnonzero((wall == NAT) & (fixed == NAT)).tolist():
            if faults[k] is None and stamps[k] is not None:
                faults[k] = ("unparseable_time", detail)
        for k, f in enumerate(faults):
            if f is not None:
                utc[k] = NAT
        return utc, faults

    def _native(self, cells: tuple) -> tuple[bool, int] | None:
        """(is_utc, ns) for spreadsheet datetimes and numbers; None means parse as text."""
        first = cells[0]
        if len(cells) == 1 and isinstance(first, datetime):
            return (first.tzinfo is not None, _native_ns(first))
        if isinstance(first, date) and (len(cells) == 1 or isinstance(cells[1], time)):
            moment = datetime.combine(first if not isinstance(first, datetime) else first.date(),
                                      cells[1] if len(cells) > 1 else time())
            return (False, _native_ns(moment)) if len(cells) <= 2 else None
        if len(cells) == 1 and type(first) in (int, float) and self.spec.format != "iso":
            return self._number_time(first)
        return None

    def _number_time(self, v: float | int) -> tuple[bool, int] | None:
        fmt = "epoch-ms" if self.spec.format == "auto" else self.spec.format
        if "%" in fmt or not math.isfinite(v):
            return None
        if fmt == "excel-serial":
            ns = round((v - _EXCEL_EPOCH_DAYS) * 86_400_000) * 10**6
        elif isinstance(v, int):  # exact: epoch integers keep every digit
            ns = v * _EPOCH_NS[fmt]
        else:
            ns = round(v * _EPOCH_NS[fmt] / 10**3) * 10**3 if fmt != "epoch-ns" else round(v)
        return (fmt != "excel-serial", ns) if _FIRST_NS <= ns < _LAST_NS else (False, NAT)

    def _parse_texts(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        fmt, n = self.spec.format, len(texts)
        wall, fixed = np.full(n, NAT, np.int64), np.full(n, NAT, np.int64)
        if fmt in ("excel-serial", *_EPOCH_NS):
            for k, text in enumerate(texts):
                v = int(text) if text.lstrip("+-").isdigit() else self.numbers.one(text)
                got = self._number_time(v) if v is not None else None
                if got:
                    (fixed if got[0] else wall)[k] = got[1]
            return wall, fixed
        s = pd.Series(texts, dtype=object)
        if fmt == "auto":
            fmt = "iso"
        if fmt == "iso":
            aware = s.str.contains(r"(?:Z|[+-]\d\d(?::?\d\d)?)$", regex=True).to_numpy(bool)
        else:
            aware = np.full(n, "%z" in fmt)
        for mask, target, utc in ((~aware, wall, False), (aware, fixed, True)):
            if mask.any():
                got = pd.to_datetime(s[mask], format="ISO8601" if fmt == "iso" else fmt,
                                     errors="coerce", utc=utc)
                if utc:
                    got = got.dt.tz_localize(None)
                got = got.where(got.notna())
                target[mask] = got.astype("datetime64[ns]").to_numpy().view(np.int64)
        return wall, fixed

    def _localize(self, wall: np.ndarray, keys: list | None
                  ) -> tuple[np.ndarray, list[tuple[str, str] | None]]:
        n, zone = len(wall), self.spec.timezone
        faults: list[tuple[str, str] | None] = [None] * n
        if zone is None:  # a push door without a zone: only times with an offset are known
            for k in np.flatnonzero(wall != NAT).tolist():
                faults[k] = ("naive_time", "the time has no zone offset and the mapping names "
                                           "no timestamp.timezone: add 'Z' or an offset "
                                           "such as +01:00")
            return np.full(n, NAT, np.int64), faults
        index = pd.DatetimeIndex(wall.view("M8[ns]"))
        summer = index.tz_localize(zone, ambiguous=np.ones(n, bool), nonexistent="NaT").asi8
        winter = index.tz_localize(zone, ambiguous=np.zeros(n, bool), nonexistent="NaT").asi8
        valid = wall != NAT
        for k in np.flatnonzero(valid & (summer == NAT)).tolist():
            faults[k] = ("nonexistent_local_time",
                         f"this wall-clock time does not exist in {zone} (clocks jump forward)")
        utc = summer.copy()
        ambiguous = valid & (summer != NAT) & (summer != winter)
        if self.ambiguous == "standard":
            utc[ambiguous] = winter[ambiguous]
        elif self.ambiguous == "reject":
            for k in np.flatnonzero(ambiguous).tolist():
                faults[k] = ("ambiguous_local_time",
                             f"this wall-clock time happens twice in {zone} (clocks go back) "
                             "and the mapping refuses to guess (ambiguous: reject): send a "
                             "zone offset")
            utc[ambiguous] = NAT
        elif self.ambiguous == "infer" and self.shifts:
            amb = ambiguous.tolist()
            for k, t in enumerate(wall.tolist()):
                if t == NAT:
                    continue
                key = keys[k] if keys else None
                if amb[k] and not self._is_summer(key, t):
                    utc[k] = winter[k]
                self.prev[key] = t
        return utc, faults

    def _is_summer(self, key: Any, t: int) -> bool:
        fold = self.folds.get((key, t // DAY_NS))
        if fold is None:
            prev = self.prev.get(key)
            fold = self.folds[(key, t // DAY_NS)] = [t, False, prev is not None and prev > t]
        elif not fold[1] and (t >= fold[0] if fold[2] else t <= fold[0]):
            fold[1] = True
        fold[0] = t
        return fold[1] == fold[2]  # ascending: summer until the switch; descending: after it


def _native_ns(moment: datetime) -> int:
    """Epoch ns of a spreadsheet datetime, rounded to the millisecond (Excel's float noise)."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    if not pd.Timestamp.min < stamp < pd.Timestamp.max:
        return NAT
    return round(stamp.as_unit("ns").value / 10**6) * 10**6
