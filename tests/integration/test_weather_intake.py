"""Weather forecasts through the real servers: a weather poller against a local HTTP server
serving Open-Meteo-shaped bodies, the whole pipeline, the ``weather_forecasts`` table and
the as-of read (never a forecast issued after the instant asked about)."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from contracts.weather import WeatherForecastReceived
from ops.wiring import pg_connection, questdb
from producers.intake import Intake
from producers.poller import PollerConfig, poll_once
from projections import weather
from tests.helpers import stream_events
from tests.integration.test_intake_paths import pipeline

pytestmark = pytest.mark.servers

HOURS = 48


def body(temp_c: float) -> bytes:
    times = [f"2024-03-{30 + h // 24:02d}T{h % 24:02d}:00" for h in range(HOURS)]
    return json.dumps({
        "latitude": 41.9, "longitude": 12.5, "utc_offset_seconds": 3600,
        "timezone": "Europe/Rome", "hourly_units": {"time": "iso8601", "temperature_2m": "°C",
                                                    "precipitation": "mm", "cloud_cover": "%"},
        "hourly": {"time": times, "temperature_2m": [temp_c] * HOURS,
                   "precipitation": [0.5] * HOURS, "cloud_cover": [None] + [40] * (HOURS - 1)},
    }).encode()


@pytest.fixture
def upstream():
    """A local HTTP server answering GET with ``state["body"]``."""
    state = {"body": b""}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state["body"])))
            self.end_headers()
            self.wfile.write(state["body"])

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1/forecast"
    yield state
    server.shutdown()
    server.server_close()


async def test_polled_forecasts_are_stored_and_read_as_of_their_issue_time(
        nc, fast_settings, upstream):
    tenant = f"wx-{uuid.uuid4().hex[:8]}"
    config = PollerConfig(name="meteo", tenant=tenant, url=upstream["url"],
                          kind="weather-forecast", location="rome-north")
    intake = Intake(nc.jetstream(), nc=nc)
    async with pipeline(nc, fast_settings), httpx.AsyncClient() as client:
        issued = []
        for temp in (10.0, 12.0):
            upstream["body"] = body(temp)
            issued.append((await poll_once(config, client, intake.submit)).occurred_at)
    first, second = issued

    db = questdb(fast_settings)
    db.wait_for_wal(weather.TABLE)
    count_sql = f"select count() from {weather.TABLE} where tenant = '{tenant}'"
    assert db.rows(count_sql) == [[2 * HOURS * 3]]
    # a replay writes the same keys: nothing is added
    events = [e for e in await stream_events(nc, "WEATHER", "weather")
              if isinstance(e, WeatherForecastReceived) and e.tenant == tenant]
    assert len(events) == 2
    weather.projection(db).write(events)
    db.wait_for_wal(weather.TABLE)
    assert db.rows(count_sql) == [[2 * HOURS * 3]]

    conn = await pg_connection(fast_settings)
    try:
        async def as_of(t):
            return await weather.forecast_as_of(conn, tenant, "rome-north", t)

        assert await as_of(first - timedelta(microseconds=1)) is None
        for t, want_issue, want_temp in ((first, first, 10.0),
                                         (second - timedelta(microseconds=1), first, 10.0),
                                         (second, second, 12.0),
                                         (second + timedelta(days=30), second, 12.0)):
            got = await as_of(t)
            assert got.issued_at == want_issue <= t
            frame = got.frame
            assert len(frame) == HOURS and frame.index[0].isoformat() == "2024-03-29T23:00:00+00:00"
            assert (frame["air_temp"] == want_temp).all()
            assert frame["precipitation"].tolist() == [0.0005] * HOURS  # mm -> m
            assert frame["cloud_cover"].isna().tolist() == [True] + [False] * (HOURS - 1)
            assert got.units == {"air_temp": "degC", "cloud_cover": "1", "precipitation": "m"}
    finally:
        await conn.close()
