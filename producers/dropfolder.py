"""The SFTP drop folder: every file that lands is ingested once, whole, across restarts.

Layout: ``<root>/<tenant>/<mapping_id>/<file>``: the folder says whose file it is and
which registered mapping reads it.  A file is taken when it has stopped changing: the
same size and mtime at two scans at least ``settle_s`` apart, and a name that is not
an upload in progress (``.part``, ``.tmp``, ``.filepart``, hidden files).  Submitted
files move to ``.done/``; files that cannot be submitted (no mapping, unknown format)
move to ``.rejected/`` with a ``<name>.reason.txt`` saying why.  Duplicates by content
hash are recognised by the intake itself (``tagus-intake-seen``), so a restart between
submit and move ingests nothing twice.

When NATS is unreachable (``TransientError``) a pass stops at the first file that could
not be submitted: every file stays where it is, and ``run`` tries again after a backoff
(doubling from ``interval_s`` up to ``max_backoff_s``) until NATS is back.  A file the
folder cannot read or move (``OSError``) is left in place and retried the same way.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from contracts.base import TENANT_RE
from contracts.errors import TagusError, TenantConfigError, TransientError
from producers.intake import Intake, content_type_for

log = structlog.get_logger("tagus.dropfolder")
IN_PROGRESS_SUFFIXES = (".part", ".tmp", ".filepart", ".partial", ".crdownload")
DONE, REJECTED = ".done", ".rejected"


@dataclass(frozen=True)
class Seen:
    size: int
    mtime_ns: int
    first_seen: float  # monotonic seconds when this (size, mtime) was first observed


def candidates(root: Path) -> list[tuple[str, str, Path]]:
    """(tenant, mapping_id, path) of every file in the layout, in-progress names excluded."""
    out = []
    for tenant_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        if not TENANT_RE.match(tenant_dir.name):
            continue
        for mapping_dir in sorted(p for p in tenant_dir.iterdir() if p.is_dir()):
            if mapping_dir.name.startswith("."):
                continue
            for f in sorted(mapping_dir.iterdir()):
                if (f.is_file() and not f.name.startswith(".")
                        and not f.name.lower().endswith(IN_PROGRESS_SUFFIXES)):
                    out.append((tenant_dir.name, mapping_dir.name, f))
    return out


def settled(seen: dict[Path, Seen], path: Path, now: float, settle_s: float) -> bool:
    """Record the file's state; True once it has not changed for ``settle_s``."""
    st = path.stat()
    prev = seen.get(path)
    if prev is None or (prev.size, prev.mtime_ns) != (st.st_size, st.st_mtime_ns):
        seen[path] = Seen(st.st_size, st.st_mtime_ns, now)
        return False
    return now - prev.first_seen >= settle_s


def _move(path: Path, folder: str, reason: str | None = None) -> Path:
    target_dir = path.parent / folder
    target_dir.mkdir(exist_ok=True)
    target = target_dir / path.name
    if target.exists():
        target = target_dir / f"{path.stem}.{time.time_ns()}{path.suffix}"
    shutil.move(str(path), target)
    if reason is not None:
        target.with_name(target.name + ".reason.txt").write_text(reason + "\n")
    return target


class DropFolder:
    def __init__(self, root: Path, intake: Intake, *, settle_s: float = 2.0) -> None:
        self.root = root
        self.intake = intake
        self.settle_s = settle_s
        self.seen: dict[Path, Seen] = {}
        self.waiting = False  # the last pass left settled files behind (NATS down)
        self._failed: Path | None = None  # tried last in the next pass: never blocks others

    async def scan(self) -> list[str]:
        """One pass: submit every settled file; returns a line per file handled.

        Stops at the first ``TransientError`` (NATS down): the rest would fail the same
        way.  ``waiting`` then says that files are left to retry; the file that failed
        goes last in the next pass, so a file that keeps failing holds up no other.
        """
        done = []
        self.waiting = False
        now = time.monotonic()
        failed, self._failed = self._failed, None
        for tenant, mapping_id, path in sorted(candidates(self.root),
                                               key=lambda c: c[2] == failed):
            try:
                if not settled(self.seen, path, now, self.settle_s):
                    continue
            except FileNotFoundError:
                continue  # moved away between listing and stat
            try:
                result = await self.intake.submit_detailed(
                    tenant=tenant, source="drop-folder", content_type=content_type_for(path),
                    body=path, filename=path.name, mapping_id=mapping_id)
            except TransientError as e:
                log.warning("drop folder submit failed; files stay and are retried",
                            file=str(path), error=str(e))
                self.waiting, self._failed = True, path
                break
            except TagusError as e:
                target = _move(path, REJECTED, f"{type(e).__name__}: {e}")
                done.append(f"rejected {path.name}: {e}")
                log.error("drop folder file rejected", file=str(target), error=str(e))
                self.seen.pop(path, None)
                continue
            except FileNotFoundError:
                self.seen.pop(path, None)
                continue  # taken away before it was read
            _move(path, DONE)
            self.seen.pop(path, None)
            what = "duplicate of" if result.duplicate else "ingested as"
            done.append(f"{path.name}: {what} intake {result.event.event_id}")
            log.info("drop folder file submitted", tenant=tenant, file=path.name,
                     intake_id=result.event.event_id, duplicate=result.duplicate)
        return done

    async def run(self, stop: asyncio.Event, interval_s: float = 1.0,
                  max_backoff_s: float = 8.0) -> None:
        """Scan every ``interval_s`` until ``stop`` is set; back off while files wait."""
        if not self.root.is_dir():
            raise TenantConfigError(f"drop folder {self.root} does not exist")
        wait = interval_s
        while not stop.is_set():
            try:
                await self.scan()
            except OSError as e:  # the folder itself: unreadable, unmounted, a move failed
                log.error("drop folder scan failed; files stay and are retried",
                          root=str(self.root), error=f"{type(e).__name__}: {e}")
                self.waiting = True
            wait = min(2 * wait, max_backoff_s) if self.waiting else interval_s
            try:
                await asyncio.wait_for(stop.wait(), wait)
            except TimeoutError:
                pass
