"""The Grafana dashboards in deploy/grafana/ query only what Tagus exports and stores.

- ``tagus-metrics.json`` (Prometheus): every metric name in its PromQL is one the
  OpenTelemetry Prometheus exporter really renders from ``bus.metrics.INSTRUMENTS`` (or
  prometheus_client's process collector), found by rendering them here.
- ``tagus-questdb.json`` (Grafana's QuestDB data source): every table is a projection's
  and every column it names is in that table's DDL (``projections/*.py``).
  ``tests/integration/test_metrics.py`` also runs these queries on a real QuestDB.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus import metrics

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
PROJECTION_MODULES = ("readings", "intake_log", "kpis", "schedules", "tasks", "alerts",
                      "forecasts", "weather")

_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                 "unless", "bool", "offset"}
_SQL_WORDS = {"select", "from", "where", "and", "or", "not", "as", "sample", "by", "group",
              "order", "desc", "asc", "limit", "distinct", "in", "fill", "null", "align", "to",
              "calendar", "latest", "on", "partition", "time"}


@pytest.fixture(scope="module")
def exported_names() -> set[str]:
    """Sample names the Prometheus exporter renders for every instrument, plus the
    process collector's (a private meter provider; the global one is left alone)."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from prometheus_client import REGISTRY, generate_latest

    reader = PrometheusMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        made = metrics._Instruments(provider.get_meter(metrics.METER_NAME))
        for name, kind, unit, _ in metrics.INSTRUMENTS:
            if kind == "counter":
                made.by_name[name].add(1, {"component": "x"})
            elif kind == "histogram":
                made.by_name[name].record(0.5, {"component": "x"})
            else:
                made.meter.create_observable_gauge(
                    name, unit=unit, callbacks=[lambda _o: [Observation(1, {"c": "x"})]])
        text = generate_latest(REGISTRY).decode()
    finally:
        provider.shutdown()  # unregisters the reader's collector
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples}


def _dashboard(name: str) -> dict:
    doc = json.loads((DEPLOY / name).read_text(encoding="utf-8"))
    assert doc["uid"] and doc["title"] and doc["panels"], name
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), f"{name}: panel ids repeat"
    return doc


def promql_metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions,
    keywords, label names (inside ``{}`` or ``by (...)``) or durations."""
    expr = re.sub(r'"[^"]*"', "", expr)
    expr = re.sub(r"\{[^}]*\}", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word, rest = m.group(), expr[m.end():].lstrip()
        if rest.startswith("(") or word in _PROMQL_WORDS or word.startswith("__"):
            continue
        names.add(word)
    return names


def test_promql_parser_finds_names():
    assert promql_metric_names(
        'histogram_quantile(0.9, sum by (le, kind) (rate(tagus_task_queued_seconds_bucket'
        '{component=~"$component"}[$__rate_interval]))) / 2^20') == {
            "tagus_task_queued_seconds_bucket"}


def test_prometheus_names_match_the_exporter(exported_names):
    for name, kind in metrics.PROMETHEUS_NAMES.items():
        want = f"{name}_bucket" if kind == "histogram" else name
        assert want in exported_names, f"{want} not rendered; rendered: {sorted(exported_names)}"


def test_metrics_dashboard_queries_only_exported_metrics(exported_names):
    doc = _dashboard("tagus-metrics.json")
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    exprs += [v["query"]["query"] for v in doc["templating"]["list"]]
    assert len(exprs) >= 15
    used = set()
    for expr in exprs:
        lv = re.fullmatch(r"label_values\((.*),\s*\w+\)", expr)  # a variable's query
        names = promql_metric_names(lv.group(1) if lv else expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported_names
        assert not unknown, f"{expr!r} queries {sorted(unknown)}, which nothing exports"
        used |= names
    # every family of Tagus' own metrics is on the dashboard
    families = {n.rsplit("_", 1)[0] if k != "gauge" else n
                for n, k in metrics.PROMETHEUS_NAMES.items()}
    shown = {u for u in used if u.startswith("tagus_")}
    missing = [f for f in families if not any(u.startswith(f) for u in shown)]
    assert not missing, f"metrics not on the dashboard: {missing}"


def _tables() -> dict[str, set[str]]:
    """Columns per QuestDB table, from the projections' CREATE TABLE statements."""
    tables: dict[str, set[str]] = {}
    for mod in PROJECTION_MODULES:
        module = importlib.import_module(f"projections.{mod}")
        for value in vars(module).values():
            if isinstance(value, str) and "CREATE TABLE" in value:
                m = re.search(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*)\)\s*TIMESTAMP", value,
                              re.S)
                assert m, value[:200]
                cols = {c.strip().split()[0] for part in m.group(2).split("\n")
                        for c in part.split(",") if c.strip()}
                tables[m.group(1)] = cols
    return tables


def sql_of(doc: dict) -> list[str]:
    sqls = [t["rawSql"] for p in doc["panels"] for t in p["targets"]]
    return sqls + [v["query"] for v in doc["templating"]["list"]]


def test_questdb_dashboard_queries_known_tables_and_columns():
    doc = _dashboard("tagus-questdb.json")
    tables = _tables()
    assert {"readings", "intake_log", "schedules", "kpis"} <= set(tables)
    used = set()
    for sql in sql_of(doc):
        froms = re.findall(r"\bFROM\s+(\w+)", sql, re.I)
        assert froms, sql
        assert set(froms) <= set(tables), f"{sql!r}: unknown table(s) {set(froms) - set(tables)}"
        used |= set(froms)
        columns = set().union(*(tables[t] for t in froms))
        body = re.sub(r"'[^']*'", "", sql)
        body = re.sub(r"\$__\w+(\([^)]*\))?", "", body)
        body = re.sub(r'"(\w+)"', r"\1", body)
        aliases = set(re.findall(r"\bAS\s+(\w+)", body, re.I))
        for m in re.finditer(r"\b[A-Za-z_]\w*\b", body):
            word, rest = m.group(), body[m.end():].lstrip()
            if rest.startswith("(") or word.lower() in _SQL_WORDS or word in aliases \
                    or word in froms or re.fullmatch(r"\d+\w*", word):
                continue
            assert word in columns, f"{sql!r}: {word!r} is no column of {froms}"
    assert {"readings", "intake_log", "schedules", "kpis"} <= used
