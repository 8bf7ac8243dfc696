"""The ``optimise`` task's problem, built from a tenant's configuration and loaded inputs
(pure): prices per period in the tenant's zone with its holidays, pump rules by local
time, initial levels that are too old not trusted, missing demand said."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.config import parse_document
from contracts.tasks import TaskRequested
from ops.dev.demo import LTOWN_ASSETS, LTOWN_RULES
from processors.optimise.task import problem_of

START = datetime(2019, 1, 1, 5, 0, tzinfo=UTC)  # New Year's Day, 06:00 in Madrid


def _config(shared_data, tz="Europe/Madrid", rules=LTOWN_RULES):
    tariff = {"currency": "EUR", "periods": [
        {"name": "night", "price": "0.10 EUR/kWh", "start": "00:00", "end": "08:00"},
        {"name": "day", "price": "0.25 EUR/kWh", "start": "08:00", "end": "24:00",
         "days": ["mon", "tue", "wed", "thu", "fri"]},
        {"name": "weekend day", "price": "0.15 EUR/kWh", "start": "08:00", "end": "24:00",
         "days": ["sat", "sun", "holiday"]}]}
    return {"tenant": parse_document("tenant", {"display_name": "x", "timezone": tz,
                                                "country": "ES"}),
            "network": (shared_data / "battledim" / "L-TOWN.inp").read_text("latin-1"),
            "assets": parse_document("assets", LTOWN_ASSETS),
            "tariff": parse_document("tariff", tariff),
            "rules": parse_document("rules", rules), "versions": {}}


def _request(**params):
    return TaskRequested(event_id="00000000-0000-4000-8000-000000000001", tenant="t",
                         occurred_at=START, recorded_at=START, kind="optimise",
                         params={"start": START.isoformat(), "horizon_h": 6, **params},
                         requested_by="test")


def _inputs(level_at=START, demand=True):
    flows = {"p50": [0.05] * 6, "p90": [0.06] * 6, "source": "forecast zone:town"}
    return {"levels": {"T1": 3.0}, "level_at": {"T1": level_at},
            "demand": {"town": flows} if demand else {}, "prices": None, "released": None}


def test_prices_follow_the_tenants_clock_and_holidays(shared_data):
    problem, facts = problem_of(_request(), _config(shared_data), _inputs())
    # 06:00, 07:00 Madrid: night; from 08:00 on 1 January (a holiday in Spain): weekend rate
    assert problem.tariff.prices_per_kwh == pytest.approx([0.10, 0.10, 0.15, 0.15, 0.15, 0.15])
    assert facts["warnings"] == [] and problem.initial_levels_m == {"T1": 3.0}
    # the upper quantile protects the lower bound; "*" = every junction for zone "town"
    assert set(problem.demand_multipliers) == set(problem.demand_multipliers_upper) == {"*"}
    up, mid = problem.demand_multipliers_upper["*"], problem.demand_multipliers["*"]
    assert all(u == pytest.approx(m * 1.2) for u, m in zip(up, mid, strict=True))


def test_a_stale_level_and_missing_demand_are_said_not_hidden(shared_data):
    problem, facts = problem_of(_request(), _config(shared_data),
                                _inputs(level_at=START - timedelta(hours=30), demand=False))
    assert problem.initial_levels_m == {}  # the model's own initial level is used
    assert any("T1" in w and "30.0 h before the start" in w for w in facts["warnings"])
    assert any("zone town: no forecast" in w for w in facts["warnings"])


def test_forbidden_windows_and_starts_by_local_time(shared_data):
    rules = {**LTOWN_RULES, "pumps": {"PUMP_1": {
        "max_starts_per_day": 4, "forbidden": [{"start": "07:00", "end": "09:00",
                                                "days": ["tue"]}]}}}
    problem, _ = problem_of(_request(), _config(shared_data, rules=rules), _inputs())
    r = problem.pump_rules["PUMP_1"]
    assert r.forbidden_periods == frozenset({1, 2})  # 07:00 and 08:00 Madrid, a Tuesday
    assert r.max_starts == 1  # 4 per day over 6 hours
