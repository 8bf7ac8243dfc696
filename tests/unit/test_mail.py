"""The mail intake's pure parts on literal data: IMAP answers and BODYSTRUCTUREs, transfer
decoding slice by slice, the plan of a message, the mailbox document."""

from __future__ import annotations

import base64
import quopri
import random
from datetime import UTC, datetime

import pytest

from contracts.config import parse_document
from contracts.errors import TenantConfigError
from contracts.intake import IntakeFailed, IntakeParsed
from producers.mail.decode import Decoder, UnsupportedEncoding, decoded_estimate
from producers.mail.plan import Ingest, Refuse, message_from, plan, sender_allowed
from producers.mail.reply import Outcome, compose, line
from producers.mail.wire import Part, fetch_items, parts

# as dovecot 2.3 answers (one message, a text body and a CSV attachment)
ANSWER = [(b'1 (UID 7 FLAGS (\\Seen) INTERNALDATE "30-Nov-2026 15:25:05 +0000" BODYSTRUCTURE '
           b'(("text" "plain" ("charset" "utf-8") NIL NIL "7bit" 6 1 NIL NIL NIL NIL)'
           b'("text" "csv" ("charset" "us-ascii") NIL NIL "base64" 14 1 NIL ("attachment" '
           b'("filename" "x.csv")) NIL NIL) "mixed" ("boundary" "==b==") NIL NIL NIL) '
           b'BODY[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)] {47}',
           b'From: a@b.c\r\nSubject: hi\r\nMessage-ID: <x@y>\r\n\r\n'), b')']


def test_fetch_items_and_parts():
    items = fetch_items(ANSWER)[7]
    assert items["FLAGS"] == [b"\\Seen"]
    assert items["BODY[HEADER.FIELDS (FROM SUBJECT DATE MESSAGE-ID)]"].startswith(b"From: a@b.c")
    assert parts(items["BODYSTRUCTURE"]) == [
        Part("1", "text/plain", "7bit", 6, None, None),
        Part("2", "text/csv", "base64", 14, "x.csv", "attachment")]
    assert fetch_items([(b"3 (UID 9 BODY[2]<0> {5}", b"YSxiC"), b")"]) == {
        9: {"UID": b"9", "BODY[2]<0>": b"YSxiC"}}


def test_nested_parts_forwarded_messages_and_encoded_names():
    csv = (b'("application" "octet-stream" ("name" "=?utf-8?q?caudal_=C3=B1.csv?=") NIL NIL '
           b'"base64" 100 NIL ("attachment" ("filename*" "utf-8\'\'caudal%20%C3%B1.csv")) NIL NIL)')
    inner = b'(("text" "plain" NIL NIL NIL "7bit" 2 1 NIL NIL NIL NIL)' + csv + b' "mixed")'
    forwarded = (b'("message" "rfc822" NIL NIL NIL "7bit" 500 (NIL "fw" NIL NIL NIL NIL NIL NIL '
                 b'NIL NIL) ' + inner + b' 20 NIL NIL NIL NIL)')
    body = b'(("text" "plain" NIL NIL NIL "7bit" 2 1 NIL NIL NIL NIL)' + forwarded + b' "mixed")'
    structure = fetch_items([b"1 (UID 1 BODYSTRUCTURE " + body + b")"])[1]["BODYSTRUCTURE"]
    got = [(p.section, p.mime_type, p.filename) for p in parts(structure)]
    assert got == [("1", "text/plain", None), ("2.1", "text/plain", None),
                   ("2.2", "application/octet-stream", "caudal ñ.csv")]
    # a name with a path is only a name; a literal inside the structure is a string
    single = [(b'1 (UID 2 BODYSTRUCTURE ("application" "octet-stream" NIL NIL NIL "base64" 8 '
               b'NIL ("attachment" ("filename" {16}', b"..\\..\\etc\\x.csv"), b')) NIL NIL))']
    (part,) = parts(fetch_items(single)[2]["BODYSTRUCTURE"])
    assert (part.section, part.filename) == ("1", "x.csv")


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable", "8bit"])
def test_decoding_in_slices_of_any_size(encoding):
    rnd = random.Random(7)
    raw = bytes(rnd.getrandbits(8) for _ in range(5000)) if encoding != "8bit" \
        else "día;3,4\r\n".encode() * 300
    encoded = {"base64": base64.encodebytes(raw).replace(b"\n", b"\r\n"),
               "quoted-printable": quopri.encodestring(raw), "8bit": raw}[encoding]
    for step in (1, 3, 77, 4096):
        d = Decoder(encoding)
        out = b"".join(d.feed(encoded[i:i + step]) for i in range(0, len(encoded), step))
        assert out + d.finish() == raw
    with pytest.raises(UnsupportedEncoding):
        Decoder("x-uuencode")


def _doc(**kw):
    doc = {"host": "imap.example.org", "user": "u", "password_secret": "imap",
           "senders": ["scada@utility.example", "@staff.utility.example"],
           "rules": [{"attachment": "*levels*.csv", "mapping": "levels"},
                     {"attachment": "*.xlsx", "subject": "*inflow*", "mapping": "inflow"}]}
    return parse_document("mailbox", {**doc, **kw})


def _message(sender: str, subject: str, *names: str):
    headers = f"From: X <{sender}>\r\nSubject: {subject}\r\nMessage-ID: <m@x>\r\n\r\n"
    return message_from("u/INBOX", 5, 1, headers.encode(),
                        datetime(2026, 1, 2, 7, tzinfo=UTC),
                        [Part(str(i + 1), "application/octet-stream", "base64", 10, n,
                              "attachment") for i, n in enumerate(names)])


def test_plan_ingests_matching_attachments_and_refuses_the_rest_with_reasons():
    doc = _doc()
    steps = plan(_message("SCADA@utility.example", "Inflow weekly", "Levels_Jan.CSV",
                          "inflow.xlsx", "logo.png", "levels.pdf"), doc)
    assert [(type(s).__name__, getattr(s, "reason", None), s.filename) for s in steps] == [
        ("Ingest", None, "Levels_Jan.CSV"), ("Ingest", None, "inflow.xlsx"),
        ("Refuse", "no_matching_rule", "logo.png"), ("Refuse", "no_matching_rule", "levels.pdf")]
    assert [s.rule.mapping for s in steps if isinstance(s, Ingest)] == ["levels", "inflow"]
    # the subject glob: an xlsx in another message matches nothing
    (step,) = plan(_message("ana@staff.utility.example", "prices", "inflow.xlsx"), doc)
    assert (step.reason, step.filename) == ("no_matching_rule", "inflow.xlsx")
    (step,) = plan(_message("eve@utility.example.evil", "x", "levels.csv"), doc)
    assert isinstance(step, Refuse) and step.reason == "unknown_sender"
    assert "eve@utility.example.evil" in step.detail and "<m@x>" in step.detail
    (step,) = plan(_message("scada@utility.example", "nothing"), doc)
    assert (step.reason, step.filename) == ("no_attachment", "nothing")
    doc = _doc(rules=[{"attachment": "*", "mapping": "levels"}])
    (step,) = plan(_message("scada@utility.example", "s", "report.pdf"), doc)
    assert step.reason == "unsupported_format"


def test_an_attachment_announced_over_the_limit_is_refused_unread():
    doc = _doc(max_attachment_mb=1)

    def announced(encoding: str, size: int):
        m = message_from("u/INBOX", 5, 1, b"From: scada@utility.example\r\n\r\n",
                         datetime(2026, 1, 2, 7, tzinfo=UTC),
                         [Part("1", "text/csv", encoding, size, "levels.csv", "attachment")])
        return plan(m, doc)[0]

    def b64_size(n: int) -> int:  # as the server counts it: 76-character lines, CRLF
        return len(base64.encodebytes(b"x" * n)) + -(-n // 57)

    limit = 2 ** 20
    assert decoded_estimate("base64", b64_size(limit)) <= limit < decoded_estimate(
        "base64", b64_size(limit * 11 // 10))
    assert isinstance(announced("base64", b64_size(limit)), Ingest)  # read, checked exactly
    step = announced("base64", b64_size(limit * 11 // 10))
    assert isinstance(step, Refuse) and step.reason == "too_large"
    assert "limit of 1 MiB; not read" in step.detail and step.filename == "levels.csv"
    assert isinstance(announced("7bit", limit), Ingest)
    assert announced("7bit", limit + 1).reason == "too_large"
    assert isinstance(announced("quoted-printable", 3 * limit), Ingest)
    assert announced("quoted-printable", 3 * limit + 3).reason == "too_large"
    assert decoded_estimate("x-uuencode", 10 ** 12) == 0  # refused as unsupported instead


def test_senders_and_message_identity():
    assert sender_allowed("a@x.org", ["a@x.org"]) and sender_allowed("b@x.org", ["@x.org"])
    assert not sender_allowed("b@sub.x.org", ["@x.org"]) and not sender_allowed("x.org", ["@x.org"])
    m = _message("scada@utility.example", "=?utf-8?q?Niveles_d=C3=ADa?=", "a.csv")
    assert (m.sender, m.subject, m.message_id) == ("scada@utility.example", "Niveles día", "<m@x>")
    assert m.date == m.received_at == datetime(2026, 1, 2, 7, tzinfo=UTC)  # no Date header
    assert m.key == "u/INBOX/1/5"


def test_mailbox_document_is_validated_with_field_paths():
    doc = _doc()
    assert (doc.port_or_default, doc.max_attachment_bytes) == (993, 50 * 2 ** 20)
    with pytest.raises(TenantConfigError) as e:
        _doc(senders=["not an address"], password="hunter2", processed="move")
    assert "senders: item 0" in str(e.value) and "password: unknown field" in str(e.value)
    with pytest.raises(TenantConfigError, match="processed_folder: required"):
        _doc(processed="move")
    with pytest.raises(TenantConfigError, match="rules: "):
        _doc(rules=[])


def test_the_reply_says_what_became_of_each_attachment():
    at = datetime(2026, 1, 2, 7, 5, tzinfo=UTC)
    parsed = IntakeParsed(event_id="p", tenant="t", occurred_at=at, recorded_at=at,
                          intake_id="i1", rows_received=4, rows_accepted=2, rows_rejected=2,
                          values_received=6, values_accepted=2, values_rejected=3,
                          values_missing=1, reasons={"out_of_range": 2, "unparseable": 1,
                                                     "missing": 1, "duplicate": 1})
    failed = IntakeFailed(event_id="f", tenant="t", occurred_at=at, recorded_at=at,
                          intake_id="i2", reason="unparseable", detail="no header row")
    lines = [line(Outcome("a.csv", "i1"), parsed), line(Outcome("b.csv", "i2"), failed),
             line(Outcome("c.csv", "i3"), None),
             line(Outcome("d.csv", "i4", first_seen="2026-01-01 07:00 UTC"), None),
             line(Outcome("logo.png", reason="no_matching_rule", detail="matches no rule"), None)]
    assert lines == [
        "a.csv: 6 values: 2 accepted, 3 rejected, 1 missing (out_of_range 2, duplicate 1, "
        "missing 1 and 1 more)",
        "b.csv: could not be read (unparseable): no header row",
        "c.csv: received (upload i3), still being read; its accounting will be in the "
        "uploads list",
        "d.csv: already received 2026-01-01 07:00 UTC (upload i4); nothing new was read",
        "logo.png: refused (no_matching_rule): matches no rule"]
    m = _message("scada@utility.example", "Levels", "a.csv")
    reply = compose(m, lines, sender="tagus@water.example", mailbox="reports@utility.example")
    assert (reply["To"], reply["Subject"], reply["In-Reply-To"], reply["Auto-Submitted"]) == (
        "scada@utility.example", "Re: Levels", "<m@x>", "auto-replied")
    assert "- a.csv: 6 values: 2 accepted" in reply.get_content()
    assert not m.automatic
    for header in ("Auto-Submitted: auto-generated", "Precedence: bulk"):
        auto = message_from("u/INBOX", 6, 1, f"From: a@b.c\r\n{header}\r\n\r\n".encode(),
                            datetime(2026, 1, 2, 7, tzinfo=UTC), [])
        assert auto.automatic, header
    assert not message_from("u/INBOX", 7, 1, b"From: a@b.c\r\nAuto-Submitted: no\r\n\r\n",
                            datetime(2026, 1, 2, 7, tzinfo=UTC), []).automatic
