"""What to do with one message (pure): which attachments to ingest with which mapping,
and which outcome to record for everything else.

Every message ends in outcomes the operators can see: an ingested attachment is an
upload (its accounting comes from the normalise processor); anything refused here is an
``intake.failed`` with one of the ``REASONS`` and a detail naming the message.
"""

from __future__ import annotations

import email
import email.header
import email.utils
import fnmatch
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email import policy
from pathlib import PurePath

from contracts.config import MailboxDoc, MailRule
from producers.intake import CONTENT_TYPES
from producers.mail.decode import decoded_estimate
from producers.mail.wire import Part

HEADER_FIELDS = ("FROM", "SUBJECT", "DATE", "MESSAGE-ID", "AUTO-SUBMITTED", "PRECEDENCE")
REASONS = {
    "unknown_sender": "the sender is not on the mailbox's allow-list",
    "no_attachment": "the message has no attachment",
    "no_matching_rule": "no rule of the mailbox matches the attachment",
    "unsupported_format": "the attachment's file type is not one the intake reads",
    "unsupported_encoding": "the attachment's transfer encoding is unknown",
    "too_large": "the attachment exceeds the mailbox's max_attachment_mb",
    "invalid_mapping": "the rule's source mapping is not registered for the tenant",
    "unreadable": "the server's description of the message cannot be parsed",
}


@dataclass(frozen=True)
class Message:
    """One message as the poller sees it before fetching any part.

    ``key``: what identifies this delivery of the message across re-reads and restarts:
    the mailbox, its UIDVALIDITY and the message's UID (a message sent again is a new
    delivery with a new UID).  ``received_at``: the server's arrival time (INTERNALDATE,
    UTC), the time of its refusals.  ``date``: its Date header, else ``received_at``.
    """

    uid: int
    key: str
    message_id: str
    sender: str
    subject: str
    date: datetime
    received_at: datetime
    parts: tuple[Part, ...] = ()
    flags: frozenset[str] = field(default_factory=frozenset)
    automatic: bool = False  # Auto-Submitted (not "no") or Precedence bulk/list/junk

    def params(self) -> dict[str, str]:
        """What the raw intake event records about the message."""
        return {"mail_message_id": self.message_id, "mail_from": self.sender,
                "mail_subject": self.subject[:500], "mail_date": self.date.isoformat()}

    def describe(self) -> str:
        return (f"message {self.message_id or '(no Message-ID)'} from {self.sender or '?'}"
                f" dated {self.date:%Y-%m-%d %H:%M}Z, subject {self.subject[:120]!r}")


def message_from(mailbox: str, uid: int, uidvalidity: int, headers: bytes,
                 internaldate: datetime, parts: list[Part],
                 flags: frozenset[str] = frozenset()) -> Message:
    """A ``Message`` from the header fields ``HEADER_FIELDS`` and the server's data;
    ``mailbox`` names the account and folder (``user/folder``)."""
    parsed = email.message_from_bytes(headers or b"\r\n", policy=policy.compat32)
    sender = email.utils.parseaddr(_text(parsed.get("From")))[1].strip().lower()
    subject = " ".join(_text(parsed.get("Subject")).split())
    message_id = _text(parsed.get("Message-ID")).strip()[:998]
    received_at = date = internaldate.astimezone(UTC)
    try:
        when = email.utils.parsedate_to_datetime(_text(parsed.get("Date")))
        date = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    except (TypeError, ValueError, IndexError):
        pass
    key = f"{mailbox}/{uidvalidity}/{uid}"
    auto = _text(parsed.get("Auto-Submitted")).strip().lower()
    precedence = _text(parsed.get("Precedence")).strip().lower()
    automatic = auto not in ("", "no") or precedence in ("bulk", "list", "junk")
    return Message(uid=uid, key=key, message_id=message_id, sender=sender, subject=subject,
                   date=date, received_at=received_at, parts=tuple(parts), flags=flags,
                   automatic=automatic)


def _text(value) -> str:
    """A header value as text, RFC 2047 encoded words decoded."""
    if value is None:
        return ""
    try:
        return str(email.header.make_header(email.header.decode_header(str(value))))
    except (ValueError, LookupError, UnicodeError):
        return str(value)


@dataclass(frozen=True)
class Ingest:
    part: Part
    filename: str
    rule: MailRule
    content_type: str


@dataclass(frozen=True)
class Refuse:
    reason: str  # one of REASONS
    detail: str
    filename: str  # the attachment's, or the subject when the whole message is refused
    part: Part | None = None


def sender_allowed(sender: str, allowed: list[str]) -> bool:
    """``sender`` (lower-case) is listed, or its domain is (``@example.org``)."""
    if "@" not in sender:
        return False
    domain = "@" + sender.rsplit("@", 1)[1]
    return sender in allowed or domain in allowed


def rule_for(filename: str, subject: str, rules: list[MailRule]) -> MailRule | None:
    """The first rule whose globs match the attachment's name (and the subject)."""
    for rule in rules:
        if not fnmatch.fnmatchcase(filename.casefold(), rule.attachment.casefold()):
            continue
        if rule.subject is not None and not fnmatch.fnmatchcase(subject.casefold(),
                                                                rule.subject.casefold()):
            continue
        return rule
    return None


def plan(message: Message, doc: MailboxDoc) -> list[Ingest | Refuse]:
    """One step per attachment (or one refusal for the whole message)."""
    label = message.subject[:200] or "(no subject)"
    if not sender_allowed(message.sender, doc.senders):
        return [Refuse("unknown_sender", f"{message.describe()}: the sender is not on the "
                       f"mailbox's allow-list; nothing in it was read", label)]
    attachments = [p for p in message.parts if p.is_attachment]
    if not attachments:
        return [Refuse("no_attachment", f"{message.describe()}: no attachment "
                       f"({len(message.parts)} parts, none named)", label)]
    steps: list[Ingest | Refuse] = []
    for part in attachments:
        name = part.filename or f"part-{part.section}"
        rule = rule_for(name, message.subject, doc.rules)
        if rule is None:
            wanted = ", ".join(r.attachment + (f" (subject {r.subject})" if r.subject else "")
                               for r in doc.rules)
            steps.append(Refuse("no_matching_rule", f"{message.describe()}: attachment "
                                f"{name!r} matches no rule (rules: {wanted})", name, part))
            continue
        content_type = CONTENT_TYPES.get(PurePath(name).suffix.lower())
        if content_type is None:
            steps.append(Refuse("unsupported_format", f"{message.describe()}: attachment "
                                f"{name!r} matches rule {rule.attachment!r} but its type is "
                                f"not read by the intake (known: "
                                f"{', '.join(sorted(CONTENT_TYPES))})", name, part))
            continue
        estimate = decoded_estimate(part.encoding, part.size)
        if estimate > doc.max_attachment_bytes:
            steps.append(Refuse("too_large", f"{message.describe()}: attachment {name!r} is "
                                f"announced as {part.size} bytes {part.encoding}, about "
                                f"{estimate / 2 ** 20:.1f} MiB decoded, over the mailbox's "
                                f"limit of {doc.max_attachment_mb:g} MiB; not read",
                                name, part))
            continue
        steps.append(Ingest(part, name, rule, content_type))
    return steps
