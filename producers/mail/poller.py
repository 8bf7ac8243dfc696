"""The mail poller: every configured tenant's mailbox, each message handled exactly once.

A pass over one mailbox (``MailPoller.poll``): log in, list the messages not yet
handled, and for each one

1. fetch its header fields and structure only, and ``plan`` it (``plan.py``);
2. stream each matching attachment to a temporary file, decoded, and submit it to the
   intake like any file upload (object store, ``intake.received``, deduplicated by
   content; the event's params record Message-ID, sender, subject and date);
3. publish an ``intake.failed`` for everything refused (unknown sender, no attachment,
   no matching rule, unknown type, too large, unregistered mapping, unreadable), with an
   id derived from the delivery (mailbox, UIDVALIDITY, UID), the part and the reason,
   and the arrival time as its time, so reading the same delivery again changes nothing;
4. only when every one of those publishes was acknowledged by JetStream, mark the
   message handled (keyword ``TagusProcessed``, or a move);
5. with ``reply: true``, answer the sender in the background once the accounting is in
   (``reply.py``; at most once).

A crash anywhere before 4 reads the message again on the next pass: the attachments are
recognised by their content (``tagus-intake-seen``), the refusals by their ids (kept in
the same bucket as ``<tenant>.mail.<intake id>``, so also after the stream's 2-minute
duplicate window), so nothing is ingested or counted twice.  The same message delivered
again is a new delivery: its attachments are duplicates by content (nothing published),
its refusals are recorded again.  A NATS or IMAP failure stops the pass (the message
stays unmarked) and the mailbox is retried with backoff.

The mailboxes come from the configuration view (kind ``mailbox``), re-read every
``refresh_s``; a changed document is polled at once.  Passwords are read from the
tenant's provisioned secrets (``MailOptions.secret``) when a pass starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import smtplib
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nats.errors
import structlog
from nats.js.errors import KeyNotFoundError

from bus.publish import publish
from bus.subjects import stream_name
from bus.storage import CONFIG_BUCKET, SEEN_BUCKET
from contracts.base import derive_id, utc_now
from contracts.config import MailboxDoc, parse_document
from contracts.errors import TagusError, TenantConfigError, TransientError
from contracts.intake import IntakeFailed
from contracts.registry import decode, encode
from producers.intake import Intake, Submitted
from producers.mail.decode import UnsupportedEncoding
from producers.mail.imap import PROCESSED, ImapSession, MessageUnreadable, TooLarge
from producers.mail.plan import Ingest, Message, Refuse, plan, sender_allowed
from producers.mail.reply import Outcome, SmtpOptions, accounting, compose, line

log = structlog.get_logger("tagus.intake.mail")


@dataclass(frozen=True)
class MailOptions:
    """Deployment settings of the poller (``TAGUS_MAIL_*``, read by ``from_env``).

    ``secrets_dir``: the tenants' secrets as files ``<dir>/<tenant>/<name>``
    (``TAGUS_SECRETS_DIR``, as the notifier's).  ``spool_dir``: where attachments are
    written while they are read (default: the system's temporary folder).
    ``ca_file``: extra CA certificates to trust (a utility's own mail server).
    ``hosts``: the IMAP hosts mailboxes may name (empty: any).  ``tenants``: a glob of
    the tenants this poller serves.  ``smtp``: where replies go (``TAGUS_SMTP_*``);
    ``reply_wait_s``: how long a reply waits for the attachments' accounting.
    """

    secrets_dir: Path | None = None
    spool_dir: Path | None = None
    ca_file: Path | None = None
    hosts: tuple[str, ...] = ()
    tenants: str = "*"
    timeout_s: float = 30.0
    refresh_s: float = 30.0
    max_messages: int = 100  # per mailbox and pass
    max_backoff_s: float = 600.0
    smtp: SmtpOptions = field(default_factory=SmtpOptions)
    reply_wait_s: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> MailOptions:
        def path(name: str) -> Path | None:
            return Path(env[name]) if env.get(name) else None

        return cls(secrets_dir=path("TAGUS_SECRETS_DIR"), spool_dir=path("TAGUS_MAIL_SPOOL_DIR"),
                   ca_file=path("TAGUS_MAIL_CA_FILE"),
                   hosts=tuple(h.strip().lower() for h in env.get("TAGUS_MAIL_HOSTS", "")
                               .split(",") if h.strip()),
                   tenants=env.get("TAGUS_MAIL_TENANTS", "*"),
                   timeout_s=float(env.get("TAGUS_MAIL_TIMEOUT_S", 30)),
                   refresh_s=float(env.get("TAGUS_MAIL_REFRESH_S", 30)),
                   max_messages=int(env.get("TAGUS_MAIL_MAX_MESSAGES", 100)),
                   max_backoff_s=float(env.get("TAGUS_MAIL_MAX_BACKOFF_S", 600)),
                   smtp=SmtpOptions.from_env(env),
                   reply_wait_s=float(env.get("TAGUS_MAIL_REPLY_WAIT_S", 300)))

    def secret(self, tenant: str, name: str, environ: Mapping[str, str]) -> str:
        """The tenant's secret ``name``: ``<secrets_dir>/<tenant>/<name>``, else the
        variable ``TAGUS_SECRET_<TENANT>_<NAME>``; TenantConfigError when neither is set."""
        var = f"TAGUS_SECRET_{tenant}_{name}".upper().replace("-", "_")
        if self.secrets_dir is not None:
            file = self.secrets_dir / tenant / name
            if file.is_file():
                return file.read_text().strip()
        if var in environ:
            return environ[var]
        where = f"{self.secrets_dir / tenant / name} or " if self.secrets_dir else ""
        raise TenantConfigError(f"the mailbox password secret {name!r} of tenant {tenant!r} "
                                f"is not provisioned: put it in {where}${var}")

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.ca_file is not None:
            context.load_verify_locations(cafile=str(self.ca_file))
        return context


@dataclass
class PassStats:
    messages: int = 0
    ingested: int = 0
    duplicates: int = 0
    refused: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class MailPoller:
    def __init__(self, js, intake: Intake, options: MailOptions | None = None, *,
                 environ: Mapping[str, str] | None = None) -> None:
        self.js = js
        self.intake = intake
        self.options = options or MailOptions()
        self.environ = os.environ if environ is None else environ
        self._replies: set[asyncio.Task] = set()

    # ------------------------------------------------------------ configuration

    async def mailboxes(self) -> dict[str, MailboxDoc]:
        """Every served tenant's current ``mailbox`` document (from the view)."""
        out: dict[str, MailboxDoc] = {}
        try:
            kv = await self.js.key_value(CONFIG_BUCKET)
            watcher = await kv.watch("*.mailbox", ignore_deletes=True)
            try:
                while (entry := await watcher.updates(timeout=10)) is not None:
                    tenant = entry.key.partition(".")[0]
                    if not fnmatch.fnmatchcase(tenant, self.options.tenants):
                        continue
                    try:
                        event = decode("config", entry.value)
                        out[tenant] = parse_document("mailbox", event.document)
                    except TagusError as e:  # an old document the model no longer takes
                        log.error("mailbox configuration unreadable", tenant=tenant,
                                  error=str(e))
            finally:
                await watcher.stop()
        except (nats.errors.Error, TimeoutError) as e:
            raise TransientError(f"reading the mailbox configuration: "
                                 f"{type(e).__name__} {e}") from None
        return out

    # ------------------------------------------------------------ one pass

    async def poll(self, tenant: str, doc: MailboxDoc,
                   stop: asyncio.Event | None = None) -> PassStats:
        """One pass over the tenant's mailbox (until ``stop``, between messages).
        TransientError (IMAP or NATS down: the messages not yet marked stay and are read
        again) or TenantConfigError (login refused, folder missing, secret not
        provisioned, host not allowed)."""
        if self.options.hosts and doc.host.lower() not in self.options.hosts:
            raise TenantConfigError(f"mailbox host {doc.host!r} is not one the poller may "
                                    f"reach (TAGUS_MAIL_HOSTS)")
        password = self.options.secret(tenant, doc.password_secret, self.environ)
        session = await asyncio.to_thread(
            ImapSession, doc, password, timeout_s=self.options.timeout_s,
            ssl_context=self.options.ssl_context() if doc.tls != "none" else None)
        stats = PassStats()
        try:
            for uid in await asyncio.to_thread(session.pending, self.options.max_messages):
                if stop is not None and stop.is_set():
                    break
                try:
                    message = await asyncio.to_thread(session.message, uid)
                except MessageUnreadable as e:
                    await self._unreadable(session, tenant, doc, uid, str(e), stats)
                    continue
                if message is None:
                    continue  # expunged meanwhile
                await self._handle(session, tenant, doc, message, stats)
        finally:
            await asyncio.to_thread(session.close)
        return stats

    async def _handle(self, session: ImapSession, tenant: str, doc: MailboxDoc,
                      message: Message, stats: PassStats) -> None:
        started = time.monotonic()
        before = (stats.ingested, stats.duplicates, stats.refused)
        source = f"mail:{doc.user}"
        outcomes: list[Outcome] = []
        replying = PROCESSED not in message.flags and self._replying(tenant, doc, message)
        start_seq = await self._intake_seq() if replying else 0
        if PROCESSED not in message.flags:  # else: handled, only the move is left
            for step in plan(message, doc):
                if isinstance(step, Ingest):
                    got = await self._ingest(session, tenant, doc, message, step, source,
                                             stats)
                else:
                    got = step
                if isinstance(got, Submitted):
                    first = got.event.recorded_at.strftime("%Y-%m-%d %H:%M UTC")
                    outcomes.append(Outcome(step.filename, got.event.event_id,
                                            first_seen=first if got.duplicate else None))
                    continue
                await self._refuse(tenant, message, got, source)
                outcomes.append(Outcome(got.filename, reason=got.reason, detail=got.detail))
                stats.refused += 1
                stats.reasons[got.reason] = stats.reasons.get(got.reason, 0) + 1
        await asyncio.to_thread(session.finish, message.uid)
        stats.messages += 1
        if replying and outcomes:
            task = asyncio.create_task(self._reply(tenant, doc, message, outcomes, start_seq))
            self._replies.add(task)
            task.add_done_callback(self._replies.discard)
        log.info("mail message handled", tenant=tenant, uid=message.uid,
                 message_id=message.message_id, sender=message.sender,
                 ingested=stats.ingested - before[0], duplicates=stats.duplicates - before[1],
                 refused=stats.refused - before[2],
                 duration_ms=round((time.monotonic() - started) * 1000))

    def _replying(self, tenant: str, doc: MailboxDoc, message: Message) -> bool:
        """Whether this message gets a reply (asked for, possible, and not to a stranger
        or a machine)."""
        if not doc.reply or message.automatic or not sender_allowed(message.sender,
                                                                     doc.senders):
            return False
        if self.options.smtp.host is None:
            log.warning("mail reply asked for but no SMTP server (TAGUS_SMTP_HOST)",
                        tenant=tenant, message_id=message.message_id)
            return False
        return True

    async def _intake_seq(self) -> int:
        """The INTAKE stream's next sequence: the accounting of what follows comes later."""
        try:
            return (await self.js.stream_info(stream_name("intake"))).state.last_seq + 1
        except (nats.errors.Error, TimeoutError) as e:
            raise TransientError(f"reading the INTAKE stream's position: NATS "
                                 f"{type(e).__name__} {e}") from None

    async def _reply(self, tenant: str, doc: MailboxDoc, message: Message,
                     outcomes: list[Outcome], start_seq: int) -> None:
        """Wait for the accounting (at most ``reply_wait_s``), then answer the sender.
        At most once: a failure is logged, never retried."""
        try:
            wanted = {o.intake_id for o in outcomes if o.intake_id and o.first_seen is None}
            counted = await accounting(self.js, tenant, start_seq, wanted,
                                       time.monotonic() + self.options.reply_wait_s) \
                if wanted else {}
            lines = [line(o, counted.get(o.intake_id or "")) for o in outcomes]
            reply = compose(message, lines, sender=self.options.smtp.sender, mailbox=doc.user)
            await asyncio.to_thread(self.options.smtp.send, reply)
        except (smtplib.SMTPException, OSError) as e:
            log.warning("mail reply not sent", tenant=tenant, to=message.sender,
                        message_id=message.message_id, error=f"{type(e).__name__}: {e}")
            return
        except Exception:  # noqa: BLE001 - a reply's fault must not go unseen
            log.exception("mail reply failed", tenant=tenant, message_id=message.message_id)
            return
        log.info("mail reply sent", tenant=tenant, to=message.sender,
                 message_id=message.message_id, attachments=len(outcomes),
                 counted=len(counted), waited_for=len(wanted))

    async def replies(self, timeout_s: float | None = None) -> None:
        """Wait for the replies under way (cancelled after ``timeout_s``)."""
        pending = set(self._replies)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=timeout_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("mail replies not sent: stopping", count=len(late))
            await asyncio.gather(*late, return_exceptions=True)

    async def _unreadable(self, session: ImapSession, tenant: str, doc: MailboxDoc, uid: int,
                          detail: str, stats: PassStats) -> None:
        """A message whose structure does not parse: recorded and marked, so it cannot
        stop every later pass."""
        now = utc_now().replace(microsecond=0)
        message = Message(uid=uid, key=f"{session.mailbox}/{session.uidvalidity}/{uid}",
                          message_id="",
                          sender="", subject="", date=now, received_at=now)
        await self._refuse(tenant, message, Refuse("unreadable", detail, f"message {uid}"),
                           f"mail:{doc.user}")
        await asyncio.to_thread(session.finish, uid)
        stats.messages += 1
        stats.refused += 1
        stats.reasons["unreadable"] = stats.reasons.get("unreadable", 0) + 1

    async def _ingest(self, session: ImapSession, tenant: str, doc: MailboxDoc,
                      message: Message, step: Ingest, source: str,
                      stats: PassStats) -> Refuse | Submitted:
        """Stream the attachment to a file and submit it; the refusal, if it is one."""
        limit = doc.max_attachment_bytes
        with tempfile.TemporaryFile(dir=self.options.spool_dir) as f:
            try:
                size = await asyncio.to_thread(session.download, message.uid, step.part, f,
                                               limit)
            except TooLarge as e:
                return Refuse("too_large", f"{message.describe()}: attachment "
                              f"{step.filename!r} is larger than the mailbox's limit of "
                              f"{doc.max_attachment_mb:g} MiB (reading stopped after "
                              f"{e.decoded_bytes} bytes)", step.filename, step.part)
            except UnsupportedEncoding as e:
                return Refuse("unsupported_encoding", f"{message.describe()}: attachment "
                              f"{step.filename!r}: {e}", step.filename, step.part)
            except MessageUnreadable as e:
                return Refuse("unreadable", f"{message.describe()}: attachment "
                              f"{step.filename!r}: {e}", step.filename, step.part)
            f.seek(0)
            try:
                result = await self.intake.submit_detailed(
                    tenant=tenant, source=source, content_type=step.content_type, body=f,
                    filename=step.filename, mapping_id=step.rule.mapping,
                    params=message.params())
            except TenantConfigError as e:
                return Refuse("invalid_mapping", f"{message.describe()}: attachment "
                              f"{step.filename!r}: {e}", step.filename, step.part)
        if result.duplicate:
            stats.duplicates += 1
        else:
            stats.ingested += 1
        log.info("mail attachment submitted", tenant=tenant, filename=step.filename,
                 size_bytes=size, mapping=step.rule.mapping, intake_id=result.event.event_id,
                 duplicate=result.duplicate, message_id=message.message_id)
        return result

    async def _refuse(self, tenant: str, message: Message, step: Refuse, source: str) -> None:
        intake_id = derive_id("mail", tenant, message.key,
                              step.part.section if step.part else "-", step.reason)
        event = IntakeFailed(
            event_id=derive_id(intake_id, "failed"), tenant=tenant,
            occurred_at=message.received_at,
            recorded_at=utc_now(), correlation_id=intake_id, intake_id=intake_id,
            reason=step.reason, detail=step.detail[:2000], source=source,
            filename=step.filename)
        seen_key = f"{tenant}.mail.{intake_id}"
        try:
            seen = await self.js.key_value(SEEN_BUCKET)
            try:
                await seen.get(seen_key)
            except KeyNotFoundError:
                pass
            else:  # recorded by an earlier pass that did not get to mark the message
                log.info("mail refusal already recorded", tenant=tenant, intake_id=intake_id,
                         reason=step.reason, filename=step.filename)
                return
            await publish(self.js, event)
            await seen.put(seen_key, encode(event))
        except (nats.errors.Error, TimeoutError) as e:
            raise TransientError(f"publishing a refusal: NATS {type(e).__name__} {e}") \
                from None
        log.warning("mail refused", tenant=tenant, reason=step.reason, intake_id=intake_id,
                    filename=step.filename, message_id=message.message_id,
                    sender=message.sender)

    # ------------------------------------------------------------ the service

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every configured mailbox on its interval until ``stop`` is set.  A failed
        pass is retried after the interval, doubling per failure up to ``max_backoff_s``."""
        docs: dict[str, MailboxDoc] = {}
        due: dict[str, float] = {}
        failures: dict[str, int] = {}
        next_refresh = 0.0
        while not stop.is_set():
            now = time.monotonic()
            if now >= next_refresh:
                try:
                    fresh = await self.mailboxes()
                except TransientError as e:
                    log.warning("mailbox configuration not read; retrying", error=str(e))
                else:
                    for tenant, doc in fresh.items():
                        if docs.get(tenant) != doc:
                            due[tenant], failures[tenant] = now, 0  # new or changed: now
                    if fresh.keys() != docs.keys() or next_refresh == 0.0:
                        log.info("mailboxes", tenants=sorted(fresh),
                                 enabled=sorted(t for t, d in fresh.items() if d.enabled))
                    docs = fresh
                next_refresh = now + self.options.refresh_s
            for tenant, doc in docs.items():
                if stop.is_set():
                    break
                if not doc.enabled or due.get(tenant, 0.0) > time.monotonic():
                    continue
                due[tenant] = await self._pass(tenant, doc, failures, stop)
            waits = [t for k, t in due.items() if k in docs and docs[k].enabled]
            wake = min([next_refresh, *waits]) - time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.05, wake))
        await self.replies(timeout_s=10)

    async def _pass(self, tenant: str, doc: MailboxDoc, failures: dict[str, int],
                    stop: asyncio.Event) -> float:
        """Run one pass; the monotonic time of the next."""
        started = time.monotonic()
        try:
            stats = await self.poll(tenant, doc, stop)
        except Exception as e:  # noqa: BLE001 - one mailbox's fault stops no other
            failures[tenant] = failures.get(tenant, 0) + 1
            wait = min(self.options.max_backoff_s,
                       doc.interval_s * 2 ** (failures[tenant] - 1))
            expected = isinstance(e, TagusError | OSError)
            (log.warning if expected else log.exception)(
                "mail pass failed", tenant=tenant, host=doc.host, error=type(e).__name__,
                message=str(e), failures=failures[tenant], retry_in_s=wait)
            return time.monotonic() + wait
        failures[tenant] = 0
        if stats.messages:
            log.info("mail pass", tenant=tenant, messages=stats.messages,
                     ingested=stats.ingested, duplicates=stats.duplicates,
                     refused=stats.refused, reasons=stats.reasons,
                     duration_ms=round((time.monotonic() - started) * 1000))
        return started + doc.interval_s
