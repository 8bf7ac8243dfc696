"""The optional reply to the sender (mailbox ``reply: true``): what became of each
attachment of their message, once the normalise processor has counted it.

- ``Outcome`` and ``line``/``compose`` are pure: one line per attachment (values
  received, accepted, rejected, missing and the first reasons; or the refusal and why),
  an ``EmailMessage`` answering the message (``In-Reply-To``, ``Auto-Submitted:
  auto-replied``, RFC 3834).
- ``accounting`` waits for the ``intake.parsed`` / ``intake.failed`` of the attachments
  this message brought, reading the INTAKE stream from the sequence it had before the
  message was handled (a few events: no consumer is created).
- ``SmtpOptions.send``: the deployment's SMTP server (``TAGUS_SMTP_*``, as the
  notifier's).

At most once: the reply is sent after the message is marked handled, so a poller
stopped in between sends none; a message already handled (a resend, a re-read after a
crash) is answered with "already received" for content seen before.  Never to an
unknown sender nor to an automatic message (``Auto-Submitted``, ``Precedence: bulk``):
no backscatter, no loops.
"""

from __future__ import annotations

import asyncio
import contextlib
import smtplib
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import nats.errors
from nats.js.errors import NotFoundError

from bus.subjects import stream_name, tenant_subjects
from contracts.errors import TenantConfigError
from contracts.intake import IntakeFailed, IntakeParsed
from contracts.registry import decode
from producers.mail.plan import Message

FIRST_REASONS = 3  # reasons named per attachment, by count


@dataclass(frozen=True)
class Outcome:
    """One attachment (or the whole message) and what the poller knows of it.
    ``intake_id``: the upload to wait for (None: refused here, ``reason``/``detail``);
    ``first_seen``: the content was ingested before (its first intake's time)."""

    filename: str
    intake_id: str | None = None
    reason: str | None = None
    detail: str = ""
    first_seen: str | None = None


def line(outcome: Outcome, counted: IntakeParsed | IntakeFailed | None) -> str:
    """What the reply says of one attachment."""
    name = outcome.filename
    if outcome.intake_id is None:
        return f"{name}: refused ({outcome.reason}): {outcome.detail}"
    if outcome.first_seen is not None:
        return (f"{name}: already received {outcome.first_seen} (upload {outcome.intake_id});"
                f" nothing new was read")
    if counted is None:
        return (f"{name}: received (upload {outcome.intake_id}), still being read; its "
                f"accounting will be in the uploads list")
    if isinstance(counted, IntakeFailed):
        return f"{name}: could not be read ({counted.reason}): {counted.detail[:300]}"
    reasons = sorted(counted.reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    first = ", ".join(f"{reason} {n}" for reason, n in reasons[:FIRST_REASONS])
    more = f" and {len(reasons) - FIRST_REASONS} more" if len(reasons) > FIRST_REASONS else ""
    return (f"{name}: {counted.values_received} values: {counted.values_accepted} accepted, "
            f"{counted.values_rejected} rejected, {counted.values_missing} missing"
            + (f" ({first}{more})" if first else ""))


def compose(message: Message, lines: list[str], *, sender: str, mailbox: str) -> EmailMessage:
    """The reply to ``message`` from ``sender`` (the deployment's address)."""
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = message.sender
    subject = message.subject or "(no subject)"
    reply["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    reply["Date"] = formatdate(usegmt=True)
    reply["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "tagus.invalid")
    if message.message_id:
        reply["In-Reply-To"] = message.message_id
        reply["References"] = message.message_id
    reply["Auto-Submitted"] = "auto-replied"
    reply.set_content(
        f"Your message {message.message_id or ''} to {mailbox} "
        f"({message.date:%Y-%m-%d %H:%M} UTC) was read by Tagus:\n\n"
        + "".join(f"- {text}\n" for text in lines)
        + "\nThis is an automatic reply; the uploads list shows the details.\n")
    return reply


async def accounting(js, tenant: str, start_seq: int, wanted: set[str],
                     deadline: float) -> dict[str, IntakeParsed | IntakeFailed]:
    """The ``intake.parsed``/``intake.failed`` of the uploads ``wanted`` appended from
    ``start_seq`` on, as they arrive, until all are there or ``deadline`` (monotonic)."""
    found: dict[str, IntakeParsed | IntakeFailed] = {}
    stream, subject, seq = stream_name("intake"), tenant_subjects("intake", tenant), start_seq
    while wanted - found.keys() and time.monotonic() < deadline:
        try:
            raw = await js.get_msg(stream, seq=seq, subject=subject, next=True)
        except NotFoundError:  # nothing more yet
            await asyncio.sleep(0.5)
            continue
        except (nats.errors.Error, TimeoutError):
            await asyncio.sleep(1)
            continue
        seq = raw.seq + 1
        with contextlib.suppress(Exception):  # another family's stranger: not ours
            event = decode("intake", raw.data)
            if isinstance(event, IntakeParsed | IntakeFailed) and event.intake_id in wanted:
                found[event.intake_id] = event
    return found


@dataclass(frozen=True)
class SmtpOptions:
    """The SMTP server replies go through (``TAGUS_SMTP_HOST`` unset: no replies)."""

    host: str | None = None
    port: int = 25
    tls: str = "none"  # none | starttls | ssl
    user: str | None = None
    password: str | None = None
    sender: str = "tagus@localhost"
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SmtpOptions:
        tls = env.get("TAGUS_SMTP_TLS", "none")
        if tls not in ("none", "starttls", "ssl"):
            raise TenantConfigError(f"TAGUS_SMTP_TLS: expected none, starttls or ssl, "
                                    f"got {tls!r}")
        password = env.get("TAGUS_SMTP_PASSWORD")
        if password is None and env.get("TAGUS_SMTP_PASSWORD_FILE"):
            password = Path(env["TAGUS_SMTP_PASSWORD_FILE"]).read_text().strip()
        return cls(host=env.get("TAGUS_SMTP_HOST") or None,
                   port=int(env.get("TAGUS_SMTP_PORT", 465 if tls == "ssl" else 25)),
                   tls=tls, user=env.get("TAGUS_SMTP_USER") or None, password=password,
                   sender=env.get("TAGUS_SMTP_FROM", "tagus@localhost"),
                   timeout_s=float(env.get("TAGUS_SMTP_TIMEOUT_S", 30)))

    def send(self, message: EmailMessage) -> None:
        """Deliver (blocking); smtplib's and the socket's errors pass through."""
        context = ssl.create_default_context()
        if self.tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, context=context,
                                                    timeout=self.timeout_s)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        with client:
            if self.tls == "starttls":
                client.starttls(context=context)
            if self.user:
                client.login(self.user, self.password or "")
            client.send_message(message)
