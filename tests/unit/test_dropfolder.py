"""Drop-folder file selection (pure parts; the submit path is tested against servers)."""

from __future__ import annotations

import os

from producers.dropfolder import candidates, settled


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
