"""One trace from an upload to the released schedule (issue 14, observability).

An L-Town tenant in automatic mode whose chain asks for an ``optimise`` when an upload
has been parsed: the upload of its tank levels -> ``intake.received`` -> normalise ->
``intake.parsed`` -> chain-intake -> ``optimise`` task (worker-twin) ->
``schedule.proposed`` -> chain-schedule -> ``schedule.release`` task (worker-release) ->
``schedule.released``.  Every message on the way carries the upload's trace in its
``traceparent`` header, and the spans the runners record form one tree rooted at the
upload."""

from __future__ import annotations

import uuid

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from contracts.base import event_type
from contracts.registry import decode
from contracts.schedules import ScheduleReleased
from ops import wiring
from ops.config_service import ConfigStore
from ops.dev.demo import LTOWN_ASSETS, LTOWN_RULES, LTOWN_TARIFF
from ops.ingest import ingest, mapping_id_for, register_mapping
from ops.service import components_running
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"


def _exporter() -> InMemorySpanExporter:
    """Spans of this process into memory (the SDK provider is installed once per process;
    a test that installed one before keeps it and gets this exporter added)."""
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "another tracer provider is installed"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def _trace_id(msg) -> str:
    header = (msg.headers or {}).get("traceparent")
    assert header, f"{msg.subject} carries no traceparent"
    return header.split("-")[1]


async def _messages(nc, stream, tenant):
    family = {"TASKS": "task"}.get(stream, stream.lower())
    return [(m, decode(family, m.data)) for m in
            await stream_messages(nc, stream, f"tagus.{family}.{tenant}.>")]


async def test_one_trace_from_an_upload_to_the_released_schedule(nc, fast_settings,
                                                                 shared_data):
    exporter = _exporter()
    tenant = f"trace-{uuid.uuid4().hex[:6]}"
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="L-Town", timezone="UTC", country="CY",
                              author="test")
    # the inflows first, before any chain rule exists: not part of the trace
    result = await ingest(fast_settings, shared_data / "battledim" / "2019-01_SCADA_Flows.csv",
                          tenant, MAPPINGS / "battledim_flows.yaml", process="yes",
                          progress=False, timeout_s=600)
    assert type(result.outcome).__name__ == "IntakeParsed"
    levels = MAPPINGS / "battledim_levels.yaml"
    await register_mapping(nc, tenant, levels, mapping_id_for(levels), author="test")
    for kind, body in (("network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes()),
                       ("assets", LTOWN_ASSETS), ("tariff", LTOWN_TARIFF),
                       ("rules", LTOWN_RULES)):
        await store.put(tenant, kind, body, author="test")
    doc = (await store.current(tenant, "tenant")).event.document
    await store.put(tenant, "tenant", {**doc, "modes": {"schedules": "automatic"}},
                    author="test")
    await store.put(tenant, "chains", {"rules": [
        {"name": "upload-to-optimise", "on": "intake.parsed", "request": "optimise",
         "params": {"start": "2019-01-15T00:00Z", "horizon_h": 6, "demand": "actual",
                    "time_limit_s": 20},
         "delay_s": 5},  # the levels are stored (queryable) before the plan reads them
        {"name": "release-verified", "on": "schedule.proposed",
         "where": {"verified": True, "mode": "automatic"}, "request": "schedule.release",
         "params": {"schedule_id": "{event_id}"}, "automatic_only": "schedules"},
    ]}, author="test")

    topo = wiring.topology(fast_settings)
    async with components_running(nc, fast_settings, topo, timeout_s=600):
        upload = await ingest(fast_settings,
                              shared_data / "battledim" / "2019-01_SCADA_Levels.csv", tenant,
                              levels, process="no",
                              progress=False, timeout_s=600)
        assert type(upload.outcome).__name__ == "IntakeParsed"

        async def released():
            return [(m, e) for m, e in await _messages(nc, "SCHEDULE", tenant)
                    if isinstance(e, ScheduleReleased)]

        await eventually(released, timeout_s=300, interval_s=0.5, what="schedule.released")

    intake_id = upload.intake.event_id
    (received,) = [m for m, e in await _messages(nc, "INTAKE", tenant)
                   if e.event_id == intake_id]
    root = _trace_id(received)
    # every event the upload led to, across five streams, is in the upload's trace
    ((release_msg, release),) = await released()
    path = {"intake.parsed": [], "readings.normalised": [], "task.requested": [],
            "schedule.proposed": [], "schedule.released": []}
    for stream in ("INTAKE", "READINGS", "TASKS", "SCHEDULE"):
        for m, e in await _messages(nc, stream, tenant):
            tag = event_type(e)
            if tag in path and (getattr(e, "causation_id", None) == intake_id
                                or tag in ("task.requested", "schedule.proposed",
                                           "schedule.released")):
                path[tag].append((m, e))
    requested = {e.kind: m for m, e in path["task.requested"]}
    assert sorted(requested) == ["optimise", "schedule.release"]
    for tag, items in path.items():
        assert items, f"no {tag} on the way"
        for m, _ in items:
            assert _trace_id(m) == root, f"{tag} ({m.subject}) left the upload's trace"
    assert _trace_id(release_msg) == root
    assert release.released_by == "automatic"

    # the spans: one tree, rooted at the upload, through the runners and task workers
    spans = [s for s in exporter.get_finished_spans() if f"{s.context.trace_id:032x}" == root]
    names = {s.name for s in spans}
    for expected in ("intake file", "normalise handle", "chain-intake handle",
                     "worker-twin optimise", "chain-schedule handle",
                     "worker-release schedule.release"):
        assert expected in names, (expected, sorted(names))
    ids = {s.context.span_id for s in spans}
    roots = [s for s in spans if s.parent is None or s.parent.span_id not in ids]
    assert [s.name for s in roots] == ["intake file"], sorted(s.name for s in roots)
