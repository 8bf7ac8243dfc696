"""Tenant configuration as versioned events (issue 8), against the real servers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
import yaml

from bus import config_log
from bus.config_log import VersionConflict
from bus.storage import CONFIG_BUCKET
from bus.tokens import TokenView
from contracts.base import derive_id, utc_now
from contracts.errors import ForbiddenError, NotFoundError, TenantConfigError
from contracts.readings import ReadingsReported
from ops.config_service import ConfigStore
from ops.ingest import register_mapping
from ops.loaders import ConfigLoader
from ops.replay import ReplayRequest, replay
from tests.conftest import REPO
from tests.helpers import eventually

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"

TARIFF = {"currency": "EUR", "periods": [
    {"name": "night", "price": "0.08 EUR/kWh", "start": "00:00", "end": "07:00"},
    {"name": "day", "price": "0.20 EUR/kWh", "start": "07:00", "end": "24:00"}]}
ASSETS = {"bindings": [
    {"sensor": "T1", "role": "tank_level", "element": "T1", "offset_m": 0.0},
    {"sensor": "PUMP_1", "role": "pump_flow", "element": "PUMP_1"},
    {"sensor": "p227", "role": "zone_inflow", "element": "town", "pattern": "P-Residential"},
    {"sensor": "p235", "role": "zone_inflow", "element": "town", "pattern": "P-Commercial"}]}
RULES = {"tanks": {"T1": {"min_level_m": 0.5, "max_level_m": 3.9, "final_level": "initial"}},
         "pumps": {"PUMP_1": {"min_on_s": 3600, "min_off_s": 1800, "max_starts_per_day": 6}}}


@pytest.fixture
async def ltown(nc, shared_data):
    """A configured L-Town tenant: tenant, mappings (its sensors), network."""
    store = ConfigStore(nc.jetstream())
    tenant = f"ltown-{uuid.uuid4().hex[:6]}"
    await store.create_tenant(tenant, display_name="L-Town", timezone="Europe/Nicosia",
                              country="CY", author="test")
    for name in ("battledim_flows", "battledim_levels"):
        await register_mapping(nc, tenant, MAPPINGS / f"{name}.yaml", name.split("_")[1])
    await store.put(tenant, "network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes(),
                    author="test", reason="the utility's model")
    return store, tenant


async def test_a_tenant_is_configured_for_real_and_its_history_is_kept(ltown):
    store, tenant = ltown
    net = (await store.current(tenant, "network")).event
    assert (net.summary["junctions"], net.summary["tanks"], net.summary["pumps"]) == (782, 1, 1)
    assert net.object_name and net.text is None  # 400 kB: in the object store by hash
    assert (await store.document(tenant, "network")).startswith("[TITLE]")
    a = await store.put(tenant, "assets", ASSETS, author="ana", reason="bindings")
    t1 = await store.put(tenant, "tariff", TARIFF, author="ana", reason="2025 contract")
    r = await store.put(tenant, "rules", RULES, author="ana", reason="operating rules")
    assert (a.version, t1.version, r.version) == (1, 1, 1)
    # the same document again is not a new version
    assert await store.put(tenant, "tariff", TARIFF, author="ana") is None
    cheaper = {**TARIFF, "periods": [{**TARIFF["periods"][0], "price": "0.07 EUR/kWh"},
                                     TARIFF["periods"][1]]}
    t2 = await store.put(tenant, "tariff", cheaper, author="bo", reason="new night price",
                         expected_version=1)
    history = await store.history(tenant, "tariff")
    assert [(s.event.version, s.event.author, s.event.reason) for s in history] == [
        (1, "ana", "2025 contract"), (2, "bo", "new night price")]
    diff = await store.diff(tenant, "tariff", 1, 2)
    assert "-  price: 0.08 EUR/kWh" in diff and "+  price: 0.07 EUR/kWh" in diff
    assert t2.recorded_at >= t1.recorded_at
    assert sorted(await config_log.kinds(store.js, tenant)) == [
        "assets", "mapping-flows", "mapping-levels", "network", "rules", "tariff", "tenant"]


async def test_two_writers_racing_on_one_version_exactly_one_wins(ltown):
    store, tenant = ltown
    await store.put(tenant, "tariff", TARIFF, author="ana")
    docs = [{**TARIFF, "demand_charge_per_kw_month": x} for x in (5.0, 7.0)]
    results = await asyncio.gather(
        *(store.put(tenant, "tariff", d, author=f"w{i}", expected_version=1)
          for i, d in enumerate(docs)), return_exceptions=True)
    won = [r for r in results if not isinstance(r, Exception)]
    lost = [r for r in results if isinstance(r, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], VersionConflict)
    assert lost[0].current == 2 and "version 2" in str(lost[0])
    assert [s.event.version for s in await store.history(tenant, "tariff")] == [1, 2]
    with pytest.raises(VersionConflict):  # a stale write, checked before validation
        await store.put(tenant, "tariff", docs[0], author="late", expected_version=1)


@pytest.mark.parametrize(("kind", "body", "message"), [
    ("assets", {"bindings": [{"sensor": "T1", "role": "tank_level", "element": "T9"}]},
     "no tank 'T9'"),
    ("assets", {"bindings": [{"sensor": "nosuch", "role": "pump_flow", "element": "PUMP_1"}]},
     "no sensor 'nosuch'"),
    ("tariff", {"periods": [{"name": "a", "price": 0.1, "start": "00:00", "end": "08:00"},
                            {"name": "b", "price": 0.2, "start": "07:00", "end": "24:00"}]},
     "overlaps"),
    ("tariff", {"periods": [{"name": "a", "price": 0.1, "start": "00:00", "end": "08:00"},
                            {"name": "b", "price": 0.2, "start": "09:00", "end": "24:00"}]},
     "no price from 08:00 to 09:00"),
    ("tariff", {"periods": [{"name": "a", "price": "0.1 ZZZ/kWh"}]}, "unknown price unit"),
    ("rules", {"tanks": {"T1": {"min_level_m": 1, "max_level_m": 99}}}, "outside the tank"),
    ("network", b"[TITLE]\nbroken\n[PIPES]\nP1 J1 J2 100 200\n[END]\n", "cannot read"),
    ("network", bytes(range(256)) * 64, "binary"),
    ("network", b"x" * (50 * 1024 * 1024), "larger than"),
    ("tenant", {"display_name": "x", "timezone": "Mars/Olympus"}, "timezone"),
    ("mapping-bad", b"format: csv\nsensors: {p: {unit: furlongz}}\n", "unknown unit"),
])
async def test_invalid_documents_are_refused_with_a_reason_and_store_nothing(
        ltown, kind, body, message):
    store, tenant = ltown
    before = await store.history(tenant, kind)
    with pytest.raises(TenantConfigError) as info:
        await store.put(tenant, kind, body, author="test")
    assert message in str(info.value), str(info.value)
    assert await store.history(tenant, kind) == before


async def test_configuring_an_unknown_tenant_is_refused(nc):
    with pytest.raises(NotFoundError, match="tagus tenant create"):
        await ConfigStore(nc.jetstream()).put("ghost", "tariff", TARIFF, author="x")


async def test_replay_rebuilds_the_view_byte_identically(ltown, fast_settings, nc):
    store, tenant = ltown
    await store.put(tenant, "assets", ASSETS, author="ana")
    await store.put(tenant, "tariff", TARIFF, author="ana")
    kv = await nc.jetstream().key_value(CONFIG_BUCKET)
    keys = sorted(k for k in await kv.keys() if k.startswith(f"{tenant}."))
    before = {k: (await kv.get(k)).value for k in keys}
    assert len(before) == 6
    for k in keys:
        await kv.purge(k)
    summary = await replay(fast_settings, ReplayRequest(into="config-view", tenant=tenant),
                           progress=False, nc=nc)
    assert summary.stats.handled == summary.matched >= 6
    assert {k: (await kv.get(k)).value for k in keys} == before
    # and again: nothing changes
    await replay(fast_settings, ReplayRequest(into="config-view", tenant=tenant),
                 progress=False, nc=nc)
    assert {k: (await kv.get(k)).value for k in keys} == before


async def test_tokens_are_configuration_and_a_revocation_reaches_a_running_view(ltown, nc):
    store, tenant = ltown
    view = TokenView()
    await view.start(nc.jetstream())
    try:
        token, _ = await store.issue_token(tenant, "ana", ["admin"], author="test")
        reader, _ = await store.issue_token(tenant, "board", ["read"], author="test",
                                            expires_in=timedelta(seconds=2))
        await eventually(lambda: _works(view, token, "operate"), timeout_s=5, what="issued")
        assert view.authenticate(token, "read").tenant == tenant  # admin implies read
        with pytest.raises(ForbiddenError, match="lacks the 'write' scope"):
            view.authenticate(token, "write")
        await eventually(lambda: _works(view, reader, "read"), timeout_s=5, what="reader")
        await store.revoke_token(tenant, "ana", author="test")
        await eventually(lambda: not _works(view, token, "read"), timeout_s=5,
                         what="revocation seen")
        with pytest.raises(ForbiddenError, match="revoked"):
            view.authenticate(token, "read")
        await asyncio.sleep(2.1)
        with pytest.raises(ForbiddenError, match="expired"):
            view.authenticate(reader, "read")
        await store.set_suspended(tenant, True, author="test")
        token2, _ = await store.issue_token(tenant, "ana2", ["read"], author="test")
        await eventually(lambda: _suspended(view, token2), timeout_s=5, what="suspension")
    finally:
        await view.close()


def _works(view, token, scope) -> bool:
    try:
        view.authenticate(token, scope)
        return True
    except ForbiddenError:
        return False


def _suspended(view, token) -> bool:
    try:
        view.authenticate(token, "read")
    except ForbiddenError as e:
        return "suspended" in str(e)
    return False


async def test_a_handler_sees_the_configuration_as_of_its_input_event(ltown):
    """An event recorded before a tariff change, handled (or replayed) after it, gets the
    tariff that was in force; an event that pins versions gets those."""
    store, tenant = ltown
    await store.put(tenant, "tariff", TARIFF, author="ana")
    now = utc_now()
    earlier = ReadingsReported(event_id=derive_id("asof", tenant), tenant=tenant,
                               occurred_at=now, recorded_at=now, source="test", series=[])
    await asyncio.sleep(0.01)
    await store.put(tenant, "tariff", {**TARIFF, "demand_charge_per_kw_month": 9.0},
                    author="bo")
    later = ReadingsReported(event_id=derive_id("asof2", tenant), tenant=tenant,
                             occurred_at=utc_now(), recorded_at=utc_now(), source="test",
                             series=[])
    loader = ConfigLoader()
    old, new = await loader(store.js, earlier), await loader(store.js, later)
    assert (old["versions"]["tariff"], old["tariff"].demand_charge_per_kw_month) == (1, 0.0)
    assert (new["versions"]["tariff"], new["tariff"].demand_charge_per_kw_month) == (2, 9.0)
    assert old["network"].startswith("[TITLE]") and old["assets"] is None


async def test_yaml_documents_from_files_work_like_data(ltown, tmp_path):
    store, tenant = ltown
    path = tmp_path / "tariff.yaml"
    path.write_text(yaml.safe_dump(TARIFF))
    change = await store.put(tenant, "tariff", path.read_bytes(), author="cli")
    assert change.document["periods"][0]["price"] == "0.08 EUR/kWh"


async def test_a_mailbox_rule_naming_a_missing_mapping_is_warned_about(ltown):
    store, tenant = ltown
    doc = {"host": "imap.example.org", "user": "scada", "password_secret": "imap",
           "senders": ["@utility.example"],
           "rules": [{"attachment": "*levels*.csv", "mapping": "levels"},
                     {"attachment": "*pumps*.csv", "mapping": "pumps"}]}
    change = await store.put(tenant, "mailbox", doc, author="ana")
    assert len(change.warnings) == 1, change.warnings
    assert change.warnings[0].startswith("rules.1.mapping:") and "'pumps'" in change.warnings[0]


async def test_a_put_whose_view_update_was_lost_is_completed_by_its_retry(ltown):
    """Seen on a cluster: NATS failed over after the CONFIG append and before the view
    was updated; the client's retry found the same document, stored no new version, and
    the mapping view stayed empty (every ingest of that mapping then failed)."""
    from bus.storage import get_mapping
    from contracts.config import ConfigChanged

    store, tenant = ltown
    text = (MAPPINGS / "battledim_levels.yaml").read_text() + "\n# as the utility sent it\n"
    checked = await store.validate(tenant, "mapping-late", text)
    now = utc_now()
    event = ConfigChanged(event_id=derive_id("config", tenant, "mapping-late", 1,
                                             checked.sha256),
                          tenant=tenant, occurred_at=now, recorded_at=now, kind="mapping-late",
                          version=1, sha256=checked.sha256, document=checked.document,
                          text=checked.text, media_type=checked.media_type, author="test")
    await config_log.append(store.js, event, 0)  # ... and the process died here
    assert await get_mapping(store.js, tenant, "late") is None
    assert await store.put(tenant, "mapping-late", text, author="test") is None  # no v2
    assert await get_mapping(store.js, tenant, "late") == text.encode()


async def test_a_put_that_dies_between_the_two_views_is_completed_by_its_retry(ltown):
    """The same, one step later: the write to the mapping view fails (its stream's leader
    was just killed).  The configuration view must not claim the version yet, so that the
    retry writes both."""
    from bus.storage import MAPPINGS_BUCKET, get_mapping

    store, tenant = ltown
    real = store.js

    class LeaderKilled:  # the real JetStream, but the mapping view's put fails once
        def __getattr__(self, name):
            return getattr(real, name)

        async def key_value(self, bucket):
            kv = await real.key_value(bucket)
            if bucket != MAPPINGS_BUCKET:
                return kv

            async def put(key, value):
                raise TimeoutError("nats: timeout (the bucket's leader is gone)")
            kv.put = put
            return kv

    text = (MAPPINGS / "battledim_levels.yaml").read_text() + "\n# sent twice\n"
    store.js = LeaderKilled()
    with pytest.raises(TimeoutError):
        await store.put(tenant, "mapping-twice", text, author="test")
    store.js = real
    assert await get_mapping(real, tenant, "twice") is None
    assert await store.put(tenant, "mapping-twice", text, author="test") is None  # retry
    assert await get_mapping(real, tenant, "twice") == text.encode()
