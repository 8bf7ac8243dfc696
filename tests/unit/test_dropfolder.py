"""Drop-folder file selection and retries (the submit path is faked; against servers in
``tests/integration/test_intake_paths.py``)."""

from __future__ import annotations

import asyncio
import os

from contracts.base import new_id, utc_now
from contracts.errors import TransientError
from contracts.intake import RawIntakeReceived
from producers.dropfolder import DropFolder, candidates, settled
from producers.intake import Submitted


def test_layout_and_in_progress_names(tmp_path):
    d = tmp_path / "ltown" / "flows"
    d.mkdir(parents=True)
    for name in ["a.csv", "b.csv.part", ".hidden.csv", "c.xlsx.filepart", "d.TMP", "e.xlsx"]:
        (d / name).write_text("x")
    (tmp_path / "Not-A-Tenant" / "m").mkdir(parents=True)
    (tmp_path / "Not-A-Tenant" / "m" / "x.csv").write_text("x")
    (d / ".done").mkdir()
    (d / ".done" / "old.csv").write_text("x")
    got = [(t, m, p.name) for t, m, p in candidates(tmp_path)]
    assert got == [("ltown", "flows", "a.csv"), ("ltown", "flows", "e.xlsx")]


def test_a_file_is_taken_only_after_it_stopped_changing(tmp_path):
    f = tmp_path / "a.csv"
    f.write_text("Timestamp;T1\r\n")
    seen = {}
    assert not settled(seen, f, now=0.0, settle_s=2.0)  # first sight
    assert not settled(seen, f, now=1.0, settle_s=2.0)  # unchanged, not long enough
    with open(f, "a") as fh:  # the upload goes on
        fh.write("2019-01-01 00:00:00;3,2\r\n")
    os.utime(f, ns=(1, 10**9))
    assert not settled(seen, f, now=2.5, settle_s=2.0)  # changed: the clock restarts
    assert not settled(seen, f, now=4.0, settle_s=2.0)
    assert settled(seen, f, now=4.6, settle_s=2.0)


class _FlakyIntake:
    """Submits like ``producers.intake.Intake`` would, failing while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.attempts = 0

    async def submit_detailed(self, **kw):
        self.attempts += 1
        if self.down:
            raise TransientError("NATS is reconnecting; nothing was stored, retry later")
        now = utc_now()
        event = RawIntakeReceived(
            event_id=new_id(), tenant=kw["tenant"], occurred_at=now, recorded_at=now,
            source=kw["source"], filename=kw["filename"], bucket="b", object_name="o",
            sha256="0" * 64, size_bytes=1, content_type=kw["content_type"])
        return Submitted(event, duplicate=False)


def _layout(root, names):
    folder = root / "ltown" / "flows"
    folder.mkdir(parents=True)
    for name in names:
        (folder / name).write_text("time,s1\n1704067200,1\n")
    return folder


async def test_nats_down_leaves_every_file_in_place_and_resumes(tmp_path):
    """Seen: a NATS timeout escaped ``scan`` and the intake service exited."""
    folder = _layout(tmp_path, ["a.csv", "b.csv", "c.csv"])
    intake = _FlakyIntake()
    drop = DropFolder(tmp_path, intake, settle_s=0)
    assert await drop.scan() == []  # first sight of each file
    assert await drop.scan() == []
    assert drop.waiting and intake.attempts == 1  # the pass stopped at the first failure
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == ["a.csv", "b.csv", "c.csv"]
    intake.down = False
    assert len(await drop.scan()) == 3
    assert not drop.waiting
    assert sorted(p.name for p in (folder / ".done").iterdir()) == ["a.csv", "b.csv", "c.csv"]


async def test_run_backs_off_while_files_wait_and_never_exits(tmp_path):
    _layout(tmp_path, ["a.csv"])
    intake = _FlakyIntake()
    drop = DropFolder(tmp_path, intake, settle_s=0)
    stop = asyncio.Event()
    task = asyncio.create_task(drop.run(stop, interval_s=0.05, max_backoff_s=0.4))
    await asyncio.sleep(1.0)
    assert not task.done()
    # 0.05 s apart it would have tried ~20 times; backing off (0.1, 0.2, 0.4, 0.4) ~4
    assert 2 <= intake.attempts <= 6, intake.attempts
    intake.down = False
    await asyncio.sleep(0.6)
    stop.set()
    await asyncio.wait_for(task, 2)
    assert not list((tmp_path / "ltown" / "flows").glob("*.csv"))


async def test_a_file_that_keeps_failing_holds_up_no_other(tmp_path):
    folder = _layout(tmp_path, ["a.csv", "b.csv"])
    intake = _FlakyIntake()
    submit = intake.submit_detailed

    async def a_always_fails(**kw):
        if kw["filename"] == "a.csv":
            raise TransientError("JetStream refused it")
        intake.down = False
        return await submit(**kw)

    intake.submit_detailed = a_always_fails
    drop = DropFolder(tmp_path, intake, settle_s=0)
    assert await drop.scan() == []
    assert await drop.scan() == []  # a.csv failed first; the pass stopped
    (line,) = await drop.scan()  # a.csv goes last now
    assert line.startswith("b.csv: ingested as")
    assert [p.name for p in folder.iterdir() if p.is_file()] == ["a.csv"]
