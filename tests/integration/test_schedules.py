"""Pump schedules end to end on L-Town (issue 11): readings -> ``optimise`` task ->
``schedule.proposed`` verified in EPANET -> approved by an operator (advisory mode) ->
``schedule.released`` on the subject SCADA subscribes to; automatic mode releases by
itself and the next plan knows the one in force; the API lists, shows, exports and
approves, each tenant only its own."""

from __future__ import annotations

import uuid

import httpx
import msgspec
import pytest

from bus.components import Context
from bus.tokens import TokenView
from contracts.errors import ContractError
from contracts.registry import decode, encode
from contracts.schedules import ScheduleApproved, ScheduleProposed, ScheduleReleased
from contracts.tasks import TaskCompleted, TaskFailed, TaskRequested
from ops import wiring
from ops.config_service import ConfigStore
from ops.dev.demo import LTOWN_ASSETS, LTOWN_RULES, LTOWN_TARIFF
from ops.ingest import ingest
from ops.serving import api_config
from ops.service import components_running
from ops.task_service import TaskDesk, request_task
from processors.optimise import task as optimise_task
from projections import schedules
from projections.api import create_app
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"


async def _outcome(nc, task_id):
    for m in await stream_messages(nc, "TASKS"):
        e = decode("task", m.data)
        if getattr(e, "task_id", None) == task_id and isinstance(e, TaskCompleted | TaskFailed):
            return e
    return None


async def _schedule_events(nc, tenant):
    return [decode("schedule", m.data) for m in
            await stream_messages(nc, "SCHEDULE", f"tagus.schedule.{tenant}.>")]


async def _run(nc, js, tenant, kind, params):
    task = await request_task(js, tenant, kind, params, requested_by="test")
    await eventually(lambda: _outcome(nc, task.event_id), timeout_s=240, what=kind)
    done = await _outcome(nc, task.event_id)
    assert isinstance(done, TaskCompleted), done
    return done


async def test_ltown_optimise_approve_release_then_automatic(nc, fast_settings, shared_data):
    tenant = f"ltown-{uuid.uuid4().hex[:6]}"
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="L-Town", timezone="UTC", country="CY",
                              author="test")
    for name, mapping in (("2019-01_SCADA_Flows.csv", "battledim_flows.yaml"),
                          ("2019-01_SCADA_Levels.csv", "battledim_levels.yaml")):
        result = await ingest(fast_settings, shared_data / "battledim" / name, tenant,
                              MAPPINGS / mapping, process="yes", progress=False,
                              timeout_s=600)
        assert type(result.outcome).__name__ == "IntakeParsed"
    for kind, body in (("network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes()),
                       ("assets", LTOWN_ASSETS), ("tariff", LTOWN_TARIFF),
                       ("rules", LTOWN_RULES)):
        await store.put(tenant, kind, body, author="test")
    js = nc.jetstream()
    other = f"other-{uuid.uuid4().hex[:6]}"
    await store.create_tenant(other, display_name="Other", author="test")
    tokens = {"op": (await store.issue_token(tenant, "olga", ["operate"], author="t"))[0],
              "read": (await store.issue_token(tenant, "viewer", ["read"], author="t"))[0],
              "other": (await store.issue_token(other, "bo", ["operate"], author="t"))[0]}
    view = TokenView()
    await view.start(js)
    app = create_app(api_config(fast_settings), tokens=view, config_store=store,
                     tasks=TaskDesk(js))
    topo = wiring.topology(fast_settings)
    try:
        async with components_running(nc, fast_settings, topo, timeout_s=600), \
                app.router.lifespan_context(app), httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                  base_url="http://api") as api:
            # 1. advisory: a 6-hour plan from midnight on measured demand
            await _run(nc, js, tenant, "optimise", {"start": "2019-01-15T00:00Z",
                                                    "horizon_h": 6, "demand": "actual",
                                                    "time_limit_s": 20})
            proposed = [e for e in await _schedule_events(nc, tenant)
                        if isinstance(e, ScheduleProposed)]
            assert len(proposed) == 1
            p = proposed[0]
            assert p.verified and p.feasibility["feasible"], (p.status, p.feasibility)
            assert [len(x.speeds) for x in p.pumps] == [6] and p.pumps[0].pump == "PUMP_1"
            assert all(r for r in p.pumps[0].reasons)  # every period says why
            assert p.inputs["prices_per_kwh"] == pytest.approx([0.10] * 6)  # night rate
            assert p.inputs["demand"] == {"town": "measured p227, p235"}
            assert p.inputs["initial_levels_m"] == {"T1": pytest.approx(3.31)}  # 00:00 reading
            assert p.inputs["warnings"] == []
            levels = p.tanks["T1"]
            assert len(levels) == 7 and min(levels) >= 0.5 - 1e-6 and max(levels) <= 3.9 + 1e-6
            assert levels[-1] >= levels[0] - 0.01  # final level: back to the initial one
            assert p.mode == "advisory"
            assert p.cost == pytest.approx(0.10 * p.energy_kwh, rel=1e-6)  # night rate
            await eventually(lambda: _listed(api, tokens["read"], p.event_id, "proposed"),
                             timeout_s=30, what="listed")

            # nothing released in advisory mode until an operator approves
            assert not [e for e in await _schedule_events(nc, tenant)
                        if isinstance(e, ScheduleReleased)]
            r = await api.post(f"/v1/schedules/{p.event_id}/approve",
                               headers=_h(tokens["read"]))
            assert r.status_code == 403  # read scope cannot approve
            r = await api.post(f"/v1/schedules/{p.event_id}/approve",
                               headers=_h(tokens["other"]))
            assert r.status_code == 404  # another tenant's schedule does not exist for it
            r = await api.post(f"/v1/schedules/{p.event_id}/approve",
                               headers=_h(tokens["op"]), json={"comment": "ok"})
            assert r.status_code == 409 and "past" in r.json()["detail"]  # 2019 has passed
            status, approved = await schedules.approve(
                js, schedules.ScheduleStream(), tenant, p.event_id, by="olga",
                allow_past=True, request_release=lambda t, s, by: request_task(
                    js, t, "schedule.release", {"schedule_id": s, "approved_by": by},
                    requested_by=by))
            assert status == "approved" and isinstance(approved, ScheduleApproved)
            again, _ = await schedules.approve(js, schedules.ScheduleStream(), tenant,
                                               p.event_id, by="olga", allow_past=True)
            assert again == "already"
            released = await eventually(lambda: _released(nc, tenant), timeout_s=60,
                                        what="released")
            assert released[0].version == 1 and released[0].released_by == "olga"
            assert released[0].schedule_id == p.event_id
            assert [x.speeds for x in released[0].pumps] == [x.speeds for x in p.pumps]
            got = [m.subject for m in await stream_messages(nc, "SCHEDULE")
                   if decode("schedule", m.data).event_id == released[0].event_id]
            assert got == [f"tagus.schedule.{tenant}.released"]  # where SCADA listens

            body = await eventually(lambda: _listed(api, tokens["read"], p.event_id,
                                                    "released"), timeout_s=30, what="shown")
            assert body["version"] == 1 and body["released_by"] == "olga"
            d = (await api.get(f"/v1/schedules/{p.event_id}", headers=_h(tokens["read"]))).json()
            assert d["plan"]["pumps"][0]["speeds"] == p.pumps[0].speeds
            assert [h["state"] for h in d["history"]] == ["proposed", "approved", "released"]
            csv = (await api.get(f"/v1/schedules/{p.event_id}.csv",
                                 headers=_h(tokens["read"]))).text.splitlines()
            assert csv[0] == "period_start,PUMP_1" and len(csv) == 7
            assert csv[1].startswith("2019-01-15T00:00:00Z,")
            r = await api.get(f"/v1/schedules/{p.event_id}", headers=_h(tokens["other"]))
            assert r.status_code == 404
            r = await api.get("/v1/schedules/in-force", headers=_h(tokens["read"]),
                              params={"at": "2019-01-15T03:30Z"})
            assert r.json()["version"] == 1 and r.json()["pumps"][0]["speeds"] == \
                p.pumps[0].speeds
            r = await api.get("/v1/schedules/in-force", headers=_h(tokens["read"]),
                              params={"at": "2019-01-15T06:00Z"})  # the horizon has ended
            assert r.status_code == 404
            r = await api.get("/v1/schedules/in-force", headers=_h(tokens["other"]),
                              params={"at": "2019-01-15T03:30Z"})
            assert r.status_code == 404

            # 2. automatic: a verified plan is released by itself, and knows the one in force
            tenant_doc = (await store.current(tenant, "tenant")).event.document
            await store.put(tenant, "tenant", {**tenant_doc, "modes": {"schedules":
                                                                       "automatic"}},
                            author="test")
            await _run(nc, js, tenant, "optimise", {"start": "2019-01-15T02:00Z",
                                                    "horizon_h": 6, "demand": "actual",
                                                    "time_limit_s": 20})
            second = [e for e in await _schedule_events(nc, tenant)
                      if isinstance(e, ScheduleProposed)][-1]
            assert second.mode == "automatic" and second.verified, (second.status, second.reason, second.feasibility, second.solver, second.inputs)
            assert second.inputs["released"] == p.event_id  # the plan in force, 2 h in
            released = await eventually(lambda: _released(nc, tenant, 2), timeout_s=60,
                                        what="automatic release")
            assert released[1].version == 2 and released[1].released_by == "automatic"
            assert released[1].schedule_id == second.event_id

            # 3. replay: the request's inputs loaded again (as of the request: v2 released
            # since is not in force for it) give the identical proposal
            request = next(e for e in (decode("task", m.data) for m in
                                       await stream_messages(nc, "TASKS"))
                           if isinstance(e, TaskRequested) and e.event_id == second.task_id)
            loaders = wiring.components(fast_settings)["worker-twin"].loaders
            resources = {n: await loaders[n](js, request) for n in optimise_task.NEEDS}
            ctx = Context(processor="worker-twin", now=request.recorded_at, input=request,
                          resources=resources)
            again = [e for e in optimise_task.handle_optimise(request, ctx)
                     if isinstance(e, ScheduleProposed)]
            if second.solver["time_limited"]:
                pytest.skip("the wall-clock guard cut the first run short (a loaded "
                            "machine): its schedule depends on where it was cut")
            assert [_timeless(e) for e in again] == [_timeless(second)]
    finally:
        await view.close()


def _timeless(proposal: ScheduleProposed) -> bytes:
    """The proposal's bytes without the one wall-clock figure it records (MILP seconds)."""
    solver = {k: v for k, v in proposal.solver.items() if k != "mip_time_s"}
    return encode(msgspec.structs.replace(proposal, solver=solver))


async def _released(nc, tenant, n=1):
    out = [e for e in await _schedule_events(nc, tenant) if isinstance(e, ScheduleReleased)]
    return out if len(out) >= n else None


async def _listed(api, token, schedule_id, state):
    r = await api.get("/v1/schedules", headers=_h(token), params={"days": 1})
    assert r.status_code == 200, r.text
    for s in r.json()["schedules"]:
        if s["schedule_id"] == schedule_id and s["state"] == state:
            return s
    return None


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class _Stream:
    def __init__(self, events):
        self._events = events

    async def events(self, js, tenant):
        return self._events


def _proposal(**kw):
    from datetime import UTC, datetime

    from contracts.schedules import PumpPlan

    now = datetime(2030, 1, 1, tzinfo=UTC)
    base = dict(event_id=str(uuid.uuid4()), tenant="t", occurred_at=now, recorded_at=now,
                task_id="x", start=now, period_s=3600,
                pumps=[PumpPlan(pump="P", speeds=[1.0, 0.0])], energy_kwh=1.0, cost=1.0,
                verified=True)
    return ScheduleProposed(**{**base, **kw})


async def test_approve_refuses_unknown_unverified_and_past_schedules():
    from datetime import UTC, datetime

    from contracts.errors import NotFoundError

    bad = _proposal(verified=False, reason="tank T1 below 0.5 m at 03:00")
    old = _proposal(start=datetime(2020, 1, 1, tzinfo=UTC))
    stream = _Stream([bad, old])
    with pytest.raises(NotFoundError):
        await schedules.approve(None, stream, "t", str(uuid.uuid4()), by="o")
    with pytest.raises(ContractError, match="not verified in EPANET.*T1 below"):
        await schedules.approve(None, stream, "t", bad.event_id, by="o", allow_past=True)
    with pytest.raises(ContractError, match="past schedule"):
        await schedules.approve(None, stream, "t", old.event_id, by="o",
                                now=datetime(2026, 1, 1, tzinfo=UTC))


async def test_a_what_if_is_never_released():
    """An operator's what-if (demand x 1.3, a pump out of service) answers a question: in
    automatic mode it must not reach SCADA by the chain, by approval or by the release task."""
    from bus.components import Context
    from contracts.config import ChainsDoc, TenantDoc
    from contracts.errors import TenantConfigError
    from processors.chain.rules import matches

    what_if, plan = _proposal(mode="what-if"), _proposal(mode="automatic")
    with pytest.raises(ContractError, match="what-if"):
        await schedules.approve(None, _Stream([what_if]), "t", what_if.event_id, by="o")
    automatic = TenantDoc(display_name="T", modes={"schedules": "automatic"})
    rule = next(r for r in ChainsDoc().rules if r.name == "release-verified")
    assert matches(rule, plan, None, automatic)  # the same rule releases a real plan
    assert not matches(rule, what_if, None, automatic)
    request = TaskRequested(event_id=str(uuid.uuid4()), tenant="t", occurred_at=plan.start,
                            recorded_at=plan.start, kind="schedule.release",
                            params={"schedule_id": what_if.event_id})
    ctx = Context(processor="worker-release", now=plan.start, input=request,
                  resources={"optimise_inputs": {"proposed": what_if, "last_version": 0}})
    with pytest.raises(TenantConfigError, match="what-if"):
        list(optimise_task.handle_release(request, ctx))
