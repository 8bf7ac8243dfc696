"""The operators' query API against a real QuestDB: the session's stack (see
tests/conftest.py; ``TAGUS_TEST_EXTERNAL_STACK=1`` + ``TAGUS_*`` point it at a running one).

Two tenants with known rows; tenant ids are unique per run so a shared QuestDB with
other tests' data does not matter.  No QuestDB reachable -> the fixtures error (the
module fails, it does not skip).
"""

from __future__ import annotations

import csv
import io
import socket
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
import numpy as np
import pytest
from fastapi.testclient import TestClient

from contracts.base import new_id, utc_now
from contracts.readings import ReadingsNormalised, Series
from bus.tokens import TokenStore
from ops.wiring import questdb
from ops.serving import api_config
from projections.api import create_app, export, queries
from projections.readings import TABLE, ReadingsWriter

pytestmark = pytest.mark.servers

T0 = datetime(2024, 3, 1, tzinfo=UTC)
MINUTE_NS = 60_000_000_000
GAP = (T0 + timedelta(hours=10), T0 + timedelta(hours=12))  # flow-1 has no rows in it
RUN = uuid.uuid4().hex[:8]
A, B = f"apit-a-{RUN}", f"apit-b-{RUN}"


def _ns(t: datetime) -> int:
    return int(t.timestamp()) * 1_000_000_000


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _series(sensor: str, unit: str, minutes: int, seed: int, gap=None) -> dict:
    """``minutes`` 1-minute readings from T0 (minus ``gap``): {"ts_ns", "values"} arrays."""
    ts = _ns(T0) + np.arange(minutes, dtype=np.int64) * MINUTE_NS
    if gap:
        ts = ts[(ts < _ns(gap[0])) | (ts >= _ns(gap[1]))]
    values = np.random.default_rng(seed).normal(10.0, 3.0, len(ts))
    return {"sensor": sensor, "unit": unit, "ts_ns": ts, "values": values}


DATA = {
    A: [_series("flow-1", "m3/s", 2 * 1440, 1, GAP), _series("level-1", "m", 300, 2),
        _series("shared", "m", 60, 3)],
    B: [_series("pressure-b", "Pa", 120, 4), _series("shared", "m", 90, 5)],
}


def _data(tenant: str, sensor: str) -> dict:
    return next(s for s in DATA[tenant] if s["sensor"] == sensor)


@pytest.fixture(scope="module")
def api_settings(settings, tmp_path_factory):
    """The session's stack (tests/conftest.py: ``load_settings()``) + a fresh token file."""
    return settings.model_copy(
        update={"tokens_file": tmp_path_factory.mktemp("api") / "tokens.yaml"})


@pytest.fixture(scope="module")
def db(api_settings):
    db = questdb(api_settings)
    db.exec("select 1", timeout=5)  # unreachable -> TransientError: the module fails
    writer = ReadingsWriter(db)
    writer.prepare()
    now = utc_now()
    writer.write([
        ReadingsNormalised(
            event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now,
            source="test-api",
            series=[Series(sensor_id=s["sensor"], unit=s["unit"],
                           timestamps_ns=s["ts_ns"].tolist(), values=s["values"].tolist())
                    for s in series])
        for tenant, series in DATA.items()])
    db.wait_for_wal(TABLE)
    return db


@pytest.fixture(scope="module")
def tokens(api_settings):
    store = TokenStore([])
    issued = {"a": store.issue(A, "ops-a", ("read",)), "b": store.issue(B, "ops-b", ("read",)),
              "a_write": store.issue(A, "scada-a", ("write",))}
    store.save(api_settings.tokens_path)
    return issued


@pytest.fixture(scope="module")
def client(api_settings, db, tokens):
    with TestClient(create_app(api_config(api_settings))) as c:
        yield c


def _get(client, url, token, **params):
    return client.get(url, params=params, headers={"Authorization": f"Bearer {token}"})


def _readings(client, token, sensor, start, end, **params):
    r = _get(client, f"/v1/sensors/{quote(sensor, safe='')}/readings", token,
             start=_iso(start), end=_iso(end), **params)
    assert r.status_code == 200, r.text
    return r


# ---------------------------------------------------------------- auth


ROUTES = ["/v1/sensors", "/v1/latest", "/v1/sensors/flow-1/latest",
          "/v1/sensors/flow-1/readings"]


def test_health_and_readiness_need_no_token(client):
    assert client.get("/healthz").json()["status"] == "ok"
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    assert r.json()["questdb"]["reachable"] is True


@pytest.mark.parametrize("url", ROUTES)
def test_missing_token_is_401(client, url):
    r = client.get(url)
    assert r.status_code == 401
    assert r.json()["error"] == "unauthenticated" and "Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("url", ROUTES)
def test_unknown_or_write_only_token_is_403(client, tokens, url):
    assert _get(client, url, "tgs_not-a-token").status_code == 403
    r = _get(client, url, tokens["a_write"])
    assert r.status_code == 403 and "read" in r.json()["detail"]


def test_x_api_key_header_is_accepted(client, tokens):
    r = client.get("/v1/sensors", headers={"X-API-Key": tokens["a"]})
    assert r.status_code == 200 and r.json()["tenant"] == A


# ---------------------------------------------------------------- tenant isolation


def test_sensors_lists_only_the_tokens_tenant(client, tokens):
    for who, tenant in (("a", A), ("b", B)):
        body = _get(client, "/v1/sensors", tokens[who]).json()
        assert body["tenant"] == tenant
        by_name = {s["sensor"]: s for s in body["sensors"]}
        assert set(by_name) == {s["sensor"] for s in DATA[tenant]}
        for s in DATA[tenant]:
            got = by_name[s["sensor"]]
            assert got["count"] == len(s["values"]) and got["unit"] == s["unit"]
            assert got["first_ts"] == _iso(datetime.fromtimestamp(s["ts_ns"][0] / 1e9, UTC))
            assert got["last_ts"] == _iso(datetime.fromtimestamp(s["ts_ns"][-1] / 1e9, UTC))


def test_other_tenants_sensor_is_404_everywhere(client, tokens):
    start, end = T0, T0 + timedelta(hours=3)
    _readings(client, tokens["a"], "flow-1", start, end)  # A's sensor now in the unit cache
    b = tokens["b"]
    assert _get(client, "/v1/sensors/flow-1/latest", b).status_code == 404
    for params in ({}, {"bucket": "15m"}, {"format": "csv"}, {"bucket": "1h", "format": "csv"}):
        r = _get(client, "/v1/sensors/flow-1/readings", b, start=_iso(start), end=_iso(end),
                 **params)
        assert r.status_code == 404 and r.json()["error"] == "not found", params
    r = _get(client, "/v1/latest", b, sensor=["pressure-b", "flow-1"])
    assert r.status_code == 404 and "'flow-1'" in r.json()["detail"]
    everything = _get(client, "/v1/latest", b).json()["readings"]
    assert {x["sensor"] for x in everything} == {"pressure-b", "shared"}


def test_same_sensor_name_in_two_tenants_stays_apart(client, tokens):
    for who, tenant in (("a", A), ("b", B)):
        s = _data(tenant, "shared")
        latest = _get(client, "/v1/sensors/shared/latest", tokens[who]).json()
        assert latest["value"] == s["values"][-1]
        pts = _readings(client, tokens[who], "shared", T0, T0 + timedelta(days=1)).json()
        assert [p["value"] for p in pts["points"]] == s["values"].tolist()


# ---------------------------------------------------------------- latest and raw ranges


def test_latest_of_several_sensors(client, tokens):
    body = _get(client, "/v1/latest", tokens["a"], sensor=["level-1", "flow-1"]).json()
    assert [r["sensor"] for r in body["readings"]] == ["flow-1", "level-1"]
    for r in body["readings"]:
        s = _data(A, r["sensor"])
        assert r["value"] == s["values"][-1] and r["unit"] == s["unit"]
        assert r["ts"] == _iso(datetime.fromtimestamp(s["ts_ns"][-1] / 1e9, UTC))


def test_raw_range_returns_exactly_the_rows_written(client, tokens):
    s = _data(A, "flow-1")
    start, end = T0 + timedelta(hours=9, minutes=30), T0 + timedelta(hours=12, minutes=30)
    body = _readings(client, tokens["a"], "flow-1", start, end).json()
    sel = (s["ts_ns"] >= _ns(start)) & (s["ts_ns"] < _ns(end))
    assert body["truncated"] is False and body["bucket"] is None and body["unit"] == "m3/s"
    assert [p["value"] for p in body["points"]] == s["values"][sel].tolist()
    assert [p["ts"] for p in body["points"]] == [
        _iso(datetime.fromtimestamp(t / 1e9, UTC)) for t in s["ts_ns"][sel]]
    assert len(body["points"]) == 60  # 30 min before the gap, 30 min after


def test_raw_range_stops_at_limit_and_says_so(client, tokens):
    body = _readings(client, tokens["a"], "level-1", T0, T0 + timedelta(days=1),
                     limit=50).json()
    assert body["truncated"] is True and len(body["points"]) == 50
    assert body["points"][-1]["value"] == _data(A, "level-1")["values"][49]


# ---------------------------------------------------------------- downsampling


def _numpy_buckets(s: dict, start: datetime, end: datetime, bucket_s: int) -> dict:
    """{bucket start iso: values in it} for buckets aligned to ``start``."""
    sel = (s["ts_ns"] >= _ns(start)) & (s["ts_ns"] < _ns(end))
    ts, values = s["ts_ns"][sel], s["values"][sel]
    k = (ts - _ns(start)) // (bucket_s * 1_000_000_000)
    return {_iso(start + timedelta(seconds=int(i) * bucket_s)): values[k == i]
            for i in np.unique(k)}


AGG_FUNCS = {"avg": np.mean, "min": np.min, "max": np.max, "sum": np.sum,
             "count": len, "first": lambda v: v[0], "last": lambda v: v[-1]}


@pytest.mark.parametrize("agg", list(AGG_FUNCS))
def test_downsampling_equals_numpy(client, tokens, agg):
    s = _data(A, "flow-1")
    start = T0 + timedelta(minutes=7)  # not on a bucket boundary: buckets align to start
    end = start + timedelta(days=1, hours=5)
    body = _readings(client, tokens["a"], "flow-1", start, end, bucket="15m", agg=agg).json()
    expected = {k: AGG_FUNCS[agg](v) for k, v in _numpy_buckets(s, start, end, 900).items()}
    assert body["bucket"] == "15m" and body["agg"] == agg
    assert [p["ts"] for p in body["points"]] == list(expected)  # fill=none: gap left out
    np.testing.assert_allclose([p["value"] for p in body["points"]], list(expected.values()),
                               rtol=1e-12)


def test_fill_modes_over_a_gap(client, tokens):
    start, end = T0 + timedelta(hours=9), T0 + timedelta(hours=13)

    def values(fill):
        pts = _readings(client, tokens["a"], "flow-1", start, end, bucket="30m",
                        fill=fill).json()["points"]
        return {p["ts"]: p["value"] for p in pts}

    full = [_iso(start + timedelta(minutes=30 * i)) for i in range(8)]
    in_gap = full[2:6]  # 10:00 .. 11:30
    none, null, prev, linear = (values(f) for f in ("none", "null", "prev", "linear"))
    assert list(none) == full[:2] + full[6:]
    assert list(null) == full and all(null[t] is None for t in in_gap)
    assert all(prev[t] == none[full[1]] for t in in_gap)
    before, after = none[full[1]], none[full[6]]
    for i, t in enumerate(in_gap, start=1):
        assert linear[t] == pytest.approx(before + (after - before) * i / 5)


# ---------------------------------------------------------------- CSV export


@pytest.mark.parametrize("params", [{}, {"bucket": "1h", "agg": "max", "fill": "null"}])
def test_csv_export_matches_json(client, tokens, params):
    start, end = T0 + timedelta(hours=8), T0 + timedelta(hours=14)
    js = _readings(client, tokens["a"], "flow-1", start, end, **params).json()["points"]
    r = _readings(client, tokens["a"], "flow-1", start, end, format="csv", **params)
    assert r.headers["content-type"].startswith("text/csv")
    assert 'filename="flow-1_20240301T080000Z-20240301T140000Z.csv"' in \
        r.headers["content-disposition"]
    assert int(r.headers["content-length"]) == len(r.content)
    body, end = r.text.rsplit("# end: ", 1)
    assert end == f"{len(js)} rows\n"  # the completeness line, last
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["ts", "value"] and len(rows) == len(js) + 1 > 5
    assert [row[0] for row in rows[1:]] == [p["ts"] for p in js]
    assert [float(row[1]) if row[1] else None for row in rows[1:]] == [p["value"] for p in js]


# ---------------------------------------------------------------- bad input


BAD = [
    ({"bucket": "15x"}, "bucket"), ({"bucket": "0m"}, "bucket"), ({"bucket": "15M"}, "bucket"),
    ({"bucket": "32d"}, "bucket"), ({"bucket": "15m; DROP TABLE readings"}, "bucket"),
    ({"bucket": "15m FILL(PREV)"}, "bucket"), ({"bucket": "1s", "end": "2025-01-01T00:00:00Z"},
                                                "bucket"),
    ({"agg": "median"}, "agg"), ({"agg": "avg(value)) --"}, "agg"), ({"fill": "0"}, "fill"),
    ({"start": "2024-03-01T00:00:00"}, "start"), ({"start": "yesterday"}, "start"),
    ({"end": "2024-02-01T00:00:00Z"}, "end"), ({"end": "2025-06-01T00:00:00Z"}, "end"),
    ({"format": "xml"}, "format"), ({"limit": "0"}, "limit"), ({"limit": "500000"}, "limit"),
]


@pytest.mark.parametrize(("params", "parameter"), BAD)
def test_bad_parameters_are_422_naming_the_parameter(client, tokens, params, parameter):
    query = {"start": "2024-03-01T00:00:00Z", "end": "2024-03-02T00:00:00Z", **params}
    r = _get(client, "/v1/sensors/flow-1/readings", tokens["a"], **query)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid parameter" and body["parameter"] == parameter
    assert body["detail"]


def test_zone_offsets_are_honoured(client, tokens):
    s = _data(A, "flow-1")
    body = _get(client, "/v1/sensors/flow-1/readings", tokens["a"],
                start="2024-03-01T02:00:00+01:00", end="2024-03-01T03:00:00+01:00").json()
    assert body["start"] == "2024-03-01T01:00:00Z"
    assert [p["value"] for p in body["points"]] == s["values"][60:120].tolist()


INJECTIONS = ["flow-1' OR '1'='1", f"flow-1' OR tenant = '{A}", "x'; DROP TABLE readings; --",
              "flow-1\" OR 1=1 --", "flow-1) LATEST ON ts PARTITION BY sensor; --"]


@pytest.mark.parametrize("sensor", INJECTIONS)
def test_sql_in_sensor_is_refused_by_the_id_rule(client, db, tokens, sensor):
    before = db.rows(f"select count() from {TABLE} where tenant = '{A}'")[0][0]
    b = tokens["b"]
    path = quote(sensor, safe="")
    responses = [_get(client, f"/v1/sensors/{path}/latest", b),
                 _get(client, "/v1/latest", b, sensor=[sensor])]
    for params in ({}, {"bucket": "15m"}, {"format": "csv"}):
        responses.append(_get(client, f"/v1/sensors/{path}/readings", b,
                              start="2024-03-01T00:00:00Z", end="2024-03-02T00:00:00Z",
                              **params))
    for r in responses:
        assert r.status_code == 422 and r.json()["parameter"] == "sensor", (sensor, r.text)
        assert "must match" in r.json()["detail"]
    assert db.rows(f"select count() from {TABLE} where tenant = '{A}'")[0][0] == before > 0


@pytest.mark.parametrize("sensor", INJECTIONS)
async def test_sql_in_a_bound_sensor_is_just_an_unknown_name(api_settings, db, sensor):
    """Behind the id rule, the second defence: values are bound, never formatted in."""
    conn = await asyncpg.connect(host=api_settings.questdb_host,
                                 port=api_settings.questdb_pg_port,
                                 user=api_settings.questdb_user,
                                 password=api_settings.questdb_password, database="qdb")
    try:
        q = queries.RangeQuery(sensor, T0, T0 + timedelta(days=2))
        assert await queries.latest(conn, B, [sensor]) == []
        assert await queries.readings(conn, B, q) == ([], False)
        pages = [p async for p in queries.readings_pages(conn, B, q)]
        assert pages == []
    finally:
        await conn.close()
    assert db.rows(f"select count() from {TABLE} where tenant = '{A}'")[0][0] > 0


def test_unknown_route_is_json_404(client, tokens):
    r = _get(client, "/v1/nothing-here", tokens["a"])
    assert r.status_code == 404 and set(r.json()) >= {"error", "detail"}


def test_openapi_documents_routes_and_auth(client):
    doc = client.get("/openapi.json").json()
    assert {"/v1/sensors", "/v1/latest", "/v1/sensors/{sensor}/latest",
            "/v1/sensors/{sensor}/readings", "/healthz"} <= set(doc["paths"])
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])


def test_csv_export_pages_through_the_range_and_frees_the_connection(api_settings, db,
                                                                        tokens, monkeypatch):
    """More rows than one page: every row arrives once, and the one pooled connection is
    free again for the next request (an export that kept it would hang that request)."""
    n = len(_data(A, "flow-1")["values"])
    monkeypatch.setattr(export, "PAGE_ROWS", 500)
    config = api_config(api_settings, pool_size=1, tenant_max_queries=1,
                        acquire_timeout_s=2, query_timeout_s=5)
    with TestClient(create_app(config)) as c:
        r = _readings(c, tokens["a"], "flow-1", T0, T0 + timedelta(days=2), format="csv",
                      limit=n)
        lines = r.text.splitlines()
        assert n > export.PAGE_ROWS and len(lines) == n + 2
        assert lines[-1] == f"# end: {n} rows"
        s = _data(A, "flow-1")
        assert [ln.split(",")[0] for ln in lines[1:-1]] == [
            _iso(datetime.fromtimestamp(t / 1e9, UTC)) for t in s["ts_ns"]]
        cut = _readings(c, tokens["a"], "flow-1", T0, T0 + timedelta(days=2), format="csv",
                        limit=100).text.splitlines()
        assert len(cut) == 102 and cut[-1].startswith("# end: 100 rows (limit 100 reached")
        assert c.get("/readyz").json()["pool"]["in_use"] == 0
        assert _get(c, "/v1/sensors", tokens["a"]).status_code == 200


def test_questdb_unreachable_is_503_not_500(api_settings, tokens):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = api_config(api_settings, pg_port=s.getsockname()[1])
    with TestClient(create_app(dead)) as c:
        assert c.get("/healthz").status_code == 200  # alive, only not ready
        assert c.get("/readyz").status_code == 503
        r = _get(c, "/v1/sensors", tokens["a"])
        assert r.status_code == 503 and r.json()["error"] == "unavailable"
        assert r.headers["retry-after"]
        assert _get(c, "/v1/sensors", "tgs_not-a-token").status_code == 403  # auth first
