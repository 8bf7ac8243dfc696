"""``tagus serve opcua`` against real servers and a real asyncua client: a subscription
hears a new release within a second, SCADA's acknowledgement becomes
``schedule.acknowledged``, and one tenant's user can neither see nor touch another's
nodes."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Client, ua

from bus.publish import publish
from contracts.registry import decode
from contracts.schedules import ScheduleAcknowledged
from ops import opcua_service
from ops.config_service import ConfigStore
from ops.dev.stack import free_port
from producers.opcua import NAMESPACE
from tests.helpers import eventually, stream_messages
from tests.schedule_support import released

pytestmark = pytest.mark.servers
HOUR = timedelta(hours=1)


@pytest.fixture
def start() -> datetime:
    """The start of the hour before now, so that now is in period 1 of every schedule
    below (taken when the test starts, not at import: a suite crossing an hour moved
    now into period 2).  Near the end of an hour, wait for the next one first."""
    now = datetime.now(UTC)
    if now.minute == 59 and now.second >= 30:
        time.sleep(61 - now.second)
        now = datetime.now(UTC)
    return now.replace(minute=0, second=0, microsecond=0) - HOUR


@pytest.fixture
async def site(nc, fast_settings):
    """Two tenants with tokens (A may acknowledge, B may only read), and the OPC UA
    service running in this process on a free port."""
    a, b = (f"opc-{x}-{uuid.uuid4().hex[:5]}" for x in "ab")
    store = ConfigStore(nc.jetstream())
    tokens = {}
    for tenant, scopes in ((a, ["operate"]), (b, ["read"])):
        await store.create_tenant(tenant, display_name=tenant, author="test")
        tokens[tenant], _ = await store.issue_token(tenant, "scada", scopes, author="test")
    settings = fast_settings.model_copy(update={"opcua_port": free_port()})
    stop, started = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(opcua_service.run(settings, stop, started=started))
    await asyncio.wait_for(started.wait(), 30)
    try:
        yield opcua_service.endpoint(settings), a, b, tokens
    finally:
        stop.set()
        await task


def client(url: str, user: str, password: str) -> Client:
    c = Client(url, timeout=5)
    c.set_user(user)
    c.set_password(password)
    return c


async def tenant_node(c: Client, tenant: str, path: str):
    ns = await c.get_namespace_index(NAMESPACE)
    return c.get_node(ua.NodeId(f"{tenant}/{path}", ns))


class Changes:
    def __init__(self) -> None:
        self.seen: list[tuple[str, object, float]] = []

    def datachange_notification(self, node, val, data) -> None:
        self.seen.append((node.nodeid.Identifier, val, time.monotonic()))


async def test_a_subscription_hears_a_new_release_within_a_second(start, nc, site):
    url, a, _, tokens = site
    await publish(nc.jetstream(), released(a, 1, start, {"P1": [0.0, 1.0, 0.0, 1.0]}))
    async with client(url, a, tokens[a]) as c:
        version = await tenant_node(c, a, "Version")
        command = await tenant_node(c, a, "Pumps/P1/Command")
        await eventually(lambda: version.read_value(), timeout_s=5, what="version 1 shown")
        assert await command.read_value() == 1.0  # period 1 of version 1
        assert await (await tenant_node(c, a, "Pumps/P1/NextChangeAt")).read_value() == (
            start + 2 * HOUR)
        changes = Changes()
        sub = await c.create_subscription(50, changes)
        await sub.subscribe_data_change([version, command])
        await eventually(lambda: len(changes.seen) >= 2, timeout_s=5, what="initial values")
        sent = time.monotonic()
        await publish(nc.jetstream(), released(a, 2, start, {"P1": [0.0, 0.6, 0.6, 0.6]},
                                               released_at=start + HOUR / 2))
        await eventually(lambda: any(n == f"{a}/Pumps/P1/Command" and v == 0.6
                                     for n, v, _ in changes.seen), timeout_s=5,
                         what="the new command")
        heard = {n: t for n, v, t in changes.seen if v in (2, 0.6)}
        assert set(heard) == {f"{a}/Version", f"{a}/Pumps/P1/Command"}
        assert max(heard.values()) - sent < 1.0, heard
        speeds = await (await tenant_node(c, a, "Pumps/P1/Speeds")).read_value()
        assert speeds == [0.0, 0.6, 0.6, 0.6]


async def test_scada_acknowledges_by_writing_the_version_it_loaded(start, nc, site):
    url, a, _, tokens = site
    schedule = released(a, 3, start, {"P1": [1.0, 1.0]})
    await publish(nc.jetstream(), schedule)
    async with client(url, a, tokens[a]) as c:
        ack = await tenant_node(c, a, "AckVersion")
        await eventually(lambda: _value(c, a, "Version"), timeout_s=5, what="version 3")
        with pytest.raises(ua.uaerrors.BadOutOfRange):  # no such release
            await ack.write_value(ua.Variant(99, ua.VariantType.Int64))
        with pytest.raises(ua.UaStatusCodeError):  # everything else is read-only
            await (await tenant_node(c, a, "Pumps/P1/Command")).write_value(
                ua.Variant(0.0, ua.VariantType.Double))
        await ack.write_value(ua.Variant(3, ua.VariantType.Int64))
        assert await ack.read_value() == 3
    acks = [decode("schedule", m.data) for m in await stream_messages(
        nc, "SCHEDULE", f"tagus.schedule.{a}.acknowledged")]
    assert [(type(e), e.schedule_id, e.version, e.channel, e.by) for e in acks] == [
        (ScheduleAcknowledged, schedule.schedule_id, 3, "opcua", f"{a}/scada")]


async def _value(c: Client, tenant: str, path: str):
    return await (await tenant_node(c, tenant, path)).read_value()


async def test_a_tenants_user_sees_and_touches_only_its_own_nodes(start, nc, site):
    url, a, b, tokens = site
    for tenant in (a, b):
        await publish(nc.jetstream(), released(tenant, 1, start, {"P1": [1.0, 1.0]}))
    async with client(url, a, tokens[a]) as ca, client(url, b, tokens[b]) as c:
        theirs_sub = await ca.create_subscription(50, Changes())
        await eventually(lambda: _value(c, b, "Version"), timeout_s=5, what="B's schedule")
        ns = await c.get_namespace_index(NAMESPACE)
        folder = c.get_node(ua.NodeId("Tagus", ns))
        assert [n.nodeid.Identifier for n in await folder.get_children()] == [f"{b}/"]
        theirs = await tenant_node(c, a, "Pumps/P1/Command")
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await theirs.read_value()
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await (await tenant_node(c, a, "")).get_children()
        sub = await c.create_subscription(50, Changes())
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await sub.subscribe_data_change(theirs)
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # nor delete or take A's
            await c.uaclient.delete_subscriptions([theirs_sub.subscription_id])
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            await c.uaclient.transfer_subscriptions(ua.TransferSubscriptionsParameters(
                SubscriptionIds=[theirs_sub.subscription_id]))
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):  # a read-only token
            await (await tenant_node(c, b, "AckVersion")).write_value(
                ua.Variant(1, ua.VariantType.Int64))
        # revoking the token ends what an open session may do
        await ConfigStore(nc.jetstream()).revoke_token(b, "scada", author="test")
        await eventually(lambda: _denied(c, b, "Version"), timeout_s=5, what="revocation")
    for user, password in ((a, tokens[b]), (b, "tgs_not-a-token"), (b, "")):
        with pytest.raises(ua.uaerrors.BadUserAccessDenied):
            async with client(url, user, password):
                pass
    with pytest.raises(ua.uaerrors.BadIdentityTokenRejected):  # no anonymous sessions
        async with Client(url, timeout=5):
            pass


async def _denied(c: Client, tenant: str, path: str) -> bool:
    try:
        await _value(c, tenant, path)
    except ua.uaerrors.BadUserAccessDenied:
        return True
    return False
