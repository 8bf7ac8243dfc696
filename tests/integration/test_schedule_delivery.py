"""Released schedules reach SCADA gateways over NATS (the README's example, run as
written) and MQTT (nats-server's own listener, a real paho client); a tenant hears its
own schedules and is refused another tenant's."""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from datetime import UTC, datetime, timedelta

import msgspec
import nats
import paho.mqtt.client as mqtt
import pytest

from bus.publish import publish
from contracts.registry import decode
from ops.nats_users import issue_credentials
from tests.helpers import eventually
from tests.schedule_support import released

pytestmark = pytest.mark.servers
A, B = "deliver-a", "deliver-b"
START = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)

# The README's example, verbatim: a SCADA gateway that speaks NATS (pip install nats-py msgspec)
NATS_EXAMPLE = '''\
import asyncio, os, msgspec, nats

async def main():
    tenant = os.environ["TAGUS_TENANT"]
    nc = await nats.connect(os.environ["TAGUS_NATS"], user=f"tenant-{tenant}", password=os.environ[
        "TAGUS_NATS_PASSWORD"], inbox_prefix=f"_INBOX_{tenant}")
    async def on_schedule(msg):
        s = msgspec.msgpack.decode(msg.data)  # a dict: schedule_id, version, start, period_s, pumps
        for p in s["pumps"]:
            print(s["version"], s["start"].isoformat(), s["period_s"], p["pump"], p["speeds"], flush=True)
    await nc.subscribe(f"tagus.schedule.{tenant}.released", cb=on_schedule)
    await asyncio.Event().wait()

asyncio.run(main())
'''


@pytest.fixture
async def creds(settings):
    return {t: await asyncio.to_thread(issue_credentials, settings, t, rotate=True)
            for t in (A, B)}


async def test_the_readme_example_prints_a_released_schedule(nc, creds):
    c = creds[A]
    env = {"TAGUS_TENANT": A, "TAGUS_NATS": c.servers[0], "TAGUS_NATS_PASSWORD": c.password,
           "PATH": ""}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-u", "-c", NATS_EXAMPLE, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        schedule = released(A, 7, START, {"P1": [0.0, 1.0, 1.0, 0.0]})
        line = b""
        for _ in range(50):  # publish until the example's subscription is in place
            await publish(nc.jetstream(), schedule)
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), 0.2)
                break
            except TimeoutError:
                assert proc.returncode is None, await proc.stderr.read()
        assert line.decode().split(maxsplit=4) == [
            "7", START.isoformat(), "3600", "P1", "[0.0, 1.0, 1.0, 0.0]\n"], (
            line, await proc.stderr.read() if proc.returncode is not None else b"")
    finally:
        proc.kill()
        await proc.wait()


class _MqttSubscriber:
    """A paho client in its own thread: SUBACK codes by topic, messages in a queue."""

    def __init__(self, url: str, user: str, password: str, client_id: str) -> None:
        host, port = url.removeprefix("mqtt://").rsplit(":", 1)
        self.connected: queue.Queue = queue.Queue()
        self.subacks: queue.Queue = queue.Queue()
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.put(rc)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subacks.put(
            [r.value for r in rcs])
        self.client.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.client.connect(host, int(port))
        self.client.loop_start()

    def subscribe(self, topic: str) -> int:
        self.client.subscribe(topic, qos=1)
        (code,) = self.subacks.get(timeout=5)
        return code

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_an_mqtt_client_gets_its_tenants_schedules_and_not_anothers(nc, creds):
    c = creds[A]
    assert c.mqtt_url, "the test stack runs with TAGUS_NATS_MQTT_PORT"
    sub = await asyncio.to_thread(_MqttSubscriber, c.mqtt_url, c.user, c.password, f"{A}-scada")
    try:
        assert (await asyncio.to_thread(sub.connected.get, True, 5)).is_failure is False
        assert await asyncio.to_thread(sub.subscribe, f"tagus/schedule/{A}/released") == 1
        assert await asyncio.to_thread(sub.subscribe, f"tagus/schedule/{B}/released") == 0x80
        assert await asyncio.to_thread(sub.subscribe, "tagus/schedule/#") == 0x80
        theirs, ours = (released(B, 1, START, {"Q1": [1.0]}),
                        released(A, 3, START, {"P1": [0.0, 1.0], "P2": [0.8, 0.8]}))
        for event in (theirs, ours):  # B's first: when A's has arrived, B's would have too
            await publish(nc.jetstream(), event)
        topic, payload = await asyncio.to_thread(sub.messages.get, True, 5)
        assert topic == f"tagus/schedule/{A}/released" and decode("schedule", payload) == ours
        await asyncio.sleep(0.2)
        assert sub.messages.empty()
    finally:
        await asyncio.to_thread(sub.close)


async def test_mqtt_refuses_a_wrong_password(creds):
    c = creds[A]
    sub = await asyncio.to_thread(_MqttSubscriber, c.mqtt_url, c.user, c.password[:-1] + "x",
                                  f"{A}-intruder")
    try:
        code = await asyncio.to_thread(sub.connected.get, True, 5)
        assert code.is_failure and "not authorized" in str(code).lower(), str(code)
    finally:
        await asyncio.to_thread(sub.close)


async def test_a_tenants_nats_connection_cannot_read_mqtt_deliveries(creds):
    """No ``$MQTT.sub.>`` for tenant users: it would expose every MQTT session's QoS 1
    deliveries (other tenants' included) to the same user's NATS connection."""
    c = creds[A]
    errors: list[str] = []

    async def on_error(e: Exception) -> None:
        errors.append(str(e))

    conn = await nats.connect(list(c.servers), user=c.user, password=c.password,
                              inbox_prefix=c.inbox_prefix, allow_reconnect=False,
                              error_cb=on_error)
    try:
        await conn.subscribe("$MQTT.sub.>")
        await conn.flush()
        await eventually(lambda: errors, timeout_s=5, what="the server's -ERR")
    finally:
        await conn.close()
    assert any('permissions violation for subscription to "$mqtt.sub.>"' in e for e in errors)


def test_stack_up_says_how_to_change_the_mqtt_listener_of_a_running_server(settings):
    """nats-server cannot open or close its MQTT listener on a reload: one actionable line."""
    from contracts.errors import SetupError
    from ops.dev import stack

    try:
        with pytest.raises(SetupError, match=r"has MQTT on port \d+ and the settings ask for "
                                             r"no MQTT listener.*tagus stack down && tagus "
                                             r"stack up"):
            stack.nats_up(settings.model_copy(update={"nats_mqtt_port": None}))
    finally:
        assert stack.nats_up(settings).startswith("nats: already running")  # nats.conf back
