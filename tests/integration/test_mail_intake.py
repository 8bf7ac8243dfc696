"""E-mail intake against a real IMAP server (dovecot, ``tests/mail_support.py``) and the
real NATS and QuestDB: attachments land in QuestDB with exact accounting, a message
delivered twice is ingested once, every refusal is recorded with its reason and shown by
``/v1/intakes``, a poller SIGKILLed between publishing and marking the message ingests
nothing twice after a restart, and a 100 MB attachment is refused while the poller's
memory stays within a stated bound."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from decimal import Decimal

import openpyxl
import pytest
from fastapi.testclient import TestClient

from bus.storage import INTAKE_BUCKET
from bus.tokens import TokenStore
from contracts.intake import IntakeFailed, IntakeParsed, RawIntakeReceived
from ops.config_service import ConfigStore
from ops.serving import api_config
from ops.wiring import questdb
from producers.intake import Intake
from producers.mail import PROCESSED, MailOptions, MailPoller
from producers.mail.reply import SmtpOptions
from projections.api import create_app
from ops.dev.stack import free_port
from tests.conftest import REPO
from tests.helpers import eventually, stream_events
from tests.integration.test_intake_paths import pipeline
from tests.mail_support import Attachment, Dovecot, HoldingProxy, SmtpSink, message

pytestmark = pytest.mark.servers

MAPPINGS = REPO / "tests" / "mappings"
SCADA = "scada@utility.example"
# growth of the poller's peak RSS over its resident size before the big message: one
# 1 MiB slice in flight, imaplib's copies of it, the object store's 128 KiB chunks
RSS_BOUND_MB = 24


@pytest.fixture(scope="module")
def dovecot():
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()


async def _tenant(js, dovecot, kind: str, **mailbox) -> tuple[str, str, dict[str, str]]:
    """A tenant with the levels and inflow mappings and a mailbox on ``dovecot``; returns
    (tenant, IMAP user, the environment holding its password secret)."""
    tenant = f"mail-{kind}-{uuid.uuid4().hex[:6]}"
    user = f"{tenant}@water.example"
    password = uuid.uuid4().hex
    dovecot.add_user(user, password)
    store = ConfigStore(js)
    await store.put(tenant, "tenant", {"display_name": f"Mail {kind}"}, author="test")
    for mapping, path in (("levels", "battledim_levels.yaml"), ("inflow", "bwdf_inflow.yaml")):
        await store.put(tenant, f"mapping-{mapping}", (MAPPINGS / path).read_text(),
                        author="test")
    doc = {"host": "127.0.0.1", "port": dovecot.port, "tls": "starttls", "user": user,
           "password_secret": "imap", "senders": [SCADA, "@staff.utility.example"],
           "rules": [{"attachment": "*levels*.csv", "mapping": "levels"},
                     {"attachment": "*.xlsx", "subject": "*inflow*", "mapping": "inflow"}],
           "interval_s": 1}
    doc.update(mailbox)
    await store.put(tenant, "mailbox", doc, author="test")
    return tenant, user, {f"TAGUS_SECRET_{tenant}_IMAP".upper().replace("-", "_"): password}


def _levels_expected(data: bytes) -> tuple[int, int, int, int]:
    """(values received, accepted, missing, rejected) of a BattLeDIM levels CSV read on
    its own (csv + Decimal, the mapping's range [0, 10] and missing markers)."""
    rows = list(csv.reader(io.StringIO(data.decode()), delimiter=";"))[1:]
    received = accepted = missing = 0
    for _, cell in rows:
        received += 1
        if cell in ("", "NaN", "-"):
            missing += 1
        elif 0 <= Decimal(cell.replace(",", ".")) <= 10:
            accepted += 1
    return received, accepted, missing, received - accepted - missing


def _inflow_expected(path) -> tuple[int, int, int]:
    """(values received, accepted, missing) of the BWDF inflow workbook (openpyxl)."""
    ws = openpyxl.load_workbook(path, read_only=True, data_only=True).worksheets[0]
    received = accepted = missing = 0
    for row in list(ws.iter_rows(values_only=True))[1:]:
        if all(c is None for c in row):
            continue  # the sheet's trailing empty rows are not data
        for cell in row[1:11]:
            received += 1
            if cell is None or cell == "#N/A":
                missing += 1
            elif isinstance(cell, int | float) and 0 <= cell <= 500:
                accepted += 1
    return received, accepted, missing


async def _intake(nc, tenant: str) -> tuple[list, list, list]:
    events = [e for e in await stream_events(nc, "INTAKE", "intake", f"tagus.intake.{tenant}.>")]
    return ([e for e in events if isinstance(e, RawIntakeReceived)],
            [e for e in events if isinstance(e, IntakeParsed)],
            [e for e in events if isinstance(e, IntakeFailed)])


# ---------------------------------------------------------------- in process


async def test_attachments_land_once_and_every_refusal_is_recorded(nc, fast_settings,
                                                                   shared_data, dovecot,
                                                                   tmp_path):
    js = nc.jetstream()
    tenant, user, environ = await _tenant(js, dovecot, "paths", max_attachment_mb=2)
    levels = (shared_data / "battledim" / "2019-01_SCADA_Levels.csv").read_bytes()
    inflow_path = shared_data / "bwdf" / "InflowData_1.xlsx"
    bad = (b"Timestamp;T1\r\n2019-02-01 00:00:00;3,5\r\n2019-02-01 00:05:00;abc\r\n"
           b"2019-02-01 00:10:00;12,0\r\n2019-02-01 00:15:00;\r\n")
    daily = message(sender=SCADA, to=user, subject="SCADA levels January",
                    message_id="<levels-2019-01@scada.utility.example>",
                    attachments=(Attachment("levels_2019-01.csv", levels, "text/csv"),
                                 Attachment("logo.png", b"\x89PNG not really", "image/png")))
    messages = [
        daily,
        message(sender="ana@staff.utility.example", to=user, subject="DMA inflow weekly",
                message_id="<inflow-1@staff.utility.example>",
                attachments=(Attachment("InflowData_1.xlsx", inflow_path.read_bytes()),)),
        daily,  # the same message again (a resend): ingested once
        message(sender="someone@elsewhere.example", to=user, subject="SCADA levels",
                message_id="<intruder@elsewhere.example>",
                attachments=(Attachment("levels.csv", levels, "text/csv"),)),
        message(sender=SCADA, to=user, subject="no file today", message_id="<empty@scada>"),
        message(sender=SCADA, to=user, subject="checks", message_id="<checks@scada>",
                attachments=(Attachment("levels_bad.csv", bad, "text/csv"),
                             Attachment("levels_garbage.csv", b"no;header\r\n1;2\r\n"))),
        message(sender=SCADA, to=user, subject="big", message_id="<big@scada>",
                attachments=(Attachment("levels_big.csv", levels * 10, "text/csv"),)),
    ]
    for m in messages:
        dovecot.deliver(user, m)
    doc = (await ConfigStore(js).document(tenant, "mailbox"))
    poller = MailPoller(js, Intake(js, nc=nc), MailOptions(ca_file=dovecot.cert),
                        environ=environ)

    async with pipeline(nc, fast_settings):
        stats = await poller.poll(tenant, doc)
    assert (stats.messages, stats.ingested, stats.duplicates) == (7, 4, 1), stats
    # the resent message is a new delivery: its logo is refused again
    assert stats.reasons == {"no_matching_rule": 2, "unknown_sender": 1, "no_attachment": 1,
                             "too_large": 1}, stats
    assert dovecot.flagged(user, PROCESSED) == (7, 7)
    assert (await poller.poll(tenant, doc)).messages == 0  # all handled

    received, parsed, failed = await _intake(nc, tenant)
    by_name = {e.filename: e for e in received}
    assert sorted(by_name) == ["InflowData_1.xlsx", "levels_2019-01.csv", "levels_bad.csv",
                               "levels_garbage.csv"]
    csv_event = by_name["levels_2019-01.csv"]
    assert csv_event.sha256 == hashlib.sha256(levels).hexdigest()
    assert (csv_event.source, csv_event.mapping_id) == (f"mail:{user}", "levels")
    assert csv_event.params == {
        "mail_message_id": "<levels-2019-01@scada.utility.example>", "mail_from": SCADA,
        "mail_subject": "SCADA levels January", "mail_date": "2019-01-01T05:00:00+00:00"}
    assert by_name["InflowData_1.xlsx"].mapping_id == "inflow"

    # exact accounting, against the files read independently, and the rows in QuestDB
    accounts = {p.filename: p for p in parsed}
    received_n, accepted, missing, rejected = _levels_expected(levels)
    got = accounts["levels_2019-01.csv"]
    assert (got.values_received, got.values_accepted, got.values_missing,
            got.values_rejected) == (received_n, accepted, missing, rejected)
    received_n, accepted, missing = _inflow_expected(inflow_path)
    got = accounts["InflowData_1.xlsx"]
    assert (got.values_received, got.values_accepted, got.values_missing,
            got.values_rejected) == (received_n, accepted, missing, 0)
    got = accounts["levels_bad.csv"]
    assert (got.values_received, got.values_accepted, got.values_rejected,
            got.values_missing) == (4, 1, 2, 1)
    db = questdb(fast_settings)
    db.wait_for_wal("readings")
    counts = dict(db.rows(f"select sensor, count() from readings where tenant = '{tenant}'"))
    assert counts.pop("T1") == _levels_expected(levels)[1] + 1  # + levels_bad's one value
    assert sum(counts.values()) == accounts["InflowData_1.xlsx"].values_accepted

    # every refusal, and the file the mapping could not read, in /v1/intakes
    store = TokenStore([])
    token = store.issue(tenant, "ops", ("read",))
    settings = fast_settings.model_copy(update={"tokens_file": tmp_path / "tokens.yaml"})
    store.save(settings.tokens_path)
    db.wait_for_wal("intake_log")
    with TestClient(create_app(api_config(settings))) as client:
        r = client.get("/v1/intakes", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    intakes = r.json()["intakes"]
    got = sorted(((i["filename"], i["status"], i["reasons"] if i["status"] == "failed"
                   else i["values_accepted"]) for i in intakes), key=repr)
    assert got == sorted([
        ("levels_2019-01.csv", "parsed", accounts["levels_2019-01.csv"].values_accepted),
        ("InflowData_1.xlsx", "parsed", accounts["InflowData_1.xlsx"].values_accepted),
        ("levels_bad.csv", "parsed", 1),
        ("levels_garbage.csv", "failed", {"unparseable": 1}),
        ("logo.png", "failed", {"no_matching_rule": 1}),
        ("logo.png", "failed", {"no_matching_rule": 1}),  # each delivery's own record
        ("SCADA levels", "failed", {"unknown_sender": 1}),
        ("no file today", "failed", {"no_attachment": 1}),
        ("levels_big.csv", "failed", {"too_large": 1}),
    ], key=repr), got
    detail = {i["filename"]: i["detail"] for i in intakes}
    assert "someone@elsewhere.example" in detail["SCADA levels"]
    assert "<intruder@elsewhere.example>" in detail["SCADA levels"]
    assert "2 MiB" in detail["levels_big.csv"]

    # a third delivery after everything was handled: a duplicate, nothing new
    dovecot.deliver(user, daily)
    stats = await poller.poll(tenant, doc)
    assert (stats.messages, stats.ingested, stats.duplicates) == (1, 0, 1), stats
    assert len((await _intake(nc, tenant))[0]) == 4


# ---------------------------------------------------------------- real processes


def _start_poller(tmp_path, environ: dict[str, str], name: str,
                  command: tuple[str, ...] = ("run", "mail-poller")) -> subprocess.Popen:
    env = dict(os.environ, TAGUS_MAIL_REFRESH_S="0.2", TAGUS_LOG_LEVEL="INFO", **environ)
    log = open(tmp_path / f"{name}.log", "ab")  # noqa: SIM115 - the process keeps it
    return subprocess.Popen([sys.executable, "-m", "ops.cli", *command],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def _kill(proc: subprocess.Popen, sig=signal.SIGKILL) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(15)


async def test_poller_killed_before_marking_ingests_nothing_twice(nc, fast_settings,
                                                                  shared_data, dovecot,
                                                                  tmp_path):
    js = nc.jetstream()
    proxy = HoldingProxy(dovecot.port)
    tenant, user, environ = await _tenant(js, dovecot, "kill", tls="none", port=proxy.port)
    lines = (shared_data / "battledim" / "2019-01_SCADA_Levels.csv").read_bytes() \
        .splitlines(keepends=True)
    levels = b"".join(lines[:289])  # a day: header + 288 five-minute rows
    dovecot.deliver(user, message(
        sender=SCADA, to=user, subject="levels", message_id="<kill@scada>",
        attachments=(Attachment("levels_day.csv", levels), Attachment("notes.txt", b"x"))))
    proc = None
    try:
        # 1. the poller (a real process) publishes both outcomes, then stalls on marking
        # the message: killed
        proxy.hold(b" UID STORE ")
        proc = _start_poller(tmp_path, environ, "first")
        assert await asyncio.to_thread(proxy.held.wait, 60), "the poller never marked"
        received, _, failed = await _intake(nc, tenant)
        assert [e.filename for e in received] == ["levels_day.csv"]
        assert [(e.filename, e.reason) for e in failed] == [("notes.txt", "no_matching_rule")]
        assert _kill(proc) == -signal.SIGKILL
        assert dovecot.flagged(user, PROCESSED) == (0, 1)
    finally:
        if proc is not None:
            _kill(proc)
        proxy.close()

    # 2. restarted (the same pass, in this process): the message is read again and
    # marked, and nothing is published twice
    doc = await ConfigStore(js).document(tenant, "mailbox")
    poller = MailPoller(js, Intake(js, nc=nc), environ=environ)
    stats = await poller.poll(tenant, doc.model_copy(update={"port": dovecot.port}))
    assert (stats.messages, stats.ingested, stats.duplicates, stats.reasons) == (
        1, 0, 1, {"no_matching_rule": 1}), stats
    assert dovecot.flagged(user, PROCESSED) == (1, 1)
    again, _, failed_again = await _intake(nc, tenant)
    assert [e.event_id for e in again] == [e.event_id for e in received]
    assert [e.event_id for e in failed_again] == [e.event_id for e in failed]

    async with pipeline(nc, fast_settings):
        pass
    _, parsed, _ = await _intake(nc, tenant)
    assert [(p.filename, p.values_accepted) for p in parsed] == [("levels_day.csv", 288)]
    db = questdb(fast_settings)
    db.wait_for_wal("readings")
    assert db.rows(f"select count() from readings where tenant = '{tenant}'") == [[288]]


async def test_processed_messages_move_to_their_folder(nc, dovecot):
    js = nc.jetstream()
    tenant, user, environ = await _tenant(js, dovecot, "move", tls="none", processed="move",
                                          processed_folder="Processed")
    day = b"Timestamp;T1\r\n2019-02-01 00:00:00;3,5\r\n"
    dovecot.deliver(user, message(sender=SCADA, to=user, subject="levels",
                                  message_id="<move-1@scada>",
                                  attachments=(Attachment("levels_feb.csv", day),)))
    dovecot.deliver(user, message(sender="eve@elsewhere.example", to=user, subject="hello",
                                  message_id="<move-2@elsewhere>"))
    doc = await ConfigStore(js).document(tenant, "mailbox")
    poller = MailPoller(js, Intake(js, nc=nc), environ=environ)
    stats = await poller.poll(tenant, doc)
    assert (stats.messages, stats.ingested, stats.reasons) == (2, 1, {"unknown_sender": 1})
    assert dovecot.flagged(user, PROCESSED) == (0, 0)
    assert dovecot.flagged(user, PROCESSED, folder="Processed") == (2, 2)

    # killed between the keyword and the move: the next pass only moves it
    dovecot.deliver(user, message(sender=SCADA, to=user, subject="levels again",
                                  message_id="<move-3@scada>",
                                  attachments=(Attachment("levels_mar.csv", day + day),)))
    with dovecot.client(user) as imap:
        imap.select("INBOX")
        (uid,) = imap.uid("SEARCH", None, "ALL")[1][0].split()
        assert imap.uid("STORE", uid, "+FLAGS", f"({PROCESSED})")[0] == "OK"
    stats = await poller.poll(tenant, doc)
    assert (stats.messages, stats.ingested, stats.refused) == (1, 0, 0)
    assert dovecot.flagged(user, PROCESSED, folder="Processed") == (3, 3)
    received, _, failed = await _intake(nc, tenant)
    assert ([e.filename for e in received], [e.reason for e in failed]) == (
        ["levels_feb.csv"], ["unknown_sender"])


async def test_serve_intake_polls_the_configured_mailboxes(nc, dovecot, tmp_path):
    js = nc.jetstream()
    tenant, user, environ = await _tenant(js, dovecot, "serve", tls="none")
    dovecot.deliver(user, message(
        sender=SCADA, to=user, subject="levels", message_id="<serve@scada>",
        attachments=(Attachment("levels_serve.csv", b"Timestamp;T1\r\n2019-03-01 00:00:00;2,5\r\n"),)))
    environ.update(TAGUS_INTAKE_HTTP_PORT=str(free_port()), TAGUS_DROP_DIR=str(tmp_path / "drop"))
    proc = _start_poller(tmp_path, environ, "serve", ("serve", "intake"))
    try:
        await eventually(lambda: proc.poll() is None and dovecot.flagged(user, PROCESSED) == (1, 1),
                         timeout_s=60, interval_s=0.2, what="tagus serve intake handled the message")
    finally:
        code = _kill(proc, signal.SIGTERM)
    assert code == 0, (tmp_path / "serve.log").read_text()[-3000:]
    received, _, _ = await _intake(nc, tenant)
    assert [(e.filename, e.params["mail_message_id"]) for e in received] == [
        ("levels_serve.csv", "<serve@scada>")]


async def test_the_sender_gets_a_reply_with_the_accounting(nc, fast_settings, dovecot):
    js = nc.jetstream()
    tenant, user, environ = await _tenant(js, dovecot, "reply", tls="none", reply=True)
    bad = (b"Timestamp;T1\r\n2019-02-01 00:00:00;3,5\r\n2019-02-01 00:05:00;abc\r\n"
           b"2019-02-01 00:10:00;12,0\r\n2019-02-01 00:15:00;\r\n")
    dovecot.deliver(user, message(sender=SCADA, to=user, subject="levels", message_id="<r1@scada>",
                                  attachments=(Attachment("levels_r.csv", bad),
                                               Attachment("logo.png", b"png"))))
    dovecot.deliver(user, message(sender="eve@elsewhere.example", to=user, subject="x",
                                  message_id="<r2@elsewhere>",
                                  attachments=(Attachment("levels.csv", bad),)))
    doc = await ConfigStore(js).document(tenant, "mailbox")
    with SmtpSink() as smtp:
        options = MailOptions(smtp=SmtpOptions(host="127.0.0.1", port=smtp.port,
                                               sender="tagus@water.example"), reply_wait_s=60)
        poller = MailPoller(js, Intake(js, nc=nc), options, environ=environ)
        async with pipeline(nc, fast_settings):
            stats = await poller.poll(tenant, doc)
            await poller.replies(timeout_s=90)
    assert (stats.messages, stats.ingested, stats.refused) == (2, 1, 2), stats
    (reply,) = smtp.messages  # none to the unknown sender
    assert (reply["To"], reply["From"], reply["Subject"], reply["In-Reply-To"],
            reply["Auto-Submitted"]) == (SCADA, "tagus@water.example", "Re: levels",
                                         "<r1@scada>", "auto-replied")
    _, parsed, _ = await _intake(nc, tenant)
    (counted,) = parsed
    assert (counted.values_received, counted.values_accepted, counted.values_rejected,
            counted.values_missing) == (4, 1, 2, 1)
    body = reply.get_content()
    assert "- levels_r.csv: 4 values: 1 accepted, 2 rejected, 1 missing (" in body, body
    for reason, n in counted.reasons.items():
        assert f"{reason} {n}" in body, (reason, body)
    assert "- logo.png: refused (no_matching_rule): " in body, body


def _rss_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


async def test_large_attachments_streamed_and_100mb_refused_in_bounded_memory(
        nc, fast_settings, dovecot, tmp_path):
    js = nc.jetstream()
    tenant, user, environ = await _tenant(js, dovecot, "large", tls="none",
                                          max_attachment_mb=64)
    environ["TAGUS_MAIL_SPOOL_DIR"] = str(tmp_path)
    row = b"2019-01-01 00:00:00;3,41\r\n"
    dovecot.deliver(user, message(sender=SCADA, to=user, subject="warm-up",
                                  message_id="<warm@scada>",
                                  attachments=(Attachment("levels_warm.csv", b"Timestamp;T1\r\n"
                                                          + row),)))
    proc = _start_poller(tmp_path, environ, "large")
    try:
        await eventually(lambda: dovecot.flagged(user, PROCESSED) == (1, 1), timeout_s=60,
                         interval_s=0.2, what="the warm-up message handled")
        before = _rss_kb(proc.pid)
        started = time.monotonic()  # the deliveries included: the poller works meanwhile

        medium = b"Timestamp;T1\r\n" + row * (40 * 2 ** 20 // len(row))  # ~40 MiB: taken
        big = b"Timestamp;T1\r\n" + row * (100 * 2 ** 20 // len(row))  # ~100 MiB: refused
        dovecot.deliver(user, message(sender=SCADA, to=user, subject="medium",
                                      message_id="<medium@scada>",
                                      attachments=(Attachment("levels_medium.csv", medium),)))
        medium_sha = hashlib.sha256(medium).hexdigest()
        # quoted-printable announces no size that gives it away: it is read, in slices,
        # until the limit (a base64 one that large would be refused unread, as in the
        # unit tests)
        dovecot.deliver(user, message(sender=SCADA, to=user, subject="big",
                                      message_id="<big@scada>",
                                      attachments=(Attachment("levels_big.csv", big,
                                                              encoding="quoted-printable"),)))
        del medium, big
        await eventually(lambda: dovecot.flagged(user, PROCESSED) == (3, 3), timeout_s=120,
                         interval_s=0.2, what="the two large messages handled")
        took = time.monotonic() - started
        after = _rss_kb(proc.pid)
    finally:
        assert _kill(proc, signal.SIGTERM) == 0
    growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"\nmail poller RSS: {before['VmRSS'] / 1024:.0f} MB before, peak "
          f"{after['VmHWM'] / 1024:.0f} MB while streaming ~40 MiB and refusing 100 MiB "
          f"({took:.1f} s from the first delivery): growth {growth_mb:.1f} MB (bound {RSS_BOUND_MB} MB)")
    assert growth_mb < RSS_BOUND_MB

    received, _, failed = await _intake(nc, tenant)
    taken = {e.filename: e for e in received}
    assert taken["levels_medium.csv"].sha256 == medium_sha
    info = await (await js.object_store(INTAKE_BUCKET)).get_info(
        taken["levels_medium.csv"].object_name)
    assert info.size == taken["levels_medium.csv"].size_bytes > 40_000_000
    (refused,) = failed
    assert (refused.filename, refused.reason) == ("levels_big.csv", "too_large")
    stopped = re.search(r"limit of 64 MiB \(reading stopped after (\d+) bytes\)", refused.detail)
    assert stopped, refused.detail  # read up to the limit and one slice, no further
    assert 64 * 2 ** 20 < int(stopped[1]) <= 65 * 2 ** 20
    assert list(tmp_path.glob("tmp*")) == []  # nothing left in the spool
