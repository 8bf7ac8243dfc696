"""The ways an upload gets in, against the real servers: the drop folder, line protocol and
JSON push over real HTTP, and malformed uploads through the whole pipeline.

Every component runs in this process with the real runner; QuestDB tables are shared by
the session, so each test uses its own tenant.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import json
import random
import time
import uuid

import httpx
import pytest

from bus.runner import Runner
from bus.storage import INTAKE_BUCKET, put_mapping
from contracts.errors import TransientError
from contracts.intake import IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.registry import decode
from bus.tokens import TokenStore
from ops import wiring
from ops.service import wait_caught_up
from ops.wiring import questdb
from producers.dropfolder import DropFolder
from producers.http_intake import create_intake_app, serve_intake
from producers.intake import CONTENT_TYPES, IdempotencyConflict, Intake
from tests.conftest import REPO, free_port
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers

MAPPINGS = REPO / "tests" / "mappings"
XLSX = CONTENT_TYPES[".xlsx"]
SETTLE_S = 0.3


def _tenant(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def pipeline(nc, settings):
    """Every component of the deployment running here; on exit, everything is caught up
    and no runner has died (a crashed runner fails the test with its exception)."""
    comps, topo = wiring.components(settings), wiring.topology(settings)
    stop = asyncio.Event()
    runners = {name: Runner(nc, c, topo.consumer(name), batch=20, fetch_timeout_s=0.2)
               for name, c in comps.items()}
    tasks = {name: asyncio.create_task(r.run(stop)) for name, r in runners.items()}
    try:
        yield runners
        await wait_caught_up(nc, topo, timeout_s=60)
        dead = [n for n, t in tasks.items() if t.done()]
        assert not dead, f"runners stopped early: {dead}"
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks.values()), 30)


async def intake_events(nc, tenant: str, name: str) -> list:
    return [decode("intake", m.data)
            for m in await stream_messages(nc, "INTAKE", f"tagus.intake.{tenant}.{name}")]


def readings_of(settings, tenant: str) -> dict[tuple[int, str], tuple[float, str]]:
    db = questdb(settings)
    db.wait_for_wal("readings")
    rows = db.rows(f"select cast(ts as long), sensor, value, unit from readings "
                   f"where tenant = '{tenant}'")
    return {(ts, sensor): (value, unit) for ts, sensor, value, unit in rows}


def _approx_equal(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(
        got[k][1] == want[k][1] and abs(got[k][0] - want[k][0]) <= 1e-12 * abs(want[k][0])
        for k in want)


# ---------------------------------------------------------------- drop folder


async def test_drop_folder_ingests_settled_files_once(nc, fast_settings, shared_data, tmp_path):
    js = nc.jetstream()
    tenant = _tenant("drop")
    await put_mapping(js, tenant, "levels", (MAPPINGS / "battledim_levels.yaml").read_bytes())
    root = tmp_path / "drop"
    folder = root / tenant / "levels"
    folder.mkdir(parents=True)
    lines = (shared_data / "battledim" / "2019-01_SCADA_Levels.csv").read_bytes() \
        .splitlines(keepends=True)
    content = b"".join(lines[:201])  # header + 200 rows, CRLF
    drop = DropFolder(root, Intake(js), settle_s=SETTLE_S)

    # an upload in progress: half the bytes, then (later) the rest
    upload = folder / "levels.csv"
    upload.write_bytes(content[:len(content) // 2])
    assert await drop.scan() == []
    await asyncio.sleep(SETTLE_S * 1.5)
    with open(upload, "ab") as f:
        f.write(content[len(content) // 2:])
    assert await drop.scan() == []  # changed since the last look
    assert await drop.scan() == []  # unchanged, but not for settle_s yet
    assert await intake_events(nc, tenant, "received") == []
    await asyncio.sleep(SETTLE_S * 1.5)
    (line,) = await drop.scan()
    assert "ingested as" in line, line
    assert not upload.exists()
    assert (folder / ".done" / "levels.csv").read_bytes() == content
    (received,) = await intake_events(nc, tenant, "received")
    assert isinstance(received, RawIntakeReceived)
    assert (received.sha256, received.size_bytes) == (hashlib.sha256(content).hexdigest(),
                                                      len(content))
    assert (received.source, received.mapping_id, received.filename) == (
        "drop-folder", "levels", "levels.csv")
    assert await drop.scan() == []

    # the same bytes under another name: recognised, nothing published
    (folder / "again.csv").write_bytes(content)
    # unknown format, and a mapping id the tenant never registered
    (folder / "notes.xyz").write_bytes(b"not a data file\n")
    unmapped = root / tenant / "nosuchmapping"
    unmapped.mkdir()
    (unmapped / "data.csv").write_bytes(content)
    assert await drop.scan() == []
    await asyncio.sleep(SETTLE_S * 1.5)
    handled = sorted(await drop.scan())
    assert len(handled) == 3, handled
    assert any(h.startswith(f"again.csv: duplicate of intake {received.event_id}")
               for h in handled), handled
    assert (folder / ".done" / "again.csv").exists()
    reason = (folder / ".rejected" / "notes.xyz.reason.txt").read_text()
    assert "notes.xyz" in reason and "extension" in reason, reason
    assert (folder / ".rejected" / "notes.xyz").read_bytes() == b"not a data file\n"
    reason = (unmapped / ".rejected" / "data.csv.reason.txt").read_text()
    assert "nosuchmapping" in reason and "mapping" in reason, reason
    assert (unmapped / ".rejected" / "data.csv").read_bytes() == content
    assert [p for d in (folder, unmapped) for p in d.iterdir() if p.is_file()] == []
    assert len(await intake_events(nc, tenant, "received")) == 1

    # a restart re-ingests nothing, not even a file put back (a crash before the move)
    restarted = DropFolder(root, Intake(js), settle_s=SETTLE_S)
    assert await restarted.scan() == []
    await asyncio.sleep(SETTLE_S * 1.5)
    assert await restarted.scan() == []
    (folder / "levels.csv").write_bytes(content)
    assert await restarted.scan() == []
    await asyncio.sleep(SETTLE_S * 1.5)
    (line,) = await restarted.scan()
    assert line.startswith(f"levels.csv: duplicate of intake {received.event_id}"), line
    assert len(await intake_events(nc, tenant, "received")) == 1

    # and what was ingested is the whole file
    async with pipeline(nc, fast_settings):
        pass
    (parsed,) = await intake_events(nc, tenant, "parsed")
    assert parsed.intake_id == received.event_id
    assert (parsed.rows_received, parsed.values_accepted) == (200, 200)
    assert len(readings_of(fast_settings, tenant)) == 200


# ---------------------------------------------------------------- HTTP push


T0 = 1_546_300_800  # 2019-01-01T00:00:00Z
LINE_PROTOCOL = (
    f"flow,site=p227,unit=m3/h value=83.93 {T0}\n"
    f"flow,site=p227,unit=m3/h value=84.5 {T0 + 300}\n"
    f"level,unit=m,site=T1 value=3.41 {T0}\n"  # tag order does not matter
).encode()
LP_WANT = {
    (T0 * 10**6, "flow.p227.value"): (83.93 / 3600, "m3/s"),
    ((T0 + 300) * 10**6, "flow.p227.value"): (84.5 / 3600, "m3/s"),
    (T0 * 10**6, "level.T1.value"): (3.41, "m"),
}
JSON_PUSH = {
    "readings": [
        {"sensor": "p1", "ts": "2024-01-01T00:00:00Z", "value": 1.5, "unit": "l/s"},
        {"sensor": "p1", "ts": "2024-01-01T02:00:00+01:00", "value": 2.5, "unit": "l/s"},
    ],
    "series": [{"sensor": "t1", "unit": "cm", "ts": [1_704_067_200_000, 1_704_070_800_000],
                "values": [300, 350]}],
}
H = 3_600_000_000
JSON_WANT = {
    (1_704_067_200_000_000, "p1"): (1.5e-3, "m3/s"),
    (1_704_067_200_000_000 + H, "p1"): (2.5e-3, "m3/s"),
    (1_704_067_200_000_000, "t1"): (3.0, "m"),
    (1_704_067_200_000_000 + H, "t1"): (3.5, "m"),
}


async def test_line_protocol_and_json_push_over_http(nc, fast_settings):
    tenant, other = _tenant("http"), _tenant("http-other")
    tokens = TokenStore([])
    write = tokens.issue(tenant, "scada", ("write",))
    other_write = tokens.issue(other, "telegraf", ("write",))
    read_only = tokens.issue(tenant, "viewer", ("read",))
    app = create_intake_app(tokens, Intake(nc.jetstream()).submit)
    port = free_port()
    stop = asyncio.Event()
    server = asyncio.create_task(serve_intake(app, port=port, stop=stop))
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            async def ping():
                try:
                    return (await http.get("/ping")).status_code == 204
                except httpx.TransportError:
                    return False
            await eventually(ping, timeout_s=10, what="intake server up")

            gz = gzip.compress(LINE_PROTOCOL)
            lp = dict(params={"precision": "s", "bucket": "scada"},
                      content=gz, headers={"Content-Encoding": "gzip"})
            refused = [
                await http.post("/api/v2/write", **lp),
                await http.post("/api/v2/write", **{
                    **lp, "headers": {**lp["headers"], "Authorization": f"Token {read_only}"}}),
            ]
            assert [r.status_code for r in refused] == [401, 403]
            r = await http.post("/api/v2/write", **{
                **lp, "headers": {**lp["headers"], "Authorization": f"Token {write}"}})
            assert r.status_code == 204, r.text
            lp_id = r.headers["X-Tagus-Intake-Id"]
            r = await http.post("/api/v2/write", **{
                **lp, "headers": {**lp["headers"], "Authorization": f"Token {other_write}"}})
            assert r.status_code == 204, r.text
            other_id = r.headers["X-Tagus-Intake-Id"]
            r = await http.post("/v1/readings", json=JSON_PUSH,
                                headers={"Authorization": f"Bearer {write}"})
            assert r.status_code == 202, r.text
            json_id = r.json()["intake_id"]
    finally:
        stop.set()
        await asyncio.wait_for(server, 10)

    received = {e.event_id: e for e in await intake_events(nc, tenant, "received")}
    assert sorted(received) == sorted([lp_id, json_id])  # the refused requests left nothing
    assert received[lp_id].source == "line-protocol"
    assert received[lp_id].params == {"precision": "s", "bucket": "scada"}
    assert received[lp_id].size_bytes == len(LINE_PROTOCOL)  # stored inflated
    assert received[json_id].source == "json-push"
    assert [e.event_id for e in await intake_events(nc, other, "received")] == [other_id]

    async with pipeline(nc, fast_settings) as runners:
        pass
    assert runners["normalise"].stats.handled >= 3
    parsed = {e.intake_id: e for e in await intake_events(nc, tenant, "parsed")}
    assert sorted(parsed) == sorted([lp_id, json_id])
    assert (parsed[lp_id].values_accepted, parsed[lp_id].values_rejected) == (3, 0)
    assert (parsed[json_id].values_accepted, parsed[json_id].values_rejected) == (4, 0)

    got = readings_of(fast_settings, tenant)
    want = {**LP_WANT, **JSON_WANT}
    assert _approx_equal(got, want), (got, want)
    assert _approx_equal(readings_of(fast_settings, other), LP_WANT)
    assert not await stream_messages(nc, "DEADLETTER")


# ---------------------------------------------------------------- dedup rule per door


async def test_files_are_ingested_once_per_content_pushes_once_per_request(nc):
    """Files carry their data's identity (timestamps): the same bytes again are a
    duplicate.  A push is new data each time (line protocol without timestamps takes the
    receive time), unless the client retries under the same Idempotency-Key."""
    js = nc.jetstream()
    tenant = _tenant("dedup")
    intake = Intake(js, nc=nc)
    body = b"flow,site=x,unit=m3/h value=1\n"
    lp = dict(tenant=tenant, source="line-protocol", content_type="text/x-influx-line-protocol")

    files = [await intake.submit_detailed(**lp, body=body, filename="a.lp") for _ in range(2)]
    assert [f.duplicate for f in files] == [False, True]
    assert files[0].event == files[1].event

    pushes = [await intake.submit_detailed(**lp, body=body, identity="request")
              for _ in range(3)]
    assert not any(p.duplicate for p in pushes)
    assert len({p.event.event_id for p in pushes}) == 3
    assert len({p.event.occurred_at for p in pushes}) == 3  # each its own receive time
    assert {p.event.object_name for p in pushes} == {files[0].event.object_name}

    keyed = [await intake.submit_detailed(**lp, body=body, identity="request",
                                          idempotency_key="retry-me") for _ in range(2)]
    assert [k.duplicate for k in keyed] == [False, True]
    assert keyed[0].event == keyed[1].event
    with pytest.raises(IdempotencyConflict, match="retry-me"):
        await intake.submit(**lp, body=b"flow,site=x,unit=m3/h value=2\n", identity="request",
                            idempotency_key="retry-me")

    received = await intake_events(nc, tenant, "received")
    assert sorted(e.event_id for e in received) == sorted(
        [files[0].event.event_id, *(p.event.event_id for p in pushes), keyed[0].event.event_id])
    store = await js.object_store(INTAKE_BUCKET)
    info = await store.get_info(files[0].event.object_name)
    assert (info.size, info.chunks) == (len(body), 1)


async def test_nats_down_is_a_transient_error_at_once_and_files_stay(fast_settings, tmp_path):
    """Seen: a NATS timeout escaped ``DropFolder.scan`` and the intake service exited."""
    closed = await wiring.nats_connection(fast_settings, name="tagus-tests-closed")
    await closed.close()
    root = tmp_path / "drop"
    (root / "acme" / "flows").mkdir(parents=True)
    waiting = root / "acme" / "flows" / "a.csv"
    waiting.write_bytes(b"time,s1\n1704067200,1\n")
    for intake in (Intake(closed.jetstream(), nc=closed), Intake(closed.jetstream())):
        started = time.monotonic()
        with pytest.raises(TransientError, match="NATS"):
            await intake.submit(tenant="acme", source="line-protocol", body=b"m v=1\n",
                                content_type="text/x-influx-line-protocol", identity="request")
        assert time.monotonic() - started < 1.0
        drop = DropFolder(root, intake, settle_s=0)
        assert await drop.scan() == []  # first sight
        assert await drop.scan() == []  # settled, submit fails: no exception, file stays
        assert drop.waiting and waiting.exists()


# ---------------------------------------------------------------- malformed uploads


async def test_malformed_uploads_end_in_a_clear_outcome(nc, fast_settings, shared_data):
    js = nc.jetstream()
    tenant = _tenant("bad")
    for mid, yaml_name in (("flows", "battledim_flows.yaml"), ("levels", "battledim_levels.yaml"),
                           ("inflow", "bwdf_inflow.yaml"), ("weather", "bwdf_weather.yaml")):
        await put_mapping(js, tenant, mid, (MAPPINGS / yaml_name).read_bytes())
    flows = (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()
    weather = (shared_data / "bwdf" / "WeatherData_1.xlsx").read_bytes()
    cut = flows[:5000]
    cut_rows = cut.count(b"\n")  # the header line and the complete data lines
    # name: (content type, body, mapping id, outcome, reason, words the detail must contain)
    cases = {
        "empty.csv": ("text/csv", b"", "flows", IntakeFailed, "unparseable", "empty"),
        "garbage.csv": ("text/csv", random.Random(7).randbytes(20_000), "flows", IntakeFailed,
                        "unparseable", "not valid utf-8"),
        "header-only.csv": ("text/csv", flows.splitlines(keepends=True)[0], "flows",
                            IntakeFailed, "no_data", "no data rows"),
        "truncated.csv": ("text/csv", cut, "flows", IntakeParsed, "truncated_row", ""),
        "wrong-mapping.csv": ("text/csv", flows, "levels", IntakeFailed, "unparseable",
                              "T1"),
        "csv-as-xlsx.csv": ("text/csv", flows[:3000], "inflow", IntakeFailed, "unparseable",
                            "xlsx"),
        "no-mapping.csv": ("text/csv", flows[:2000], None, IntakeFailed, "invalid_mapping",
                           "mapping"),
        "one-huge-line.csv": ("text/csv", b"Timestamp;" + b"p227;" * 300_000, "flows",
                              IntakeFailed, "unparseable", "longer than"),
        "truncated.xlsx": (XLSX, weather[:200_000], "weather", IntakeFailed, "unparseable",
                           "workbook"),
        "garbage.json": ("application/json", b"{not json", None, IntakeFailed, "unparseable",
                         "JSON"),
        "garbage.lp": ("text/x-influx-line-protocol", b"no fields here\n\x00\x01\x02 x\n", None,
                       IntakeParsed, "malformed_row", ""),
    }
    intake = Intake(js)
    ids = {}
    for name, (ctype, body, mid, *_rest) in cases.items():
        event = await intake.submit(tenant=tenant, source="file", content_type=ctype, body=body,
                                    filename=name, mapping_id=mid)
        ids[event.event_id] = name

    async with pipeline(nc, fast_settings) as runners:
        pass
    # >=: a queued upload can be handled twice after an ack_wait redelivery (same output
    # ids, dropped as duplicates); exactly one outcome per upload is checked below
    assert runners["normalise"].stats.handled >= len(cases)
    assert sum(r.stats.dead_lettered for r in runners.values()) == 0
    assert not await stream_messages(nc, "DEADLETTER")

    outcomes = {}
    for e in [*await intake_events(nc, tenant, "parsed"),
              *await intake_events(nc, tenant, "failed")]:
        assert e.intake_id not in outcomes, f"two outcomes for {ids[e.intake_id]}"
        outcomes[ids[e.intake_id]] = e
    assert sorted(outcomes) == sorted(cases)
    for name, (_, _, _, kind, reason, words) in cases.items():
        e = outcomes[name]
        assert isinstance(e, kind), (name, e)
        if kind is IntakeFailed:
            assert e.reason == reason, (name, e.reason, e.detail)
            assert words.lower() in e.detail.lower(), (name, e.detail)
            assert e.filename == name
        else:
            assert e.reasons.get(reason, 0) > 0, (name, e.reasons)
            assert e.values_received == e.values_accepted + e.values_rejected + e.values_missing

    truncated = outcomes["truncated.csv"]
    assert truncated.reasons == {"truncated_row": 3}  # the cut row's three cells
    assert (truncated.rows_received, truncated.rows_accepted) == (cut_rows, cut_rows - 1)
    assert outcomes["garbage.lp"].values_accepted == 0

    # operators see every upload, with the reason, in intake_log
    db = questdb(fast_settings)
    db.wait_for_wal("intake_log")
    log = {intake_id: (status, json.loads(reasons), detail) for intake_id, status, reasons, detail
           in db.rows(f"select intake_id, status, reasons, detail from intake_log "
                      f"where tenant = '{tenant}'")}
    assert sorted(ids[i] for i in log) == sorted(cases)
    for intake_id, (status, reasons, detail) in log.items():
        name = ids[intake_id]
        _, _, _, kind, reason, _ = cases[name]
        assert status == ("failed" if kind is IntakeFailed else "parsed"), name
        assert reason in reasons, (name, reasons)
        if kind is IntakeFailed:
            assert detail == outcomes[name].detail
    # the truncated file's complete rows did land
    assert len(readings_of(fast_settings, tenant)) == (cut_rows - 1) * 3


async def test_upload_with_no_accepted_value_gets_its_intake_log_row(nc, fast_settings):
    """Alone in its batch, an ``intake.parsed`` without timestamps (nothing accepted) must
    still be written: an all-NaT first_ts/last_ts column once broke the projection."""
    js = nc.jetstream()
    tenant = _tenant("nothing")
    event = await Intake(js).submit(tenant=tenant, source="file",
                                    content_type="text/x-influx-line-protocol",
                                    body=b"just words\nmore words here\n", filename="words.lp")
    async with pipeline(nc, fast_settings) as runners:
        pass
    assert sum(r.stats.dead_lettered for r in runners.values()) == 0
    assert not await stream_messages(nc, "DEADLETTER")
    (parsed,) = await intake_events(nc, tenant, "parsed")
    assert (parsed.values_accepted, parsed.first_ts_ns) == (0, None)
    db = questdb(fast_settings)
    db.wait_for_wal("intake_log")
    rows = db.rows(f"select intake_id, status, values_received, values_rejected, first_ts "
                   f"from intake_log where tenant = '{tenant}'")
    assert rows == [[event.event_id, "parsed", 2, 2, None]]
