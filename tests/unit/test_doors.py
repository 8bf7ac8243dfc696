"""One rulebook: the same readings end the same way whatever door they come through.

The readings include a bad time, an out-of-range value, a missing marker, the repeated
autumn hour (both passes) and the nonexistent spring hour.  Every door that can express
a case must accept the same readings (sensor, UTC instant, SI value) and reject the
same values for the same reasons.  Line protocol and ``readings.reported`` carry UTC
epoch times, so they cannot express a wall-clock fault; they get the rest.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import msgspec
import pytest

from bus.components import Context
from contracts.mapping import PollMapping, SourceMapping
from contracts.readings import REJECT_REASONS, ReadingsReported, Series
from processors.normalise import reported
from processors.normalise.jsonpush import parse_json_push, parse_polled
from processors.normalise.lineprotocol import parse_line_protocol
from processors.normalise.rules import merge
from processors.normalise.tabular import parse_tabular

ROME = ZoneInfo("Europe/Rome")
RECEIVED = datetime(2021, 11, 2, tzinfo=UTC)
RECEIVED_NS = int(RECEIVED.timestamp()) * 10**9
FMT = "%Y-%m-%d %H:%M"

# (wall-clock time in Rome, value as written); the autumn 02:30 appears twice, in order
ROWS = [
    ("2021-10-31 01:30", "10"),
    ("2021-10-31 02:30", "20"),   # first pass: summer time (UTC+2)
    ("2021-10-31 02:30", "21"),   # second pass: winter time (UTC+1)
    ("2021-03-28 02:30", "30"),   # does not exist: clocks jump from 02:00 to 03:00
    ("not a time", "40"),
    ("2021-10-31 03:30", "500"),  # out of the physical range [0, 100] m3/h
    ("2021-10-31 04:30", "#N/A"),  # a missing-value marker
    ("2021-10-31 05:30", "abc"),  # not a number
    ("2021-10-31 01:30", "11"),   # the same instant again in one upload
]
WALL_FAULTS = {"2021-03-28 02:30", "not a time"}
SENSORS = {"p1": {"id": "p1", "unit": "m3/h", "range": [0, 100]}}
TIMESTAMP = {"format": FMT, "timezone": "Europe/Rome", "ambiguous": "infer"}


def utc_ns(wall: str, fold: int) -> int:
    local = datetime.strptime(wall, FMT).replace(tzinfo=ROME, fold=fold)
    return int(local.timestamp()) * 10**9


def epoch_rows() -> list[tuple[int, str]]:
    """The rows a UTC-epoch door can carry: the wall-clock faults left out."""
    out, seen = [], set()
    for wall, value in ROWS:
        if wall in WALL_FAULTS:
            continue
        fold = 1 if wall in seen and wall.endswith("02:30") else 0
        seen.add(wall)
        out.append((utc_ns(wall, fold), value))
    return out


def outcome(chunk) -> tuple[set, Counter]:
    accepted = {(s.sensor_id, t, round(v, 12)) for s in chunk.series
                for t, v in zip(s.timestamps_ns, s.values, strict=True)}
    reasons = Counter()
    for r in chunk.rejected:
        reasons[r.reason] += r.count
    return accepted, reasons


def via_csv():
    text = "time;p1\n" + "".join(f"{w};{v}\n" for w, v in ROWS)
    mapping = SourceMapping.model_validate({
        "format": "csv", "delimiter": ";", "timestamp": {"column": "time", **TIMESTAMP},
        "sensors": SENSORS})
    return merge(parse_tabular(io.BytesIO(text.encode()), mapping,
                               received_at_ns=RECEIVED_NS))


def _json_value(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def via_json_push():
    body = {"readings": [{"sensor": "p1", "ts": w, "value": _json_value(v)} for w, v in ROWS]}
    mapping = SourceMapping.model_validate({"timestamp": TIMESTAMP, "sensors": SENSORS})
    return parse_json_push(msgspec.json.encode(body), mapping=mapping,
                           received_at_ns=RECEIVED_NS)


def via_poller():
    body = json.dumps({"data": [{"tag": "p1", "t": w, "v": _json_value(v)} for w, v in ROWS]})
    # a poller's shorthand cannot carry ranges or the ambiguous policy: the rulebook's
    # defaults apply (push doors refuse the ambiguous hour), compared below
    poll = PollMapping(items="data[*]", sensor="tag", ts="t", value="v",
                       units={"p1": "m3/h"}, ts_format=FMT, timezone="Europe/Rome")
    return parse_polled(body.encode(), {"mapping": poll.model_dump_json()},
                        received_at_ns=RECEIVED_NS)


def via_line_protocol():
    lines = [f'flow,site=p1 v={v if v[0].isdigit() else json.dumps(v)} {t}'
             for t, v in epoch_rows()]
    lines.insert(3, "flow,site=p1 v=40 not-a-time")
    mapping = SourceMapping.model_validate({"sensors": {"flow.p1.v": SENSORS["p1"]}})
    return parse_line_protocol("\n".join(lines).encode(), received_at_ns=RECEIVED_NS,
                               mapping=mapping)


def via_reported():
    rows = epoch_rows()
    values = [float("nan") if v == "#N/A" else float(v) for v, in
              ((v,) for _, v in rows if v != "abc")]
    times = [t for t, v in rows if v != "abc"]
    event = ReadingsReported(event_id="r1", tenant="acme", occurred_at=RECEIVED,
                             recorded_at=RECEIVED, source="test",
                             series=[Series(sensor_id="p1", unit="m3/h", timestamps_ns=times,
                                            values=values)])
    out = reported.handle(event, Context(processor=reported.NAME, now=RECEIVED, input=event))
    from processors.normalise.rules import ParsedChunk

    series = [s for e in out if hasattr(e, "series") for s in e.series]
    rejected = [r for e in out if hasattr(e, "rejected") for r in e.rejected]
    n = len(times)
    missing = sum(r.count for r in rejected if r.reason == "missing")
    refused = sum(r.count for r in rejected) - missing
    return ParsedChunk(series=series, rejected=rejected, rows_received=n,
                       rows_accepted=n - sum(r.count for r in rejected),
                       rows_rejected=sum(r.count for r in rejected), values_received=n,
                       values_accepted=n - missing - refused, values_rejected=refused,
                       values_missing=missing, first_row=1, last_row=n)


def test_file_door_accepts_and_rejects_as_expected():
    accepted, reasons = outcome(via_csv())
    si = 1 / 3600
    assert accepted == {
        ("p1", utc_ns("2021-10-31 01:30", 0), round(10 * si, 12)),
        ("p1", utc_ns("2021-10-31 02:30", 0), round(20 * si, 12)),
        ("p1", utc_ns("2021-10-31 02:30", 1), round(21 * si, 12)),
    }
    assert reasons == Counter({"nonexistent_local_time": 1, "unparseable_time": 1,
                               "out_of_range": 1, "missing": 1, "non_numeric": 1,
                               "duplicate": 1})


def test_json_push_door_is_identical_to_the_file_door():
    assert outcome(via_json_push()) == outcome(via_csv())


def test_poller_door_is_identical_except_what_its_shorthand_cannot_say():
    file_accepted, file_reasons = outcome(via_csv())
    accepted, reasons = outcome(via_poller())
    # no range in the shorthand: 500 m3/h is accepted; push default for the repeated
    # autumn hour is to refuse it (one response cannot tell the passes apart)
    autumn = {utc_ns("2021-10-31 02:30", 0), utc_ns("2021-10-31 02:30", 1)}
    assert {a for a in accepted if a[1] not in autumn and a[2] < 0.1} == {
        a for a in file_accepted if a[1] not in autumn}
    assert reasons["ambiguous_local_time"] == 2
    for reason in ("nonexistent_local_time", "unparseable_time", "missing", "non_numeric",
                   "duplicate"):
        assert reasons[reason] == file_reasons[reason], reason


def test_line_protocol_door_is_identical_where_it_can_express_the_case():
    accepted, reasons = outcome(via_line_protocol())
    file_accepted, file_reasons = outcome(via_csv())
    assert accepted == file_accepted
    assert reasons == file_reasons - Counter({"nonexistent_local_time": 1})


def test_reported_door_is_identical_where_it_can_express_the_case():
    accepted, reasons = outcome(via_reported())
    file_accepted, _ = outcome(via_csv())
    # no mapping, so no range: the 500 m3/h reading is accepted there
    assert {a for a in accepted if a[2] < 0.1} == file_accepted
    assert reasons == Counter({"missing": 1, "duplicate": 1})


@pytest.mark.parametrize("door", [via_csv, via_json_push, via_poller, via_line_protocol,
                                  via_reported])
def test_every_door_speaks_only_the_contract_reason_codes(door):
    assert {r.reason for r in door().rejected} <= set(REJECT_REASONS)
