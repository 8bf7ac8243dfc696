"""Metrics export set-up (ops/telemetry.py) without servers."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from ops.telemetry import otlp_metrics_endpoint
from tests.conftest import REPO


def test_otlp_metrics_endpoint_from_the_traces_setting():
    assert otlp_metrics_endpoint("http://otel:4318/v1/traces") == "http://otel:4318/v1/metrics"
    assert otlp_metrics_endpoint("http://otel:4318/") == "http://otel:4318/v1/metrics"


def test_without_a_collector_nothing_breaks():
    """OTLP export to a port nobody listens on: recording, /metrics text and shutdown
    still work (the exporter logs its failures; the process goes on)."""
    code = textwrap.dedent("""
        from opentelemetry import metrics as otel
        from bus import metrics
        from ops import telemetry
        assert telemetry.configure_metrics("tagus-test", "http://127.0.0.1:9/v1/traces")
        assert not telemetry.configure_metrics("again", None)  # first call wins
        metrics.add("tagus.runner.handled", 3, component="normalise", stream="INTAKE")
        text, ctype = telemetry.prometheus_text()
        line = [l for l in text.decode().splitlines()
                if l.startswith("tagus_runner_handled_total{")][0]
        assert line.endswith(" 3.0") and 'component="normalise"' in line, line
        assert ctype.startswith("text/plain")
        otel.get_meter_provider().shutdown(timeout_millis=3000)
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-3000:]
