"""Alerts end to end on the real servers (issue 12): a stale sensor raised by the periodic
evaluation, notified once by e-mail (a local SMTP server, aiosmtpd) and webhook (a local
HTTP server), acknowledged through the API, cleared when readings resume; a threshold on
the same readings; replaying the readings and the alerts sends nothing; and a notifier
killed (SIGKILL) mid-send, before and after the end of the message, then restarted:
exactly one e-mail per transition."""

from __future__ import annotations

import asyncio
import contextlib
import email
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from email import policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bus.publish import publish
from contracts.alerts import AlertCleared, AlertRaised
from contracts.base import new_id, utc_now
from contracts.readings import ReadingsNormalised, Series
from contracts.registry import decode
from contracts.tasks import TaskRequested
from ops import wiring
from ops.config_service import ConfigStore
from ops.dev.stack import free_port
from ops.replay import ReplayRequest, replay
from ops.service import runner_for
from tests.conftest import REPO
from tests.helpers import eventually, stream_messages

pytestmark = pytest.mark.servers
aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
T0 = datetime(2020, 6, 1, 8, 0, tzinfo=UTC)


# ---------------------------------------------------------------- local servers


class Mailbox:
    """An SMTP server (aiosmtpd, its own thread) keeping every message it accepted.
    ``hold`` = "rcpt" or "data" stalls the next transaction there until ``release``."""

    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.hold: str | None = None
        self.held = threading.Event()
        self.released = threading.Event()
        self.port = free_port()
        self.controller = aiosmtpd_controller.Controller(self, hostname="127.0.0.1",
                                                         port=self.port)

    async def _stall(self, where: str) -> None:
        if self.hold == where:
            self.hold = None
            self.held.set()
            while not self.released.is_set():
                await asyncio.sleep(0.02)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self._stall("rcpt")
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        # the end-of-data dot has arrived: the message is delivered, whatever comes next
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.SMTP))
        await self._stall("data")
        return "250 Message accepted"

    def notices(self) -> list[str]:
        return [m["X-Tagus-Notice"] for m in self.messages]


class Hooks:
    """An HTTP server recording every POST (headers, JSON body); answers ``status``."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict, dict]] = []
        self.status = 200
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hooks.calls.append((dict(self.headers), json.loads(body)))
                self.send_response(hooks.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def mailbox():
    box = Mailbox()
    box.controller.start()
    yield box
    box.released.set()
    box.controller.stop()


@pytest.fixture
def hooks():
    h = Hooks()
    yield h
    h.server.shutdown()


@contextlib.asynccontextmanager
async def running(nc, settings, *names: str):
    comps, topo = wiring.components(settings), wiring.topology(settings)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(runner_for(nc, comps[n], topo.consumer(n), batch=20).run(stop))
             for n in names]
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(*tasks)


# ---------------------------------------------------------------- helpers


async def configure(nc, tenant: str, alerts: dict) -> None:
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="Acme", author="test")
    await store.put(tenant, "alerts", alerts, author="test")


def readings(tenant: str, minutes_values: list[tuple[int, float]]) -> ReadingsNormalised:
    now = utc_now()
    return ReadingsNormalised(
        event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now, source="test",
        series=[Series(sensor_id="P1", unit="Pa", values=[v for _, v in minutes_values],
                       timestamps_ns=[int((T0 + timedelta(minutes=m)).timestamp() * 1e9)
                                      for m, _ in minutes_values])])


async def evaluate(nc, tenant: str, minutes: int) -> None:
    """Ask for the periodic evaluation at T0 + minutes, and wait for it to complete."""
    now = utc_now()
    request = TaskRequested(event_id=new_id(), tenant=tenant, occurred_at=now,
                            recorded_at=now, kind="alerts.evaluate", requested_by="test",
                            params={"at": (T0 + timedelta(minutes=minutes)).isoformat()})
    await publish(nc.jetstream(), request)

    async def done():
        return [e for e in await events(nc, "TASKS", "task", tenant)
                if getattr(e, "task_id", None) == request.event_id
                and type(e).__name__ in ("TaskCompleted", "TaskFailed")]
    (outcome,) = await eventually(done, timeout_s=30, what="alerts.evaluate outcome")
    assert type(outcome).__name__ == "TaskCompleted", outcome


async def events(nc, stream: str, family: str, tenant: str) -> list:
    return [decode(family, m.data) for m in await stream_messages(
        nc, stream, f"tagus.{family}.{tenant}.>")]


async def alerts_of(nc, tenant: str) -> list:
    return await events(nc, "ALERT", "alert", tenant)


def tokens(tenant: str):
    from bus.tokens import TokenRecord, TokenStore, hash_token

    return TokenStore([TokenRecord("viewer", tenant, ("read",), hash_token("reader")),
                       TokenRecord("ana", tenant, ("operate",), hash_token("operator"))])


# ---------------------------------------------------------------- the tests


async def test_stale_sensor_notified_once_acknowledged_and_cleared(
        nc, fast_settings, mailbox, hooks, monkeypatch):
    tenant = f"alerts-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("TAGUS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TAGUS_SMTP_PORT", str(mailbox.port))
    monkeypatch.setenv(f"TAGUS_SECRET_{tenant.upper().replace('-', '_')}_OPS_HOOK", "s3cret")
    await configure(nc, tenant, {
        "rules": [{"name": "p1-silent", "kind": "stale", "sensors": ["P1"], "minutes": 10},
                  {"name": "p1-high", "kind": "threshold", "sensors": ["P1"], "above": 5e5,
                   "hysteresis": 1e4, "max_age_s": 1e10}],
        "notify": {"email": {"to": ["ops@example.org"]},
                   "webhooks": [{"name": "ops", "url": hooks.url, "secret": "ops-hook"}]}})
    js = nc.jetstream()
    async with running(nc, fast_settings, "questdb-readings", "alerts-readings",
                       "worker-alerts", "questdb-alerts", "notifier"):
        # readings every minute from T0; one spike above 5 bar at minute 3
        await publish(js, readings(tenant, [(0, 4e5), (1, 4e5), (2, 4.1e5)]))
        await publish(js, readings(tenant, [(3, 5.2e5), (4, 4.2e5), (5, 4.1e5)]))
        await eventually(lambda: len(mailbox.messages) == 2, what="threshold raised+cleared")

        await evaluate(nc, tenant, 12)  # 7 minutes without a reading: not yet stale
        await evaluate(nc, tenant, 20)  # 15 minutes: stale
        await eventually(lambda: len(mailbox.messages) == 3 and len(hooks.calls) == 3,
                         what="the stale alert by e-mail and webhook")
        raised = [e for e in await alerts_of(nc, tenant) if isinstance(e, AlertRaised)
                  and e.rule == "p1-silent"]
        assert len(raised) == 1 and raised[0].since == T0 + timedelta(minutes=15)
        stale = raised[0]
        mail = mailbox.messages[2]
        assert mail["X-Tagus-Notice"] == stale.event_id and "ALERT" in mail["Subject"]
        assert "P1: no reading for 15 min" in mail.get_content()
        headers, body = hooks.calls[2]
        assert headers["Idempotency-Key"] == stale.event_id
        assert headers["Authorization"] == "Bearer s3cret"
        assert (body["type"], body["alert_id"], body["subject"]) == (
            "alert.raised", stale.alert_id, "P1")
        assert "s3cret" not in json.dumps(body)

        await evaluate(nc, tenant, 21)  # still stale: one open alert, nothing new
        await asyncio.sleep(0.5)
        assert len(mailbox.messages) == 3 and len(hooks.calls) == 3

        # the API lists it and takes an acknowledgement (operate scope)
        from ops.serving import api_config
        from ops.task_service import TaskDesk
        from projections.api import create_app

        wiring.questdb(fast_settings).wait_for_wal("alerts")
        app = create_app(api_config(fast_settings), tasks=TaskDesk(js), tokens=tokens(tenant))
        reader, operator = ({"Authorization": f"Bearer {t}"} for t in ("reader", "operator"))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://api") as client:
            async with app.router.lifespan_context(app):
                r = await client.get("/v1/alerts", params={"state": "open"}, headers=reader)
                assert r.status_code == 200, r.text
                assert len(r.json()["alerts"]) == 1, r.json()
                (row,) = r.json()["alerts"]
                assert (row["alert_id"], row["state"], row["subject"]) == (
                    stale.alert_id, "open", "P1")
                url = f"/v1/alerts/{stale.alert_id}/ack"
                assert (await client.post(url, headers=reader)).status_code == 403
                r = await client.post(url, json={"comment": "crew on the way"},
                                      headers=operator)
                assert r.json() == {"alert_id": stale.alert_id, "by": "ana",
                                    "status": "acknowledged"}, r.text
                r = await client.post(url, headers=operator)
                assert r.json()["status"] == "already acknowledged"
                r = await client.post(f"/v1/alerts/{uuid.uuid4()}/ack", headers=operator)
                assert r.status_code == 404

                # readings resume: the next evaluation clears it
                await publish(js, readings(tenant, [(22, 4e5)]))
                wiring.questdb(fast_settings).wait_for_wal("readings")
                await evaluate(nc, tenant, 23)
                await eventually(lambda: len(mailbox.messages) == 4 and len(hooks.calls) == 4,
                                 what="the clearance by e-mail and webhook")
                assert "cleared" in mailbox.messages[3]["Subject"]
                assert hooks.calls[3][1]["type"] == "alert.cleared"
                r = await client.post(url, headers=operator)
                assert r.status_code == 409 and "cleared" in r.json()["detail"]
                wiring.questdb(fast_settings).wait_for_wal("alerts")
                r = await client.get("/v1/alerts", headers=reader)
                states = {a["rule"]: (a["state"], a["acknowledged_by"])
                          for a in r.json()["alerts"]}
                assert states == {"p1-silent": ("cleared", "ana"), "p1-high": ("cleared", None)}

    transitions = [e.event_id for e in await alerts_of(nc, tenant)
                   if isinstance(e, AlertRaised | AlertCleared)]
    assert mailbox.notices() == transitions and len(transitions) == 4
    assert [c[0]["Idempotency-Key"] for c in hooks.calls] == transitions

    # replaying the readings (and the alerts themselves) sends nothing again
    for into in ("alerts-readings", "notifier"):
        summary = await replay(fast_settings, ReplayRequest(into=into, tenant=tenant),
                               progress=False, nc=nc)
        assert summary.stats.handled > 0 and summary.stats.dead_lettered == 0
    assert len(mailbox.messages) == 4 and len(hooks.calls) == 4
    assert [e.event_id for e in await alerts_of(nc, tenant)
            if isinstance(e, AlertRaised | AlertCleared)] == transitions


def start_notifier(fast_settings, mailbox) -> subprocess.Popen:
    env = dict(os.environ, TAGUS_CONSUMER_ACK_WAIT_S=str(fast_settings.consumer_ack_wait_s),
               TAGUS_CONSUMER_MAX_DELIVER=str(fast_settings.consumer_max_deliver),
               TAGUS_SMTP_HOST="127.0.0.1", TAGUS_SMTP_PORT=str(mailbox.port),
               TAGUS_NOTIFY_LEASE_S="0.5", TAGUS_LOG_LEVEL="WARNING")
    return subprocess.Popen([sys.executable, "-m", "ops.cli", "run", "notifier"], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def transition(cls, tenant: str, alert_id: str, **fields):
    now = utc_now()
    extra = dict(since=now, severity="critical") if cls is AlertRaised else {}
    extra.update(fields)
    return cls(event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now,
               alert_id=alert_id, rule="p1-high", kind="threshold", subject="P1", as_of=now,
               message="P1 above 6 bar", **extra)


async def test_notifier_killed_mid_send_sends_each_transition_once(nc, fast_settings, mailbox):
    tenant = f"kill-{uuid.uuid4().hex[:6]}"
    await configure(nc, tenant, {"rules": [], "notify": {"email": {"to": ["ops@example.org"]}}})
    js = nc.jetstream()
    alert_id = new_id()
    raised = transition(AlertRaised, tenant, alert_id)
    cleared = transition(AlertCleared, tenant, alert_id)

    # 1. killed before the end of the message (the server stalls the RCPT answer)
    mailbox.hold = "rcpt"
    first = start_notifier(fast_settings, mailbox)
    try:
        await publish(js, raised)
        assert await asyncio.to_thread(mailbox.held.wait, 30), "the notifier never came"
    finally:
        kill(first)
    mailbox.held.clear()
    mailbox.released.set()
    assert mailbox.notices() == []

    # 2. restarted, it takes the claim over and sends; then killed after the end of the
    # next message, before the server's answer
    second = start_notifier(fast_settings, mailbox)
    try:
        await eventually(lambda: mailbox.notices() == [raised.event_id], timeout_s=30,
                         what="the restarted notifier sending the raised alert")
        mailbox.released.clear()
        mailbox.hold = "data"
        await publish(js, cleared)
        assert await asyncio.to_thread(mailbox.held.wait, 30)
    finally:
        kill(second)
    mailbox.released.set()
    assert mailbox.notices() == [raised.event_id, cleared.event_id]

    # 3. restarted: the first is sent, the second's outcome is unknown: neither again
    third = start_notifier(fast_settings, mailbox)
    try:
        kv = await js.key_value("tagus-alert-notices")

        async def state(event) -> str:
            from ops.notifier import _dec

            return _dec((await kv.get(f"{tenant}.email.{event.event_id}")).value).state
        await eventually(lambda: _both(state(raised), state(cleared)), timeout_s=30,
                         what="the claims settled")
        assert await state(raised) == "sent" and await state(cleared) == "unknown"
        info = await js.consumer_info("ALERT", "notifier")
        assert info.num_pending == 0
        await asyncio.sleep(1.5)  # a redelivery would come within the ack wait
    finally:
        third.send_signal(signal.SIGTERM)
        _, err = third.communicate(timeout=30)
    assert third.returncode == 0, err.decode()[-2000:]
    assert mailbox.notices() == [raised.event_id, cleared.event_id]
    assert not await stream_messages(nc, "DEADLETTER")
    (unknown,) = [e for e in await alerts_of(nc, tenant)
                  if type(e).__name__ == "AlertNotificationFailed"]
    assert (unknown.notice_id, unknown.channel, unknown.outcome) == (
        cleared.event_id, "email", "unknown")


async def _both(a, b) -> bool:
    return (await a) in ("sent", "unknown") and (await b) in ("sent", "unknown")


async def test_digest_collects_below_critical_and_a_refusing_webhook_is_on_record(
        nc, fast_settings, mailbox, hooks, monkeypatch):
    from contracts.alerts import AlertDigestDue, AlertNotificationFailed

    tenant = f"digest-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("TAGUS_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("TAGUS_SMTP_PORT", str(mailbox.port))
    await configure(nc, tenant, {"rules": [], "notify": {
        "email": {"to": ["ops@example.org"]}, "digest_minutes": 60,
        "webhooks": [{"name": "gone", "url": hooks.url + "/404"}]}})
    hooks.status = 404
    js = nc.jetstream()
    warning = transition(AlertRaised, tenant, new_id(), severity="warning")
    critical = transition(AlertRaised, tenant, new_id())
    now = utc_now()
    due = AlertDigestDue(event_id=new_id(), tenant=tenant, occurred_at=now, recorded_at=now,
                         window_start=now - timedelta(hours=1), window_end=now, as_of=now)

    async def refusals():
        return [e for e in await alerts_of(nc, tenant)
                if isinstance(e, AlertNotificationFailed)]
    async with running(nc, fast_settings, "notifier"):
        for e in (warning, critical, due):
            await publish(js, e)
        # the webhook refuses the critical alert and the digest: each refusal on record
        await eventually(lambda: _count(refusals(), 2), what="both refusals")
        await eventually(lambda: len(mailbox.messages) == 2, what="critical and digest")
    (critical_mail, digest) = mailbox.messages
    assert critical_mail["X-Tagus-Notice"] == critical.event_id
    assert digest["X-Tagus-Notice"] == due.event_id and "1 alert changes" in digest["Subject"]
    assert warning.alert_id in digest.get_content()
    failed = await refusals()
    assert sorted(f.notice_id for f in failed) == sorted([critical.event_id, due.event_id])
    assert {(f.channel, f.outcome) for f in failed} == {("webhook:gone", "refused")}
    assert all("HTTP 404" in f.reason for f in failed)
    assert len(hooks.calls) == 2 and not await stream_messages(nc, "DEADLETTER")
    # replaying the alerts sends nothing again and records nothing new
    await replay(fast_settings, ReplayRequest(into="notifier", tenant=tenant), progress=False,
                 nc=nc)
    assert len(mailbox.messages) == 2 and len(hooks.calls) == 2 and len(await refusals()) == 2


async def _count(coro, n: int) -> bool:
    return len(await coro) == n


def test_a_fenced_smtp_delivery_never_sends_the_end_of_data(mailbox):
    from ops.notifier import Fenced, NotifierSettings, _build_email, smtp_send

    s = NotifierSettings(smtp_host="127.0.0.1", smtp_port=mailbox.port)
    msg = _build_email("acme", "tagus@localhost", ["ops@example.org"], "test",
                       "first line\n.a line that starts with a dot\n", "n-1")

    def fenced():
        raise Fenced("taken over")
    with pytest.raises(Fenced):
        smtp_send(s, ["ops@example.org"], msg, fenced)
    committed = []
    assert smtp_send(s, ["ops@example.org"], msg, lambda: committed.append(1)).startswith("250")
    (got,) = mailbox.messages
    assert committed == [1] and got["X-Tagus-Notice"] == "n-1"
    assert ".a line that starts with a dot" in got.get_content()
