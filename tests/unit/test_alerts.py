"""Alert rules, pure: thresholds with hysteresis and a minimum duration, rates of change,
one alert per rule and subject, stale sensors, event rules, digests, and the rules
document's validation (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bus.components import Context
from contracts.alerts import (
    AlertBook, AlertCleared, AlertDigestDue, AlertPending, AlertRaised, evaluation_instant,
)
from contracts.config import AssetsDoc, TenantDoc, parse_document
from contracts.errors import TenantConfigError
from contracts.intake import IntakeFailed, IntakeParsed
from contracts.readings import ReadingsNormalised, Series
from contracts.tasks import TaskCompleted, TaskFailed, TaskRequested
from processors.alerts import handler

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TENANT = TenantDoc(display_name="Acme")


def doc(*rules, **notify):
    return parse_document("alerts", {"rules": list(rules), "notify": notify})


def batch(i: int, sensor: str, points: list[tuple[float, float]], *, tenant="acme"):
    """Readings of one sensor at T0 + minutes (value SI), recorded just after the last."""
    last = T0 + timedelta(minutes=max(m for m, _ in points))
    return ReadingsNormalised(
        event_id=f"batch-{i}", tenant=tenant, occurred_at=last,
        recorded_at=last + timedelta(seconds=5 + i * 1e-3), source="test",
        series=[Series(sensor_id=sensor, unit="Pa",
                       timestamps_ns=[int((T0 + timedelta(minutes=m)).timestamp() * 1e9)
                                      for m, _ in points],
                       values=[v for _, v in points])])


class Tenant:
    """The runner's part, in memory: config and the alert book as of each input."""

    def __init__(self, alerts, assets=None, name="alerts-readings") -> None:
        self.config = {"tenant": TENANT, "alerts": alerts, "assets": assets, "rules": None}
        self.events: list = []
        self.name = name

    def run(self, event, *, recent=None, inputs=None):
        book = AlertBook.fold(self.events, before=_instant(event))
        ctx = Context(processor=self.name, now=event.recorded_at, input=event, resources={
            "config": self.config, "alert_book": book, "recent_readings": recent or {},
            "alert_inputs": inputs or {}})
        fn = handler.evaluate if isinstance(event, TaskRequested) else handler.handle
        out = list(fn(event, ctx))
        self.events += out
        return out


def _instant(event):
    return evaluation_instant(event) if isinstance(event, TaskRequested) else event.recorded_at


def kinds(events):
    return [type(e).__name__.removeprefix("Alert").lower() for e in events]


PRESSURE = {"name": "p-high", "kind": "threshold", "sensors": ["P1"], "above": "6 bar",
            "hysteresis": "0.5 bar", "min_duration_s": 600, "severity": "critical",
            "max_age_s": 1e9}


def test_threshold_waits_for_the_minimum_duration_and_clears_below_the_hysteresis():
    t = Tenant(doc(PRESSURE))
    assert t.run(batch(1, "P1", [(0, 5.0e5), (1, 5.9e5)])) == []
    # above 6 bar at minute 2: pending, not raised
    (pending,) = t.run(batch(2, "P1", [(2, 6.2e5), (5, 6.3e5)]))
    assert isinstance(pending, AlertPending) and pending.since == T0 + timedelta(minutes=2)
    # still above, 8 minutes in: nothing new; 10 minutes in: raised, same alert
    assert t.run(batch(3, "P1", [(10, 6.4e5)])) == []
    (raised,) = t.run(batch(4, "P1", [(12, 6.1e5)]))
    assert isinstance(raised, AlertRaised) and raised.alert_id == pending.alert_id
    assert raised.since == pending.since and raised.severity == "critical"
    assert raised.limit == 6e5 and "above the limit 6 bar" in raised.message
    # one alert per rule and subject: higher still raises nothing new
    assert t.run(batch(5, "P1", [(13, 7e5), (14, 7.5e5)])) == []
    # 5.8 bar is below 6 but inside the 0.5 bar band: still open
    assert t.run(batch(6, "P1", [(15, 5.8e5)])) == []
    (cleared,) = t.run(batch(7, "P1", [(16, 5.4e5)]))
    assert isinstance(cleared, AlertCleared) and cleared.alert_id == raised.alert_id
    assert cleared.raised and cleared.notify and cleared.severity == "critical"


def test_a_spike_shorter_than_the_minimum_duration_is_never_raised():
    t = Tenant(doc(PRESSURE))
    out = t.run(batch(1, "P1", [(0, 6.5e5), (3, 6.6e5), (6, 5.0e5), (20, 5.0e5)]))
    assert kinds(out) == ["pending", "cleared"]
    assert out[1].raised is False and out[1].notify is False


def test_without_minimum_duration_a_batch_raises_and_clears_within_itself():
    t = Tenant(doc(dict(PRESSURE, min_duration_s=0, hysteresis=0)))
    out = t.run(batch(1, "P1", [(0, 6.5e5), (1, 5e5), (2, 6.5e5)]))
    assert kinds(out) == ["raised", "cleared", "raised"]
    assert out[0].alert_id == out[1].alert_id != out[2].alert_id
    # the same input handled again derives the same events (a redelivery, a replay)
    again = Tenant(doc(dict(PRESSURE, min_duration_s=0, hysteresis=0)))
    assert [e.event_id for e in again.run(batch(1, "P1", [(0, 6.5e5), (1, 5e5),
                                                          (2, 6.5e5)]))] == \
        [e.event_id for e in out]


def test_old_readings_are_not_judged():
    t = Tenant(doc(dict(PRESSURE, min_duration_s=0, max_age_s=3600)))
    old = batch(1, "P1", [(0, 9e5)])
    old = type(old)(**{**{f: getattr(old, f) for f in old.__struct_fields__},
                       "recorded_at": T0 + timedelta(hours=2)})
    assert t.run(old) == []


def test_rate_of_change_uses_the_stored_readings_before_the_batch():
    rule = {"name": "tank-drop", "kind": "rate_of_change", "role": "tank_level",
            "max_fall": "0.5 m", "window_s": 900, "max_age_s": 1e9}
    assets = AssetsDoc(bindings=[{"sensor": "T1", "role": "tank_level", "element": "T1"}])
    t = Tenant(doc(rule), assets)
    ns = [int((T0 + timedelta(minutes=m)).timestamp() * 1e9) for m in (0, 5, 10)]
    recent = {"T1": (ns, [4.0, 3.9, 3.8])}
    (raised,) = t.run(batch(1, "T1", [(15, 3.4)]), recent=recent)  # -0.6 m in 15 min
    assert isinstance(raised, AlertRaised) and raised.value == pytest.approx(-0.6)
    (cleared,) = t.run(batch(2, "T1", [(30, 3.3)]), recent={"T1": (ns + [ns[-1]], [4.0, 3.9,
                                                                                  3.8, 3.4])})
    assert isinstance(cleared, AlertCleared)


def evaluate_at(minutes: float, i: int) -> TaskRequested:
    at = T0 + timedelta(minutes=minutes)
    return TaskRequested(event_id=f"eval-{i}", tenant="acme", occurred_at=at, recorded_at=at,
                         kind="alerts.evaluate", slot=at)


def test_stale_sensor_raised_once_and_cleared_when_readings_resume():
    t = Tenant(doc({"name": "stale", "kind": "stale", "sensors": ["P1", "P2"], "minutes": 10}),
               name="worker-alerts")
    ns = lambda m: int((T0 + timedelta(minutes=m)).timestamp() * 1e9)  # noqa: E731
    assert t.run(evaluate_at(5, 1), inputs={"latest": {"P1": ns(0), "P2": ns(4)}}) == []
    (raised,) = t.run(evaluate_at(12, 2), inputs={"latest": {"P1": ns(0), "P2": ns(11)}})
    assert (raised.subject, raised.since) == ("P1", T0 + timedelta(minutes=10))
    assert "no reading for 12 min" in raised.message
    assert t.run(evaluate_at(13, 3), inputs={"latest": {"P1": ns(0), "P2": ns(12)}}) == []
    (cleared,) = t.run(evaluate_at(14, 4), inputs={"latest": {"P1": ns(13), "P2": ns(13)}})
    assert cleared.alert_id == raised.alert_id and cleared.subject == "P1"


def test_event_rules_raise_on_the_condition_and_clear_on_its_end():
    t = Tenant(doc({"name": "intake", "kind": "intake", "max_rejected_share": 0.5},
                   {"name": "tasks", "kind": "task_failed", "kinds": ["forecast.run"]}),
               name="alerts-intake")
    env = dict(tenant="acme", occurred_at=T0, recorded_at=T0)
    (raised,) = t.run(IntakeFailed(event_id="f1", intake_id="i1", reason="empty_file",
                                   detail="no bytes", source="poller:scada", **env))
    assert raised.subject == "poller:scada" and "empty_file" in raised.message
    counts = dict(rows_received=10, rows_accepted=10, rows_rejected=0, values_received=10,
                  values_missing=0)
    later = dict(env, recorded_at=T0 + timedelta(minutes=1))
    assert t.run(IntakeParsed(event_id="p1", intake_id="i2", source="poller:scada",
                              values_accepted=3, values_rejected=7, **counts, **later)) == []
    (cleared,) = t.run(IntakeParsed(event_id="p2", intake_id="i3", source="poller:scada",
                                    values_accepted=9, values_rejected=1, **counts,
                                    **dict(env, recorded_at=T0 + timedelta(minutes=2))))
    assert cleared.alert_id == raised.alert_id
    t.name = "alerts-tasks"
    assert t.run(TaskFailed(event_id="tf0", task_id="x", kind="optimise", reason="r",
                            **later)) == []
    (failed,) = t.run(TaskFailed(event_id="tf1", task_id="y", kind="forecast.run",
                                 reason="timed out", **later))
    assert failed.subject == "forecast.run"
    (ok,) = t.run(TaskCompleted(event_id="tc1", task_id="z", kind="forecast.run",
                                **dict(env, recorded_at=T0 + timedelta(minutes=3))))
    assert isinstance(ok, AlertCleared) and ok.alert_id == failed.alert_id


def test_digest_windows_are_announced_once_with_ids_of_the_window():
    t = Tenant(doc({"name": "stale", "kind": "stale", "sensors": ["P1"], "minutes": 10},
                   digest_minutes=60, email={"to": ["ops@example.org"]}), name="worker-alerts")
    latest = {"latest": {"P1": int(T0.timestamp() * 1e9)}}
    (due,) = t.run(evaluate_at(1, 1), inputs=latest)
    assert isinstance(due, AlertDigestDue) and due.window_end == T0
    assert t.run(evaluate_at(2, 2), inputs=latest) == []
    (due2,) = [e for e in t.run(evaluate_at(61, 3), inputs=latest)
               if isinstance(e, AlertDigestDue)]
    assert (due2.window_start, due2.window_end) == (T0, T0 + timedelta(hours=1))
    other = Tenant(t.config["alerts"], name="worker-alerts")
    assert other.run(evaluate_at(1.5, 9), inputs=latest)[0].event_id == due.event_id


@pytest.mark.parametrize("rule, error", [
    ({"name": "x", "kind": "threshold", "sensors": ["P1"]}, "rules.0.threshold: above/below"),
    ({"name": "x", "kind": "threshold", "sensors": ["P1"], "above": "6 bra"},
     "unknown unit 'bra'"),
    ({"name": "x", "kind": "threshold", "above": 1}, "sensors: name the sensors"),
    ({"name": "x", "kind": "stale"}, "rules.0.stale.minutes: required field is missing"),
    ({"name": "x", "kind": "nosuch"}, "rules.0: Input tag 'nosuch'"),
])
def test_rules_are_validated_with_field_paths(rule, error):
    with pytest.raises(TenantConfigError, match="alerts: ") as e:
        doc(rule)
    assert error in str(e.value)


def test_notify_settings_are_validated_and_hold_no_secrets():
    with pytest.raises(TenantConfigError, match=r"notify.webhooks.0.url: expected an http"):
        doc(webhooks=[{"name": "ops", "url": "file:///etc/passwd"}])
    with pytest.raises(TenantConfigError, match=r"notify.email.to: .*item 0"):
        doc(email={"to": ["not-an-address"]})
    with pytest.raises(TenantConfigError, match=r"notify.webhooks.0.token: unknown field"):
        doc(webhooks=[{"name": "ops", "url": "https://x.example/h", "token": "s3cret"}])
    ok = doc(email={"to": ["ops@example.org"]},
             webhooks=[{"name": "ops", "url": "https://x.example/h", "secret": "ops-hook"}])
    assert ok.notify.channels() == ["email", "webhook:ops"]


def test_schedule_deviation_per_pump_cleared_by_the_next_release_and_tank_breach():
    from contracts.schedules import PumpPlan, ScheduleDeviated, ScheduleProposed, \
        ScheduleReleased

    t = Tenant(doc({"name": "dev", "kind": "schedule_deviation"},
                   {"name": "tanks", "kind": "tank_breach", "horizon_h": 3, "margin_m": 0.1}),
               name="alerts-schedule")
    env = lambda m: dict(tenant="acme", occurred_at=T0 + timedelta(minutes=m),  # noqa: E731
                         recorded_at=T0 + timedelta(minutes=m))
    deviated = dict(schedule_id="s1", period_start=T0, expected=1.0, observed=0.0,
                    sensor="PUMP1_status")
    (raised,) = t.run(ScheduleDeviated(event_id="d1", pump="PUMP1", **deviated, **env(1)))
    assert raised.subject == "PUMP1" and "should have been at 1" in raised.message
    assert t.run(ScheduleDeviated(event_id="d2", pump="PUMP1", **deviated, **env(2))) == []
    (other,) = t.run(ScheduleDeviated(event_id="d3", pump="PUMP2", **deviated, **env(3)))
    cleared = t.run(ScheduleReleased(event_id="r2", schedule_id="s2", version=2, start=T0,
                                     period_s=3600, pumps=[], released_by="automatic",
                                     proposed_event_id="p2", **env(4)))
    assert sorted(c.alert_id for c in cleared) == sorted([raised.alert_id, other.alert_id])

    proposal = dict(task_id="t", start=T0, period_s=3600, energy_kwh=1.0, cost=1.0,
                    verified=False, pumps=[PumpPlan(pump="PUMP1", speeds=[1, 0, 0, 0, 0])],
                    tank_bounds={"T1": [2.0, 6.0]})
    # below 2 m (+0.1 margin) at the fifth period: outside the 3-hour horizon
    assert t.run(ScheduleProposed(event_id="p3", tanks={"T1": [4, 3.5, 3, 2.5, 1.9]},
                                  **proposal, **env(5))) == []
    (breach,) = t.run(ScheduleProposed(event_id="p4", tanks={"T1": [4, 3, 2.05, 2.5]},
                                       **proposal, **env(6)))
    assert breach.subject == "T1" and breach.value == 2.05 and breach.limit == 2.0
    assert "below its bound 2 m at 2026-03-01 14:00" in breach.message
    (ok,) = t.run(ScheduleProposed(event_id="p5", tanks={"T1": [4, 3.5, 3.0, 3.0]},
                                   **proposal, **env(7)))
    assert isinstance(ok, AlertCleared) and ok.alert_id == breach.alert_id


def test_forecast_deviation_needs_every_hour_outside_the_band():
    t = Tenant(doc({"name": "fd", "kind": "forecast_deviation", "hours": 3}),
               name="worker-alerts")
    hours = [int((T0 - timedelta(hours=3 - k)).timestamp() * 1e9) for k in range(3)]

    def inputs(actual):
        return {"forecast": {"zone:a": {"hours": hours, "actual": actual, "p10": [1.0] * 3,
                                        "p25": [1.2] * 3, "p75": [1.8] * 3,
                                        "p90": [2.0] * 3}}}
    assert t.run(evaluate_at(1, 1), inputs=inputs([2.5, 1.5, 2.6])) == []
    assert t.run(evaluate_at(2, 2), inputs=inputs([2.5, None, 2.6])) == []
    (raised,) = t.run(evaluate_at(3, 3), inputs=inputs([2.5, 0.5, 2.6]))
    assert raised.subject == "zone:a" and raised.since == T0 - timedelta(hours=3)
    (cleared,) = t.run(evaluate_at(4, 4), inputs=inputs([2.5, 2.5, 1.9]))  # last hour in
    assert isinstance(cleared, AlertCleared) and cleared.alert_id == raised.alert_id
