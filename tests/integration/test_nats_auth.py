"""NATS authentication on the session's embedded server: the service user may do
everything; a tenant user publishes only its readings, hears only its schedules and
alerts, has no JetStream API, and a rotated password stops working at once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
import time
import urllib.request

import bcrypt
import nats
import nats.errors
import pytest

from bus.publish import headers_for, publish
from bus.subjects import subject_for
from contracts.readings import ReadingsReported
from contracts.registry import decode, encode
from ops.dev import stack
from ops.nats_users import example, format_credentials, issue_credentials, revoke_credentials
from tests.helpers import eventually, reported

pytestmark = pytest.mark.servers
A, B = "auth-a", "auth-b"


@pytest.fixture
async def creds(settings):
    """Tenant A's user with a fresh password (issued, or rotated from an earlier test)."""
    return await asyncio.to_thread(issue_credentials, settings, A, rotate=True)


async def connect_as(creds, password: str | None = None, errors: list[str] | None = None):
    async def on_error(e: Exception) -> None:
        if errors is not None:
            errors.append(str(e))

    return await nats.connect(list(creds.servers), user=creds.user,
                              password=password or creds.password,
                              inbox_prefix=creds.inbox_prefix, allow_reconnect=False,
                              connect_timeout=5, error_cb=on_error)


@contextlib.asynccontextmanager
async def tenant(creds):
    """A connection as the tenant user, and the errors the server reported to it."""
    errors: list[str] = []
    conn = await connect_as(creds, errors=errors)
    try:
        yield conn, errors
    finally:
        await conn.close()


def violation(errors: list[str], what: str, subject: str) -> bool:
    """The server's -ERR for this subject reached the client (nats-py lower-cases it)."""
    needle = f'permissions violation for {what} to "{subject.lower()}"'
    return any(needle in e for e in errors)


async def test_a_tenant_publishes_its_readings_and_gets_the_jetstream_ack(nc, creds):
    event = reported(1, tenant=A)
    async with tenant(creds) as (conn, errors):
        ack = await conn.jetstream().publish(subject_for(event), encode(event), timeout=5,
                                             headers=headers_for(event))
    assert ack.stream == "READINGS" and errors == []
    stored = await nc.jetstream().get_msg("READINGS", ack.seq)
    assert stored.subject == f"tagus.readings.{A}.reported"
    assert decode("readings", stored.data) == event


async def test_a_tenant_cannot_publish_another_tenants_readings(nc, creds):
    other = reported(2, tenant=B)
    async with tenant(creds) as (conn, errors):
        await conn.publish(subject_for(other), encode(other), headers=headers_for(other))
        with pytest.raises(nats.errors.TimeoutError):  # the stream would have acked it
            await conn.jetstream().publish(subject_for(other), encode(other), timeout=1)
        await eventually(lambda: len(errors) >= 2, timeout_s=5, what="the server's -ERR")
    assert violation(errors, "publish", f"tagus.readings.{B}.reported")
    assert (await nc.jetstream().stream_info("READINGS")).state.messages == 0


async def test_a_tenant_hears_its_schedules_and_alerts_and_not_another_tenants(nc, creds):
    heard: list[str] = []

    async def on_msg(msg) -> None:
        heard.append(msg.subject)

    async with tenant(creds) as (conn, errors):
        for subject in (f"tagus.schedule.{A}.>", f"tagus.alert.{A}.>",
                        f"tagus.schedule.{B}.>", f"tagus.alert.{B}.>"):
            await conn.subscribe(subject, cb=on_msg)
        await conn.flush()
        await eventually(lambda: len(errors) >= 2, timeout_s=5, what="the server's -ERR")
        for t in (B, A):  # B's first: when A's have arrived, B's would have too
            await nc.publish(f"tagus.schedule.{t}.released", b"schedule")
            await nc.publish(f"tagus.alert.{t}.raised", b"alert")
        await nc.flush()
        await eventually(lambda: len(heard) >= 2, timeout_s=5, what="A's schedule and alert")
        await conn.flush()
    assert sorted(heard) == [f"tagus.alert.{A}.raised", f"tagus.schedule.{A}.released"]
    assert violation(errors, "subscription", f"tagus.schedule.{B}.>")
    assert violation(errors, "subscription", f"tagus.alert.{B}.>")


async def test_a_tenant_cannot_use_the_jetstream_api_nor_read_other_replies(nc, creds):
    await publish(nc.jetstream(), reported(3, tenant=B))
    requests = [("$JS.API.STREAM.INFO.READINGS", b""),
                ("$JS.API.STREAM.MSG.GET.READINGS", b'{"seq": 1}'),
                ("$JS.API.CONSUMER.CREATE.READINGS", b'{"config": {"ack_policy": "none"}}')]
    snooped: list[str] = []

    async def snoop(msg) -> None:
        snooped.append(msg.subject)

    async with tenant(creds) as (conn, errors):
        for subject, body in requests:
            with pytest.raises(nats.errors.TimeoutError):
                await conn.request(subject, body, timeout=0.5)
        await conn.subscribe("_INBOX.>", cb=snoop)  # where the service's API replies go
        await conn.flush()
        await nc.jetstream().stream_info("READINGS")
        await conn.flush()
    for subject, _ in requests:
        assert violation(errors, "publish", subject), errors
    assert violation(errors, "subscription", "_INBOX.>") and snooped == []
    # the same request answers the service user: what stopped the tenant is its permissions
    reply = await nc.request("$JS.API.STREAM.MSG.GET.READINGS", b'{"seq": 1}', timeout=5)
    data = base64.b64decode(json.loads(reply.data)["message"]["data"])
    assert decode("readings", data).tenant == B


async def test_rotation_takes_effect_on_the_running_server(settings, creds):
    old = await connect_as(creds)
    started = time.monotonic()
    new = await asyncio.to_thread(issue_credentials, settings, A, rotate=True)
    assert new.outcome == "rotated" and new.password != creds.password
    await eventually(lambda: old.is_closed, timeout_s=5, what="the old password's session closed")
    with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
        await connect_as(creds)
    await (await connect_as(new)).close()
    assert time.monotonic() - started < 5


async def test_revoked_tenant_users_are_refused(settings, creds):
    kept = await connect_as(creds)
    assert await asyncio.to_thread(revoke_credentials, settings, A)
    await eventually(lambda: kept.is_closed, timeout_s=5, what="the revoked user's session closed")
    with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
        await connect_as(creds)
    assert not await asyncio.to_thread(revoke_credentials, settings, A)


async def test_wrong_or_missing_passwords_are_refused(settings, creds):
    service_user, _ = settings.nats_auth()
    for user, password in ((creds.user, creds.password[:-1] + "x"), (service_user, "guess"),
                           (None, None)):
        with pytest.raises(nats.errors.Error, match="(?i)authorization violation"):
            await nats.connect(settings.nats_servers, user=user, password=password,
                               allow_reconnect=False, connect_timeout=5)


async def test_a_second_issue_keeps_the_password_and_says_how_to_rotate(settings, creds):
    again = await asyncio.to_thread(issue_credentials, settings, A)
    assert again.outcome == "exists" and again.password is None
    shown = format_credentials(again)
    assert f"tagus tenant credentials {A} --rotate" in shown and creds.password not in shown
    await (await connect_as(creds)).close()  # the first password still works


async def test_secrets_are_private_and_only_hashes_reach_the_server_config(settings, creds):
    files = {n: settings.nats_dir / n
             for n in ("service-user.json", "tenant-users.json", "auth.conf")}
    assert {n: p.stat().st_mode & 0o777 for n, p in files.items()} == dict.fromkeys(files, 0o600)
    assert settings.nats_dir.stat().st_mode & 0o777 == 0o700
    service = json.loads(files["service-user.json"].read_text())
    config = files["tenant-users.json"].read_text() + files["auth.conf"].read_text()
    assert creds.password not in config and service["password"] not in config
    entry = json.loads(files["tenant-users.json"].read_text())["tenants"][A]
    assert bcrypt.checkpw(creds.password.encode(), entry["password_bcrypt"].encode())
    before = files["service-user.json"].read_text()
    assert stack.nats_up(settings).startswith("nats: already running")  # a second `stack up`
    assert files["service-user.json"].read_text() == before


async def test_the_service_user_connects_with_no_configuration_and_may_do_everything(
        nc, settings):
    heard: list[str] = []

    async def on_msg(msg) -> None:
        heard.append(msg.subject)

    await nc.subscribe(">", cb=on_msg)
    await nc.flush()
    await publish(nc.jetstream(), reported(4, tenant=B))
    await nc.publish(f"tagus.schedule.{A}.released", b"x")
    await nc.flush()
    await eventually(lambda: f"tagus.schedule.{A}.released" in heard, timeout_s=5)
    assert (await nc.jetstream().stream_info("READINGS")).state.messages == 1
    url = f"http://{settings.nats_host}:{settings.nats_monitor_port}/connz?auth=true&limit=1024"
    with urllib.request.urlopen(url, timeout=5) as r:
        conns = json.loads(r.read())["connections"]
    ours = [c for c in conns if c.get("name") == "tagus-tests"]
    assert ours and {c.get("authorized_user") for c in ours} == {"tagus"}


async def test_the_printed_example_publishes_a_reading_and_hears_a_schedule(nc, creds):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-u", "-c", example(creds), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        stored = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().split()
        assert stored[:2] == ["stored", "READINGS"], (stored, await proc.stderr.read())
        await nc.publish(f"tagus.schedule.{A}.released", b"pumps on at 02:00")
        heard = (await asyncio.wait_for(proc.stdout.readline(), 10)).decode().split()
        assert heard[:2] == ["schedule", f"tagus.schedule.{A}.released"]
    finally:
        proc.kill()
        await proc.wait()
    event = decode("readings", (await nc.jetstream().get_msg("READINGS", int(stored[2]))).data)
    assert isinstance(event, ReadingsReported) and event.tenant == A
    assert event.series[0].sensor_id == "T1_level" and event.series[0].values == [3.25]
