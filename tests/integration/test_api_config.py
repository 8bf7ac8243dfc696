"""``/v1/config``: reads (read scope), writes (admin scope, If-Match), tenant isolation,
and tokens that follow the configuration on a running API."""

from __future__ import annotations

import uuid

import httpx
import pytest

from bus.tokens import TokenView
from ops.config_service import ConfigStore
from ops.serving import api_config
from projections.api import create_app
from tests.helpers import eventually

pytestmark = pytest.mark.servers

TARIFF = {"currency": "EUR", "periods": [
    {"name": "night", "price": "0.08 EUR/kWh", "start": "00:00", "end": "07:00"},
    {"name": "day", "price": "0.20 EUR/kWh", "start": "07:00", "end": "24:00"}]}


@pytest.fixture
async def api(nc, fast_settings):
    """The API app on this loop, with the real token view and configuration store."""
    store = ConfigStore(nc.jetstream())
    a, b = f"cfga-{uuid.uuid4().hex[:6]}", f"cfgb-{uuid.uuid4().hex[:6]}"
    for t in (a, b):
        await store.create_tenant(t, display_name=t, author="test")
    tokens = {
        "a_admin": (await store.issue_token(a, "ana", ["admin"], author="test"))[0],
        "a_read": (await store.issue_token(a, "viewer", ["read"], author="test"))[0],
        "a_write": (await store.issue_token(a, "telegraf", ["write"], author="test"))[0],
        "b_admin": (await store.issue_token(b, "bo", ["admin"], author="test"))[0],
    }
    view = TokenView()
    await view.start(nc.jetstream())
    app = create_app(api_config(fast_settings), tokens=view, config_store=store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://api") as client:
        yield client, store, a, b, tokens
    await view.close()


def _h(token: str, **extra) -> dict:
    return {"Authorization": f"Bearer {token}", **extra}


async def test_put_get_history_with_if_match(api):
    client, store, a, _, tok = api
    r = await client.put("/v1/config/tariff", json=TARIFF, params={"reason": "contract"},
                         headers=_h(tok["a_admin"], **{"If-Match": "0"}))
    assert r.status_code == 200 and r.json()["version"] == 1, r.text
    assert r.headers["etag"] == '"1"' and r.json()["author"] == "ana"
    r = await client.get("/v1/config/tariff", headers=_h(tok["a_read"]))
    assert r.status_code == 200 and r.json()["document"]["periods"][0]["name"] == "night"
    assert r.json()["reason"] == "contract"
    # the same document: no new version
    r = await client.put("/v1/config/tariff", json=TARIFF, headers=_h(tok["a_admin"],
                                                                       **{"If-Match": '"1"'}))
    assert r.json() == {"status": "unchanged", "version": 1}
    # a stale write: 409 with the current version
    changed = {**TARIFF, "demand_charge_per_kw_month": 4.0}
    ok = await client.put("/v1/config/tariff", json=changed,
                          headers=_h(tok["a_admin"], **{"If-Match": "1"}))
    stale = await client.put("/v1/config/tariff", json={**changed, "contracted_power_kw": 90},
                             headers=_h(tok["a_admin"], **{"If-Match": "1"}))
    assert ok.status_code == 200 and stale.status_code == 409
    assert stale.json()["current_version"] == 2 and stale.headers["etag"] == '"2"'
    r = await client.get("/v1/config/tariff/history", headers=_h(tok["a_read"]))
    assert [v["version"] for v in r.json()["versions"]] == [1, 2]


async def test_writes_need_admin_and_if_match_and_valid_documents(api):
    client, _, _, _, tok = api
    for token in ("a_read", "a_write"):
        r = await client.put("/v1/config/tariff", json=TARIFF,
                             headers=_h(tok[token], **{"If-Match": "0"}))
        assert r.status_code == 403, r.text
    r = await client.put("/v1/config/tariff", json=TARIFF, headers=_h(tok["a_admin"]))
    assert r.status_code == 428 and "If-Match" in r.json()["detail"]
    bad = {"periods": [{"name": "x", "price": "1 EUR/kWh", "start": "00:00", "end": "20:00"}]}
    r = await client.put("/v1/config/tariff", json=bad,
                         headers=_h(tok["a_admin"], **{"If-Match": "0"}))
    assert r.status_code == 422 and "no price from 20:00 to 24:00" in r.json()["detail"]
    r = await client.put("/v1/config/tokens", json={"tokens": []},
                         headers=_h(tok["a_admin"], **{"If-Match": "0"}))
    assert r.status_code == 422 and "tagus token" in r.json()["detail"], r.text
    r = await client.get("/v1/config/../etc", headers=_h(tok["a_read"]))
    assert r.status_code in (404, 422)
    r = await client.get("/v1/config/nonsense", headers=_h(tok["a_read"]))
    assert r.status_code == 422 and r.json()["parameter"] == "kind"


async def test_another_tenants_configuration_is_never_seen_or_changed(api):
    client, store, a, b, tok = api
    await store.put(a, "tariff", TARIFF, author="test")
    r = await client.get("/v1/config/tariff", headers=_h(tok["b_admin"]))
    assert r.status_code == 404 and b in r.json()["detail"] and a not in r.text
    r = await client.put("/v1/config/tariff", json={**TARIFF, "contracted_power_kw": 1},
                         headers=_h(tok["b_admin"], **{"If-Match": "0"}))
    assert r.status_code == 200  # B wrote B's tariff, A's is untouched
    assert (await store.current(a, "tariff")).event.version == 1
    assert (await store.current(a, "tariff")).event.document.get("contracted_power_kw") is None


async def test_a_revoked_token_stops_working_on_the_running_api_within_seconds(api):
    client, store, a, _, tok = api
    assert (await client.get("/v1/config/tenant", headers=_h(tok["a_read"]))).status_code == 200
    await store.revoke_token(a, "viewer", author="test")

    async def refused() -> bool:
        r = await client.get("/v1/config/tenant", headers=_h(tok["a_read"]))
        return r.status_code == 403 and "revoked" in r.json()["detail"]
    await eventually(refused, timeout_s=5, what="revoked token refused")
