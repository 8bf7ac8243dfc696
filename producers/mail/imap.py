"""One IMAP session on a tenant's mailbox (blocking ``imaplib``; the poller runs each call
in a worker thread).

Nothing is fetched whole: a message is first seen as its header fields and its
BODYSTRUCTURE, and an attachment is read in slices of ``CHUNK_BYTES`` (``BODY.PEEK``
partial fetches, so nothing is marked ``\\Seen``), decoded and written to a file as the
slices arrive.  Errors: the server unreachable, a dropped connection or a timeout is
``TransientError``; a refused login, a missing folder or a server that cannot keep the
processed keyword is ``TenantConfigError``.
"""

from __future__ import annotations

import binascii
import contextlib
import imaplib
import ssl
from collections.abc import Iterator
from datetime import datetime
from typing import BinaryIO

from contracts.config import MailboxDoc
from contracts.errors import TenantConfigError, TransientError
from producers.mail.decode import Decoder
from producers.mail.plan import HEADER_FIELDS, Message, message_from
from producers.mail.wire import Part, WireError, fetch_items, parts

PROCESSED = "TagusProcessed"  # the keyword of a handled message
CHUNK_BYTES = 1024 * 1024  # encoded bytes per partial fetch
_META = (f"(UID FLAGS INTERNALDATE BODYSTRUCTURE "
         f"BODY.PEEK[HEADER.FIELDS ({' '.join(HEADER_FIELDS)})])")


class MessageUnreadable(Exception):
    """The server's FETCH answer for one message does not parse (its structure, its
    arrival time): a fault of that message, not of the session."""


class TooLarge(Exception):
    """An attachment grew past the limit while it was read (``decoded_bytes`` so far)."""

    def __init__(self, decoded_bytes: int) -> None:
        super().__init__(decoded_bytes)
        self.decoded_bytes = decoded_bytes


@contextlib.contextmanager
def _transient(what: str, *, refusals: bool = True) -> Iterator[None]:
    """Connection trouble (and, with ``refusals``, a command the server answered BAD)
    becomes TransientError: the pass stops, the message is read again next time."""
    caught = (imaplib.IMAP4.error, OSError) if refusals else \
        (imaplib.IMAP4.abort, OSError)  # ssl.SSLError is an OSError
    try:
        yield
    except caught as e:
        raise TransientError(f"{what}: {type(e).__name__}: {e}") from None


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


class ImapSession:
    """A logged-in session with ``doc.folder`` selected (read-write)."""

    def __init__(self, doc: MailboxDoc, password: str, *, timeout_s: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.doc = doc
        self.name = f"{doc.user}@{doc.host}:{doc.port_or_default}/{doc.folder}"
        # what names the mailbox in a message's key: not where it is reached (a new port,
        # a proxy, a host alias), so a move of the server re-reads nothing as new
        # (a new store gives a new UIDVALIDITY)
        self.mailbox = f"{doc.user}/{doc.folder}"
        self._created = False
        where = f"IMAP {doc.host}:{doc.port_or_default}"
        context = ssl_context or ssl.create_default_context()
        with _transient(f"connecting to {where}"):
            if doc.tls == "ssl":
                self.imap = imaplib.IMAP4_SSL(doc.host, doc.port_or_default,
                                              ssl_context=context, timeout=timeout_s)
            else:
                self.imap = imaplib.IMAP4(doc.host, doc.port_or_default, timeout=timeout_s)
                if doc.tls == "starttls":
                    self.imap.starttls(ssl_context=context)
        try:
            with _transient(f"logging in to {where}", refusals=False):
                self.imap.login(doc.user, password)
        except (imaplib.IMAP4.error, UnicodeEncodeError) as e:
            self.close()
            raise TenantConfigError(f"{where} refused the login of {doc.user!r}: {e}") \
                from None
        try:
            self.uidvalidity = self._select(doc.folder)
        except BaseException:
            self.close()
            raise

    def _select(self, folder: str) -> int:
        with _transient(f"selecting {folder!r}"):
            typ, data = self.imap.select(_quote(folder))
            if typ != "OK":
                raise TenantConfigError(f"folder {folder!r} cannot be selected on "
                                        f"{self.doc.host}: {data!r}")
            flags = b" ".join(self.imap.response("PERMANENTFLAGS")[1] or [b""])
            validity = self.imap.response("UIDVALIDITY")[1] or [b"0"]
        if self.doc.processed == "flag" and b"\\*" not in flags \
                and PROCESSED.encode() not in flags:
            raise TenantConfigError(f"folder {folder!r} on {self.doc.host} keeps no keywords "
                                    f"(PERMANENTFLAGS {flags!r}); use processed: move")
        return int(validity[0])

    def pending(self, limit: int) -> list[int]:
        """UIDs of the messages still to handle, oldest first, at most ``limit``."""
        criteria = ["UNDELETED"] if self.doc.processed == "move" else \
            ["UNKEYWORD", PROCESSED, "UNDELETED"]
        with _transient("searching"):
            typ, data = self.imap.uid("SEARCH", None, *criteria)
        if typ != "OK":
            raise TransientError(f"SEARCH failed: {data!r}")
        return sorted(int(u) for u in (data[0] or b"").split())[:limit]

    def message(self, uid: int) -> Message | None:
        """The message's header fields and parts (None: it is gone)."""
        with _transient(f"fetching message {uid}"):
            typ, data = self.imap.uid("FETCH", str(uid), _META)
        if typ != "OK":
            raise TransientError(f"FETCH {uid} failed: {data!r}")
        try:
            items = fetch_items(data).get(uid)
            if items is None:
                return None
            headers = next((v for k, v in items.items() if k.startswith("BODY[HEADER")), b"")
            flags = frozenset(bytes(f).decode("ascii", "replace")
                              for f in items.get("FLAGS") or [])
            when = datetime.strptime(bytes(items["INTERNALDATE"]).decode().strip(),
                                     "%d-%b-%Y %H:%M:%S %z")
            return message_from(self.mailbox, uid, self.uidvalidity, headers or b"", when,
                                parts(items["BODYSTRUCTURE"]), flags)
        except (WireError, KeyError, ValueError, IndexError, TypeError) as e:
            raise MessageUnreadable(f"message {uid}: the server's description of it cannot "
                                    f"be read ({type(e).__name__}: {e})") from None

    def download(self, uid: int, part: Part, sink: BinaryIO, limit_bytes: int) -> int:
        """Write the part, decoded, to ``sink``; returns its size.  ``TooLarge`` as soon
        as more than ``limit_bytes`` are decoded; ``UnsupportedEncoding`` before any
        fetch for an encoding the decoder does not know; ``MessageUnreadable`` when an
        answer or the encoded text does not parse."""
        decoder = Decoder(part.encoding)
        offset = written = 0
        while True:
            with _transient(f"fetching part {part.section} of message {uid}"):
                typ, data = self.imap.uid(
                    "FETCH", str(uid), f"(BODY.PEEK[{part.section}]<{offset}.{CHUNK_BYTES}>)")
            if typ != "OK":
                raise TransientError(f"FETCH {uid} part {part.section} failed: {data!r}")
            try:
                items = fetch_items(data).get(uid, {})
                encoded = next((v for k, v in items.items() if k.startswith("BODY[")),
                               None) or b""
                del data, items
                offset += len(encoded)
                last = len(encoded) < CHUNK_BYTES
                decoded = decoder.feed(encoded) + (decoder.finish() if last else b"")
            except (WireError, binascii.Error) as e:
                raise MessageUnreadable(f"part {part.section} of message {uid} cannot be "
                                        f"read at offset {offset} ({e})") from None
            written += _write(sink, decoded, written, limit_bytes)
            if last:
                return written

    def finish(self, uid: int) -> None:
        """Mark the message handled: the keyword, then (``move``) the move."""
        with _transient(f"marking message {uid}"):
            typ, data = self.imap.uid("STORE", str(uid), "+FLAGS.SILENT", f"({PROCESSED})")
            if typ != "OK":
                raise TransientError(f"STORE {uid} failed: {data!r}")
            if self.doc.processed == "move":
                folder = _quote(self.doc.processed_folder or "")
                if not self._created:
                    self.imap.create(folder)  # NO when it exists already: fine
                    self._created = True
                typ, data = self.imap.uid("MOVE", str(uid), folder)
                if typ != "OK":
                    raise TransientError(f"MOVE {uid} to {folder} failed: {data!r}")

    def close(self) -> None:
        with contextlib.suppress(imaplib.IMAP4.error, OSError, AttributeError):
            self.imap.logout()
        with contextlib.suppress(OSError, AttributeError):
            self.imap.shutdown()


def _write(sink: BinaryIO, data: bytes, written: int, limit_bytes: int) -> int:
    if written + len(data) > limit_bytes:
        raise TooLarge(written + len(data))
    sink.write(data)
    return len(data)


