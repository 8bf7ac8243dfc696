"""The notifier (``tagus run notifier``): alert transitions to e-mail (SMTP) and webhooks
(HTTP POST JSON), at most once per channel and transition, across restarts and replicas.

It is a sink on the ALERT stream (a projection whose ``write`` runs on the runner's
loop), here in ``ops/`` because it reads deployment secrets (the SMTP password, webhook
tokens) from the environment and talks to servers outside Tagus; it publishes nothing.

**The guarantee.**  Every (tenant, channel, notice) has one key in KV
``tagus-alert-notices`` (a notice is an alert event, or a digest).  Before anything is
sent the key is created (create-if-absent: one replica wins); the state moves by
compare-and-set on the key's revision:

    sending --(just before the point of no return)--> committing --> sent
       ^  \\--(refused, nothing delivered)--> retry          \\--> unknown (no answer)
       \\-- taken over when its owner's lease expired             failed (refused for good)

The **point of no return** is, for SMTP, the end-of-data dot: the whole message has been
transmitted and only ``.<CRLF>`` is left (a server delivers nothing of a transaction
whose dot never came); for a webhook, the request itself.  Only the holder of the key's
current revision can move it to ``committing``, so a replica that was paused or presumed
dead and wakes up after another took its claim over is fenced off: it closes the
connection without the dot.  A claim found in ``sending`` after its lease (the owner died
before the point of no return) is taken over and sent; one found in ``committing``
(the owner died between the dot and recording the answer) is never sent again and
becomes ``unknown``.  So: **at most one end-of-data per (channel, transition), ever**;
exactly one e-mail unless the notifier dies (or the server does not answer) in the
instant between the dot and the reply, when it is at most one.  The same holds for
webhooks with the request in place of the dot; each POST carries ``Idempotency-Key:
<notice id>`` so a receiver can drop a copy of its own.  KV is a JetStream stream: what it
acknowledged survives a notifier crash; a NATS server power loss can lose it unless
``TAGUS_NATS_SYNC_ALWAYS`` (see FIELD-NOTES).

Refusals that deliver nothing (connection refused, SMTP 4xx, HTTP 408/425/429/5xx) are
retried ``TAGUS_NOTIFY_ATTEMPTS`` times with doubling backoff, then the alert event is
nak'd (the consumer's backoff) and the claim waits in ``retry``.  Permanent refusals
(SMTP 5xx, HTTP 4xx, a missing secret or SMTP server) mark the claim ``failed``; they
and ``unknown`` outcomes are published as ``alert.notification_failed`` (a domain
outcome the tenant may subscribe to; id derived from notice and channel), and the alert
event is acked.  A replayed alert event finds its keys and sends nothing.

**Digests** (``notify.digest_minutes``): transitions below the ``immediate`` severities
are collected per channel (key ``<tenant>.<channel>.digest``); ``alert.digest_due`` sends
them in one message.  Each collected transition is claimed for its digest under its own
key first, so it is in one digest at most and never also sent alone.

Environment: ``TAGUS_SMTP_HOST``, ``_PORT`` (25), ``_TLS`` (none | starttls | ssl),
``_USER``, ``_PASSWORD`` or ``_PASSWORD_FILE``, ``_FROM``, ``_TIMEOUT_S`` (30);
``TAGUS_SECRETS_DIR`` (webhook secrets as files ``<dir>/<tenant>/<name>``; else
``TAGUS_SECRET_<TENANT>_<NAME>``, upper case, ``-`` as ``_``); ``TAGUS_NOTIFY_LEASE_S``
(120), ``_ATTEMPTS`` (3), ``_BACKOFF_S`` (1), ``_WEBHOOK_TIMEOUT_S`` (10),
``_WEBHOOK_HOSTS`` (comma-separated hosts webhooks may reach; unset: any).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets as _secrets
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime
from pathlib import Path

import msgspec
import structlog
from nats.js import api as js_api
from nats.js.errors import (BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError,
                            NotFoundError)

from bus import config_view
from bus.components import Projection
from bus.publish import publish
from contracts.alerts import (AlertAcknowledged, AlertCleared, AlertDigestDue,
                              AlertNotificationFailed, AlertRaised, NotifyDoc)
from contracts.base import Event, derive_id, event_type, utc_now
from contracts.config import parse_document
from contracts.errors import TenantConfigError, TransientError

log = structlog.get_logger("tagus.notifier")

NAME = "notifier"
BUCKET = "tagus-alert-notices"
ACCEPTS = (AlertRaised, AlertCleared, AlertAcknowledged, AlertDigestDue)
FINAL = ("sent", "failed", "unknown")


@dataclass(frozen=True)
class NotifierSettings:
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_tls: str = "none"  # none | starttls | ssl
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str = "tagus@localhost"
    smtp_timeout_s: float = 30.0
    secrets_dir: Path | None = None
    lease_s: float = 120.0
    attempts: int = 3
    backoff_s: float = 1.0
    webhook_timeout_s: float = 10.0
    webhook_hosts: tuple[str, ...] = ()
    replicas: int = 1

    @classmethod
    def from_env(cls, env=os.environ, *, replicas: int = 1) -> NotifierSettings:
        password = env.get("TAGUS_SMTP_PASSWORD")
        if password is None and env.get("TAGUS_SMTP_PASSWORD_FILE"):
            password = Path(env["TAGUS_SMTP_PASSWORD_FILE"]).read_text().strip()
        tls = env.get("TAGUS_SMTP_TLS", "none")
        if tls not in ("none", "starttls", "ssl"):
            raise TenantConfigError(f"TAGUS_SMTP_TLS: expected none, starttls or ssl, got {tls!r}")
        hosts = tuple(h.strip().lower() for h in env.get("TAGUS_NOTIFY_WEBHOOK_HOSTS", "")
                      .split(",") if h.strip())
        return cls(smtp_host=env.get("TAGUS_SMTP_HOST") or None,
                   smtp_port=int(env.get("TAGUS_SMTP_PORT", 465 if tls == "ssl" else 25)),
                   smtp_tls=tls, smtp_user=env.get("TAGUS_SMTP_USER") or None,
                   smtp_password=password,
                   smtp_from=env.get("TAGUS_SMTP_FROM", "tagus@localhost"),
                   smtp_timeout_s=float(env.get("TAGUS_SMTP_TIMEOUT_S", 30)),
                   secrets_dir=Path(env["TAGUS_SECRETS_DIR"]) if env.get("TAGUS_SECRETS_DIR")
                   else None,
                   lease_s=float(env.get("TAGUS_NOTIFY_LEASE_S", 120)),
                   attempts=max(1, int(env.get("TAGUS_NOTIFY_ATTEMPTS", 3))),
                   backoff_s=float(env.get("TAGUS_NOTIFY_BACKOFF_S", 1)),
                   webhook_timeout_s=float(env.get("TAGUS_NOTIFY_WEBHOOK_TIMEOUT_S", 10)),
                   webhook_hosts=hosts, replicas=replicas)

    def secret(self, tenant: str, name: str) -> str | None:
        """A tenant's provisioned secret: a file under ``secrets_dir``, else the
        environment.  Only the tenant's own names: a document cannot reach others'."""
        if self.secrets_dir is not None:
            path = self.secrets_dir / tenant / name
            if path.is_file():
                return path.read_text().strip()
        var = f"TAGUS_SECRET_{tenant}_{name}".upper().replace("-", "_")
        return os.environ.get(var)


# ---------------------------------------------------------------- claims


class Claim(msgspec.Struct, kw_only=True):
    state: str  # sending, committing, sent, retry, failed, unknown; collected: in-digest
    owner: str = ""
    at_ns: int = 0
    attempts: int = 0
    detail: str = ""
    digest: str = ""  # in-digest: the digest notice it belongs to
    items: list[str] = []  # a digest: the transitions it holds


class Buffer(msgspec.Struct, kw_only=True):
    items: list[dict] = []


class Fenced(Exception):
    """Another replica took the claim over: do not send."""


class NotSent(Exception):
    """Nothing reached the receiver (or it refused to take it): safe to try again unless
    ``permanent``."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class Ambiguous(Exception):
    """Past the point of no return and no answer: it may have been delivered."""


class Fence:
    """The claim a delivery holds: every move is compare-and-set on the revision."""

    def __init__(self, kv, key: str, claim: Claim, revision: int) -> None:
        self.kv, self.key, self.claim, self.revision = kv, key, claim, revision

    async def move(self, state: str, detail: str = "", **fields) -> None:
        new = msgspec.structs.replace(self.claim, state=state, at_ns=time.time_ns(),
                                      detail=detail[:1000], **fields)
        try:
            self.revision = await self.kv.update(self.key, _enc(new), last=self.revision)
        except KeyWrongLastSequenceError:
            raise Fenced(f"{self.key} was taken over") from None
        self.claim = new

    async def commit(self) -> None:
        """Just before the point of no return: only the current holder gets past."""
        await self.move("committing")


def _enc(c: Claim) -> bytes:
    return msgspec.msgpack.encode(c)


def _dec(b: bytes) -> Claim:
    return msgspec.msgpack.decode(b, type=Claim)


def channel_token(channel: str) -> str:
    """``email`` / ``webhook:<name>`` as a KV key token."""
    return channel.replace(":", "-")


# ---------------------------------------------------------------- the sink


class Notifier:
    def __init__(self, settings: NotifierSettings) -> None:
        self.settings = settings
        self.me = f"{socket.gethostname()}:{os.getpid()}:{_secrets.token_hex(3)}"
        self._kv = None
        self._docs: dict[str, tuple[int, NotifyDoc | None]] = {}

    async def write(self, events, js) -> None:
        transient = []
        for e in events:
            try:
                await self._one(js, e)
            except TransientError as err:
                transient.append(str(err))
        if transient:  # the whole batch comes back; what was sent is skipped then
            raise TransientError("; ".join(transient))

    async def _one(self, js, e: Event) -> None:
        notify = await self._notify_doc(js, e.tenant)
        if notify is None or not notify.channels():
            return
        kv = await self._bucket(js)
        if isinstance(e, AlertDigestDue):
            outcomes = {c: await self._digest(js, kv, c, e, notify)
                        for c in notify.channels()}
        else:
            transition = event_type(e).split(".", 1)[1]
            if transition not in notify.on or not getattr(e, "notify", True):
                return
            severity = getattr(e, "severity", "warning")
            if notify.digest_minutes and severity not in notify.immediate:
                for c in notify.channels():
                    await self._collect(kv, c, e)
                return
            outcomes = {c: await self._deliver(js, kv, c, e, e.event_id,
                                               self._message(c, e, notify))
                        for c in notify.channels()}
        busy = {c: o for c, o in outcomes.items() if o.startswith(("retry", "busy"))}
        if busy:
            raise TransientError(f"{event_type(e)} {e.event_id}: " + ", ".join(
                f"{c} {o}" for c, o in busy.items()))

    async def _bucket(self, js):
        if self._kv is None:
            try:
                self._kv = await js.key_value(BUCKET)
            except (BucketNotFoundError, NotFoundError):
                self._kv = await js.create_key_value(js_api.KeyValueConfig(
                    bucket=BUCKET, description="alert notifications: one claim per "
                    "channel and transition (at most once)", history=1,
                    storage=js_api.StorageType.FILE, replicas=self.settings.replicas))
        return self._kv

    async def _notify_doc(self, js, tenant: str) -> NotifyDoc | None:
        """The tenant's current ``notify`` settings (who is told now, not then)."""
        held = await config_view.current(js, tenant, "alerts")
        if held is None or held.document is None:
            return None
        cached = self._docs.get(tenant)
        if cached and cached[0] == held.version:
            return cached[1]
        doc = parse_document("alerts", held.document).notify
        self._docs[tenant] = (held.version, doc)
        return doc

    # ------------------------------------------------------------ one notice

    async def _claim(self, kv, key: str) -> tuple[Claim, int] | str:
        """Own the key (created, or taken over), or the reason not to send."""
        for _ in range(20):
            now = time.time_ns()
            try:
                mine = Claim(state="sending", owner=self.me, at_ns=now, attempts=1)
                return mine, await kv.create(key, _enc(mine))
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                continue
            held = _dec(entry.value)
            expired = now - held.at_ns > self.settings.lease_s * 1e9
            if held.state in FINAL:  # settled earlier (and published then, if not sent)
                return f"recorded {held.state}"
            if held.state == "committing":
                if not expired:
                    return "busy: another notifier is finishing it"
                gone = msgspec.structs.replace(held, state="unknown", at_ns=now,
                                               detail=f"{held.owner} stopped after the "
                                               "point of no return: not sent again")
                try:
                    await kv.update(key, _enc(gone), last=entry.revision)
                except KeyWrongLastSequenceError:
                    continue
                log.error("notice outcome unknown", key=key, owner=held.owner)
                return f"unknown: {gone.detail}"
            if held.state == "in-digest":
                return "in-digest"  # collected for a digest: never sent alone
            if held.state == "retry" or expired:
                take = msgspec.structs.replace(held, state="sending", owner=self.me,
                                               at_ns=now, attempts=held.attempts + 1)
                try:
                    return take, await kv.update(key, _enc(take), last=entry.revision)
                except KeyWrongLastSequenceError:
                    continue
            return "busy: another notifier is sending it"
        return "busy: the claim kept changing"

    async def _deliver(self, js, kv, channel: str, cause: Event, notice_id: str, message,
                       *, claimed=None) -> str:
        tenant = cause.tenant
        key = f"{tenant}.{channel_token(channel)}.{notice_id}"
        got = claimed or await self._claim(kv, key)
        if isinstance(got, str):
            if got.startswith("unknown"):
                await self._failed(js, cause, channel, notice_id, "unknown", got[9:])
            return got
        fence = Fence(kv, key, *got)
        bound = log.bind(tenant=tenant, channel=channel, notice=notice_id)
        error = ""
        for attempt in range(1, self.settings.attempts + 1):
            try:
                try:
                    detail = await self._send(channel, tenant, notice_id, message, fence)
                except NotSent as e:
                    error = str(e)
                    if e.permanent:
                        await self._failed(js, cause, channel, notice_id, "refused", error)
                        await fence.move("failed", error)
                        bound.error("notification refused", error=error)
                        return f"failed: {error}"
                    await fence.move("sending", error)  # still ours; lease renewed
                    bound.warning("notification not delivered; retrying", error=error,
                                  attempt=attempt)
                    if attempt < self.settings.attempts:
                        await asyncio.sleep(self.settings.backoff_s * 2 ** (attempt - 1))
                    continue
                except Ambiguous as e:
                    await self._failed(js, cause, channel, notice_id, "unknown", str(e))
                    await fence.move("unknown", str(e))
                    bound.error("notification outcome unknown (not sent again)", error=str(e))
                    return "unknown"
                await fence.move("sent", detail)
                bound.info("notified", detail=detail, attempts=fence.claim.attempts)
                return "sent"
            except Fenced:
                bound.warning("claim taken over by another notifier; not sending")
                return "busy: taken over"
        try:
            await fence.move("retry", error)  # released: the next delivery takes it at once
        except Fenced:
            return "busy: taken over"
        return f"retry: {error}"

    async def _failed(self, js, cause: Event, channel: str, notice_id: str, outcome: str,
                      reason: str) -> None:
        """Tell the stream (before the claim settles: a crash in between publishes this
        same event again, which the stream's duplicate window drops)."""
        now = utc_now()
        await publish(js, AlertNotificationFailed(
            event_id=derive_id("alert.notification_failed", notice_id, channel),
            tenant=cause.tenant, occurred_at=now, recorded_at=now,
            causation_id=cause.event_id,
            correlation_id=cause.correlation_id or cause.event_id, notice_id=notice_id,
            channel=channel, outcome=outcome, reason=reason[:1000],
            alert_id=getattr(cause, "alert_id", None)))

    async def _send(self, channel: str, tenant: str, notice_id: str, message,
                    fence: Fence) -> str:
        if channel == "email":
            return await self._email(message, fence)
        name = channel.split(":", 1)[1]
        return await self._webhook(tenant, name, notice_id, message, fence)

    async def _email(self, message: tuple[list[str], EmailMessage], fence: Fence) -> str:
        s = self.settings
        if not s.smtp_host:
            raise NotSent("no SMTP server configured (TAGUS_SMTP_HOST)", permanent=True)
        recipients, msg = message
        loop = asyncio.get_running_loop()

        def commit() -> None:
            asyncio.run_coroutine_threadsafe(fence.commit(), loop).result(timeout=30)

        return await asyncio.to_thread(smtp_send, s, recipients, msg, commit)

    async def _webhook(self, tenant: str, name: str, notice_id: str, message: dict,
                       fence: Fence) -> str:
        import httpx

        url, secret_name, body = message["url"], message["secret"], message["body"]
        host = (httpx.URL(url).host or "").lower()
        if self.settings.webhook_hosts and host not in self.settings.webhook_hosts:
            raise NotSent(f"webhook host {host!r} is not in TAGUS_NOTIFY_WEBHOOK_HOSTS",
                          permanent=True)
        headers = {"Content-Type": "application/json", "Idempotency-Key": notice_id,
                   "User-Agent": "tagus-notifier", "X-Tagus-Event": body["type"]}
        if secret_name:
            token = self.settings.secret(tenant, secret_name)
            if token is None:
                raise NotSent(f"secret {secret_name!r} is not provisioned for tenant "
                              f"{tenant!r} on the notifier", permanent=True)
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body, default=str, sort_keys=True).encode()
        await fence.commit()
        try:
            async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_s) as client:
                r = await client.post(url, content=data, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as e:
            raise NotSent(f"cannot connect to {host}: {e!r}") from None
        except httpx.HTTPError as e:
            raise Ambiguous(f"POST {url}: {e!r} after the request went out") from None
        if 200 <= r.status_code < 300:
            return f"HTTP {r.status_code}"
        retry = r.status_code in (408, 425, 429) or r.status_code >= 500
        raise NotSent(f"HTTP {r.status_code} {r.text[:200]}", permanent=not retry)

    # ------------------------------------------------------------ messages

    def _message(self, channel: str, e: Event, notify: NotifyDoc):
        body = _payload(e)
        if channel == "email":
            return notify.email.to, _build_email(e.tenant, self.settings.smtp_from, notify.email.to,
                                           _subject(e), _text(e), e.event_id)
        hook = next(w for w in notify.webhooks if f"webhook:{w.name}" == channel)
        return {"url": hook.url, "secret": hook.secret, "body": body}

    # ------------------------------------------------------------ digests

    async def _collect(self, kv, channel: str, e: Event) -> None:
        key = f"{e.tenant}.{channel_token(channel)}.digest"
        item = _payload(e)
        for _ in range(50):
            try:
                entry = await kv.get(key)
                buf, rev = msgspec.msgpack.decode(entry.value, type=Buffer), entry.revision
            except KeyNotFoundError:
                buf, rev = Buffer(), 0
            if any(i["event_id"] == e.event_id for i in buf.items):
                return
            value = msgspec.msgpack.encode(Buffer(items=[*buf.items, item]))
            try:
                await (kv.update(key, value, last=rev) if rev else kv.create(key, value))
                return
            except KeyWrongLastSequenceError:
                continue
        raise TransientError(f"digest buffer {key} kept changing")

    async def _digest(self, js, kv, channel: str, due: AlertDigestDue,
                      notify: NotifyDoc) -> str:
        tenant, token = due.tenant, channel_token(channel)
        got = await self._claim(kv, f"{tenant}.{token}.{due.event_id}")
        if isinstance(got, str):
            if got.startswith("unknown"):
                await self._failed(js, due, channel, due.event_id, "unknown", got[9:])
            return got
        buf_key = f"{tenant}.{token}.digest"
        try:
            entry = await kv.get(buf_key)
            items = msgspec.msgpack.decode(entry.value, type=Buffer).items
        except KeyNotFoundError:
            items = []
        mine = []
        for item in items:  # each transition goes into one digest at most
            key = f"{tenant}.{token}.{item['event_id']}"
            marker = Claim(state="in-digest", owner=self.me, at_ns=time.time_ns(),
                           digest=due.event_id)
            try:
                await kv.create(key, _enc(marker))
                mine.append(item)
            except KeyWrongLastSequenceError:
                held = _dec((await kv.get(key)).value)
                if held.state == "in-digest" and held.digest == due.event_id:
                    mine.append(item)  # ours, from an attempt that died
        claim, rev = got
        if not mine:
            fence = Fence(kv, f"{tenant}.{token}.{due.event_id}", claim, rev)
            await fence.move("sent", "empty digest: nothing to send")
            outcome = "sent"
        else:
            outcome = await self._deliver(
                js, kv, channel, due, due.event_id, self._digest_message(channel, due, mine,
                                                                          notify),
                claimed=(msgspec.structs.replace(claim, items=[i["event_id"] for i in mine]),
                         rev))
        done = outcome.startswith(FINAL)
        # others' items are in their digests; ours leave once this digest is settled
        await self._drop(kv, buf_key, {i["event_id"] for i in items
                                       if done or i not in mine})
        return outcome

    async def _drop(self, kv, key: str, ids: set[str]) -> None:
        for _ in range(50):
            try:
                entry = await kv.get(key)
            except KeyNotFoundError:
                return
            buf = msgspec.msgpack.decode(entry.value, type=Buffer)
            keep = [i for i in buf.items if i["event_id"] not in ids]
            try:
                await kv.update(key, msgspec.msgpack.encode(Buffer(items=keep)),
                                last=entry.revision)
                return
            except KeyWrongLastSequenceError:
                continue

    def _digest_message(self, channel: str, due: AlertDigestDue, items: list[dict],
                        notify: NotifyDoc):
        span = f"{due.window_start:%Y-%m-%d %H:%M}-{due.window_end:%H:%M} UTC"
        if channel == "email":
            lines = [f"{i['type'].split('.')[1]:12} {i['severity'] or '':8} {i['rule']} / "
                     f"{i['subject']}: {i.get('message') or ''} (alert {i['alert_id']})"
                     for i in items]
            text = (f"{len(items)} alert changes for {due.tenant}, {span}:\n\n"
                    + "\n".join(lines) + "\n")
            return notify.email.to, _build_email(due.tenant, self.settings.smtp_from,
                                           notify.email.to, f"[Tagus] {due.tenant}: "
                                           f"{len(items)} alert changes ({span})", text,
                                           due.event_id)
        hook = next(w for w in notify.webhooks if f"webhook:{w.name}" == channel)
        return {"url": hook.url, "secret": hook.secret,
                "body": {"type": "alert.digest", "tenant": due.tenant,
                         "digest_id": due.event_id,
                         "window_start": due.window_start.isoformat(),
                         "window_end": due.window_end.isoformat(), "items": items}}


# ---------------------------------------------------------------- SMTP

_EOL = re.compile(rb"\r\n|\n|\r")
_LEADING_DOT = re.compile(rb"(?m)^\.")


def smtp_send(s: NotifierSettings, recipients: list[str], msg: EmailMessage, commit) -> str:
    """One SMTP transaction, stopped just before the end-of-data dot for ``commit()``
    (which raises ``Fenced`` if this delivery lost its claim: the connection is then
    dropped without the dot, and the server discards the transaction).  Runs in a
    thread.  Raises NotSent (nothing delivered), Ambiguous (no answer after the dot)."""
    cls = smtplib.SMTP_SSL if s.smtp_tls == "ssl" else smtplib.SMTP
    try:
        conn = cls(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
    except (OSError, smtplib.SMTPException) as e:
        raise NotSent(f"cannot connect to {s.smtp_host}:{s.smtp_port}: {e}") from None
    try:
        try:
            conn.ehlo_or_helo_if_needed()
            if s.smtp_tls == "starttls":
                conn.starttls(context=ssl.create_default_context())
                conn.ehlo()
            if s.smtp_user:
                conn.login(s.smtp_user, s.smtp_password or "")
            code, reply = conn.mail(s.smtp_from)
            if code != 250:
                raise NotSent(f"MAIL FROM: {code} {reply!r}", permanent=code >= 500)
            accepted, refused = [], []
            for r in recipients:
                code, reply = conn.rcpt(r)
                (accepted if code in (250, 251) else refused).append((r, code, reply))
            if not accepted:
                worst = max(c for _, c, _ in refused)
                raise NotSent(f"every recipient refused: {refused}", permanent=worst >= 500)
            code, reply = conn.docmd("DATA")
            if code != 354:
                raise NotSent(f"DATA: {code} {reply!r}", permanent=code >= 500)
            data = _LEADING_DOT.sub(b"..", _EOL.sub(b"\r\n", msg.as_bytes(policy=SMTP_POLICY)))
            conn.send(data if data.endswith(b"\r\n") else data + b"\r\n")
        except smtplib.SMTPAuthenticationError as e:
            raise NotSent(f"SMTP login refused: {e}", permanent=True) from None
        except (smtplib.SMTPException, OSError) as e:
            raise NotSent(f"SMTP: {e}") from None
        commit()
        try:
            conn.send(b".\r\n")
            code, reply = conn.getreply()
        except (smtplib.SMTPException, OSError) as e:
            raise Ambiguous(f"no answer after the end of the message: {e}") from None
        if code != 250:
            raise NotSent(f"end of data: {code} {reply!r}", permanent=code >= 500)
        refused_txt = f"; refused {[r for r, _, _ in refused]}" if refused else ""
        try:
            conn.quit()  # the transaction is complete: a polite goodbye
        except (smtplib.SMTPException, OSError):
            pass
        return f"{code} {reply.decode(errors='replace')[:200]}{refused_txt}"
    finally:
        conn.close()  # after a fence or an error: dropped, the transaction never ends


def _build_email(tenant: str, sender: str, to: list[str], subject: str, text: str,
           notice_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    # the same id on a resend after a crash before the dot: clients thread or drop it
    msg["Message-ID"] = f"<{notice_id}@tagus>"
    msg["X-Tagus-Tenant"] = tenant
    msg["X-Tagus-Notice"] = notice_id
    msg.set_content(text)
    return msg


def _payload(e: Event) -> dict:
    body = msgspec.to_builtins(e)
    body.pop("schema", None)
    body["type"] = event_type(e)
    for k in ("severity", "message"):
        body.setdefault(k, None)
    return body


def _subject(e: Event) -> str:
    what = {"alert.raised": "ALERT", "alert.cleared": "cleared",
            "alert.acknowledged": "acknowledged"}[event_type(e)]
    severity = getattr(e, "severity", "")
    return (f"[Tagus] {e.tenant}: {what} {severity + ' ' if what == 'ALERT' else ''}"
            f"{e.rule} / {e.subject}")


def _text(e: Event) -> str:
    lines = [getattr(e, "message", "") or getattr(e, "comment", ""), "",
             f"tenant:   {e.tenant}", f"rule:     {e.rule} ({e.kind})",
             f"subject:  {e.subject}", f"alert id: {e.alert_id}",
             f"as of:    {e.as_of:%Y-%m-%d %H:%M:%S} UTC"]
    if isinstance(e, AlertRaised):
        lines += [f"severity: {e.severity}", f"since:    {e.since:%Y-%m-%d %H:%M:%S} UTC"]
        if e.detail:
            lines.append(f"detail:   {json.dumps(e.detail, default=str)}")
        lines += ["", f"Acknowledge: tagus alerts ack {e.alert_id} --tenant {e.tenant}",
                  f"         or POST /v1/alerts/{e.alert_id}/ack (operate scope)"]
    if isinstance(e, AlertAcknowledged):
        lines.append(f"by:       {e.by}")
    return "\n".join(lines) + "\n"


def component(settings) -> Projection:
    """The notifier as a component of the deployment (``tagus run notifier``)."""
    notifier = Notifier(NotifierSettings.from_env(replicas=settings.stream_replicas))
    return Projection(name=NAME, accepts=ACCEPTS, write=notifier.write, max_batch=16)
