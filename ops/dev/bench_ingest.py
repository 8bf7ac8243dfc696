"""``tagus bench ingest``: readings/s from a wide CSV on disk to rows queryable in QuestDB.

Writes a synthetic wide CSV (``--sensors`` flow meters in l/s at 1-minute resolution
over ``--days``, wall-clock time in ``--tz``, ``;``-separated with decimal commas, fixed
seed; streamed to disk block by block) plus its source mapping, then, for a fresh tenant
per run, times ``Intake.submit_detailed`` -> ``normalise`` -> ``questdb-readings`` ->
WAL applied, and checks that exactly sensors x rows rows exist for the tenant.  The two
components run either in this process (as ``tagus ingest`` does) or as two ``tagus run``
subprocesses (one per core).  Ceilings, measured in the same run on the same batches
(those the e2e run published): QuestDB through ``frame`` + ``write_frame`` until WAL is
applied, and JetStream publishing (``publish_async`` and one-at-a-time as the runner
does) into a temporary stream.  Peak RSS at two file sizes (``--small-days``, ``--days``):
``ru_maxrss`` of this process for the in-process variant (run first, small file first),
sampled with psutil for the ``tagus run`` subprocesses; CPU seconds of every process
involved, the servers included, and of everything else on the machine (noise).

Side effects: the bench tenants' readings live on days of 2001 in the shared ``readings``
table.  After every run those day partitions are dropped, so each run writes into empty
partitions (only when every row on those days belongs to this bench's tenants); at the
end the tenants' subjects are purged from INTAKE, READINGS and DEADLETTER, their uploads
and KV keys deleted, and the temporary stream deleted.  ``--keep`` leaves all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import psutil
from nats.aio.client import Client
from nats.js import api as js_api
from nats.js.errors import NotFoundError as JsNotFound

from bus.runner import Runner
from bus.storage import INTAKE_BUCKET, MAPPINGS_BUCKET, SEEN_BUCKET, put_mapping
from bus.topology import ensure_topology
from contracts.registry import decode
from ops import wiring
from ops.settings import Settings, load_settings
from ops.wiring import questdb
from producers.intake import Intake
from contracts.mapping import SourceMapping
from projections.questdb import QuestDB
from projections.readings import TABLE, frame, projection

ROOT = Path(__file__).resolve().parents[1]
START = (2001, 2, 5)  # a Monday; days of 2001 that no real tenant's data touches
MAPPING_ID = "bench-flows"
COMPONENTS = ("normalise", "questdb-readings")
VARIANTS = ("inproc", "subproc")
_TTY = sys.stderr.isatty()


# ---------------------------------------------------------------- the file


def write_csv(path: Path, *, sensors: int, days: int, tz: str, seed: int) -> int:
    """Stream a wide CSV (``Timestamp;s0001;...``, values in l/s, decimal comma) to ``path``.

    One row per UTC minute written as wall-clock time in ``tz`` (a spring-forward hour
    is skipped, an autumn hour repeats, as a logger's file would).  Returns data rows.
    """
    rows = days * 1440
    names = [f"s{i:04d}" for i in range(1, sensors + 1)]
    rng = np.random.default_rng(seed)
    base = rng.uniform(5.0, 200.0, sensors)  # mean flow per meter, l/s
    phase = rng.uniform(-1.0, 1.0, sensors)  # hours: meters peak at slightly different times
    y, m, d = START
    t0 = pd.Timestamp(datetime(y, m, d), tz=tz).tz_convert("UTC")
    block = 1440
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(";".join(["Timestamp", *names]) + "\n")
        for start in range(0, rows, block):
            n = min(block, rows - start)
            utc = t0 + pd.to_timedelta(np.arange(start, start + n), unit="min")
            local = utc.tz_convert(tz)
            hours = (local.hour + local.minute / 60).to_numpy()[:, None]
            shape = 1.0 + 0.35 * np.sin(2 * np.pi * (hours - 9.0 - phase) / 24.0)
            flow = base * shape * (1.0 + rng.normal(0.0, 0.03, (n, sensors)))
            df = pd.DataFrame(np.clip(flow, 0.0, None), columns=names)
            df.insert(0, "Timestamp", local.strftime("%Y-%m-%d %H:%M:%S"))
            df.to_csv(f, sep=";", decimal=",", float_format="%.3f", header=False, index=False,
                      lineterminator="\n")
    return rows


def mapping_yaml(*, sensors: int, tz: str) -> bytes:
    lines = [
        f"description: tagus bench ingest, {sensors} synthetic flow meters (l/s), 1-minute",
        "format: csv", "encoding: utf-8", 'delimiter: ";"', 'decimal: ","', "header_row: 0",
        "layout: wide", "timestamp:", "  column: Timestamp", '  format: "%Y-%m-%d %H:%M:%S"',
        f"  timezone: {tz}", 'missing_values: ["", "NaN", "-"]', "unknown_columns: reject",
        "sensors:",
    ]
    lines += [f"  s{i:04d}: {{id: s{i:04d}, unit: l/s, range: [0, 1000]}}"
              for i in range(1, sensors + 1)]
    text = ("\n".join(lines) + "\n").encode()
    SourceMapping.from_yaml(text)  # fail here, not in the processor
    return text


def day_range_utc(days: int, tz: str) -> tuple[str, str]:
    """[first, end) UTC day partitions that hold a ``days``-day file starting at START."""
    y, m, d = START
    lo = datetime(y, m, d, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    hi = lo + timedelta(days=days)
    first = lo.date()
    end = (hi - timedelta(microseconds=1)).date() + timedelta(days=1)
    return f"{first.isoformat()}T00:00:00.000000Z", f"{end.isoformat()}T00:00:00.000000Z"


# ---------------------------------------------------------------- memory


class ProcSampler:
    """Peak resident memory (sampled every ``interval_s``) and CPU seconds of named processes.

    ``cpu["other"]`` is the machine's busy CPU time not spent in a watched process:
    someone else's load, which makes a run's figures worth less.
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self._procs: dict[str, psutil.Process] = {}
        self._cpu0: dict[str, float] = {}
        self.peak: dict[str, int] = {}
        self.cpu: dict[str, float] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._busy0 = _busy()

    def watch(self, name: str, pid: int | None, *, rss: bool = True) -> None:
        if pid is None:
            return
        proc = psutil.Process(pid)
        with self._lock:
            self._procs[name] = proc
            self._cpu0[name] = _cpu(proc)
            if rss:
                self.peak[name] = proc.memory_info().rss

    def __enter__(self) -> ProcSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(final=True)
        self.cpu["other"] = max(0.0, _busy() - self._busy0 - sum(self.cpu.values()))

    def _sample(self, final: bool = False) -> None:
        with self._lock:
            procs = list(self._procs.items())
        for name, p in procs:
            try:
                if name in self.peak:
                    self.peak[name] = max(self.peak[name], p.memory_info().rss)
                self.cpu[name] = _cpu(p) - self._cpu0[name]
            except psutil.Error:
                continue

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()


def _cpu(p: psutil.Process) -> float:
    t = p.cpu_times()
    return t.user + t.system


def _busy() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0) + getattr(t, "irq", 0) + getattr(
        t, "softirq", 0)


def _watch_servers(ps: ProcSampler, settings: Settings) -> None:
    from ops.dev.stack import managed_pids

    for name, pid in managed_pids(settings).items():
        try:
            ps.watch(f"{name} server", pid, rss=False)
        except psutil.Error:
            pass


def ru_maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


# ---------------------------------------------------------------- end to end


@dataclass
class E2E:
    variant: str
    days: int
    tenant: str
    readings: int
    submit_s: float = 0.0
    parsed_s: float = 0.0  # normalise done: intake.parsed published
    written_s: float = 0.0  # questdb-readings acknowledged everything
    visible_s: float = 0.0  # WAL applied: everything queryable
    batches: int = 0  # ReadingsNormalised messages
    sink_writes: int = 0  # write() calls of the projection
    rss: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds while timed

    @property
    def rate(self) -> float:
        return self.readings / self.visible_s


class _Progress:
    def __init__(self, label: str) -> None:
        self.label, self._last = label, 0.0

    def show(self, text: str, *, final: bool = False) -> None:
        now = time.monotonic()
        if _TTY:
            sys.stderr.write(f"\r  {self.label}: {text}\033[K" + ("\n" if final else ""))
        elif final or now - self._last >= 5.0:
            sys.stderr.write(f"  {self.label}: {text}\n")
            self._last = now
        else:
            return
        sys.stderr.flush()


async def _lags(js, topo) -> dict[str, tuple[int, int]]:
    """{durable: (lag, pull requests waiting)} for the two components."""
    out = {}
    for name in COMPONENTS:
        spec = topo.consumer(name)
        info = await js.consumer_info(spec.stream, spec.durable)
        out[name] = ((info.num_pending or 0) + (info.num_ack_pending or 0),
                     info.num_waiting or 0)
    return out


async def _subject_counts(js, stream: str, subjects: str) -> dict[str, int]:
    info = await js.stream_info(stream, subjects_filter=subjects)
    return dict(info.state.subjects or {})


async def _attached(js, topo, timeout_s: float, procs=()) -> None:
    """Wait until both consumers have a pull request waiting (their runners are up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"bench: `tagus {' '.join(p.args[3:])}` exited with code "
                                 f"{p.returncode} at start; see its log above")
        if all(w > 0 for _, w in (await _lags(js, topo)).values()):
            return
        await asyncio.sleep(0.05)
    raise SystemExit(f"bench: runners not attached to {COMPONENTS} within {timeout_s:.0f} s")


async def _caught_up(js, topo, label: str, timeout_s: float = 600.0) -> None:
    """Let the runners work off whatever was already pending (others' events)."""
    deadline = time.monotonic() + timeout_s
    while any(lag for lag, _ in (await _lags(js, topo)).values()):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {label}: consumers still behind after {timeout_s:.0f} s")
        await asyncio.sleep(0.1)


async def _timed_ingest(nc: Client, settings: Settings, topo, csv: Path, tenant: str,
                        r: E2E, progress: _Progress, procs=()) -> None:
    """Submit, wait for parsed + consumers caught up, wait for WAL, verify the count."""
    js = nc.jetstream()
    await put_mapping(js, tenant, MAPPING_ID, (csv.with_suffix(".yaml")).read_bytes())
    t0 = time.perf_counter()
    submitted = await Intake(js).submit_detailed(
        tenant=tenant, source="file", content_type="text/csv", body=csv,
        filename=csv.name, mapping_id=MAPPING_ID)
    r.submit_s = time.perf_counter() - t0
    if submitted.duplicate:
        raise SystemExit(f"bench: tenant {tenant} already ingested this file (not fresh)")
    shown = 0.0
    while True:
        for p in procs:
            if p.poll() is not None:
                raise SystemExit(f"bench: `tagus {' '.join(p.args[3:])}` died (exit code "
                                 f"{p.returncode}) during the run of {tenant}")
        intake = await _subject_counts(js, "INTAKE", f"tagus.intake.{tenant}.*")
        lags = await _lags(js, topo)
        now = time.perf_counter() - t0
        if intake.get(f"tagus.intake.{tenant}.failed"):
            raise SystemExit(f"bench: {tenant}: intake.failed; see `tagus status` and the "
                             "DEADLETTER stream")
        parsed = bool(intake.get(f"tagus.intake.{tenant}.parsed"))
        if parsed and not r.parsed_s:
            r.parsed_s = now
        if parsed and not any(lag for lag, _ in lags.values()):
            r.written_s = now
            break
        if now - shown >= 1.0:
            shown = now
            batches = await _subject_counts(js, "READINGS", f"tagus.readings.{tenant}.normalised")
            progress.show(f"{now:5.1f} s  normalise {'done' if parsed else 'parsing'}, "
                          f"{sum(batches.values())} batches published, questdb-readings "
                          f"{lags['questdb-readings'][0]} behind")
        if now > 1800:
            raise SystemExit(f"bench: {tenant}: not caught up after 30 min: {lags}")
        await asyncio.sleep(0.1)
    progress.show(f"{r.written_s:5.1f} s  written; waiting for WAL apply")
    db = questdb(settings)
    await asyncio.to_thread(db.wait_for_wal, TABLE, 600.0)
    r.visible_s = time.perf_counter() - t0
    count = db.rows(f"select count() from {TABLE} where tenant = '{tenant}'")[0][0]
    if count != r.readings:
        raise SystemExit(f"bench: {tenant}: expected {r.readings:,} rows in {TABLE}, "
                         f"found {count:,}: the pipeline lost or duplicated readings")
    r.batches = sum((await _subject_counts(
        js, "READINGS", f"tagus.readings.{tenant}.normalised")).values())
    progress.show(f"{r.visible_s:5.1f} s  {count:,} rows queryable "
                  f"({r.rate / 1e3:,.0f} k readings/s)", final=True)


async def e2e_inproc(settings: Settings, csv: Path, r: E2E, batch: int) -> None:
    """Both components as Runners on this process's event loop (as `tagus ingest` does)."""
    topo = wiring.topology(settings)
    comps = wiring.components(settings)
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    progress = _Progress(f"e2e {r.variant} {r.days}d {r.tenant}")
    stop = asyncio.Event()
    try:
        js = nc.jetstream()
        await _refuse_foreign_runners(js, topo)
        runners = [Runner(nc, comps[n], topo.consumer(n), batch=batch) for n in COMPONENTS]
        tasks = [asyncio.create_task(x.run(stop)) for x in runners]
        try:
            await _attached(js, topo, 60)
            await _caught_up(js, topo, "warm-up")
            before = runners[1].stats.batches
            with ProcSampler() as ps:
                ps.watch("bench (normalise + questdb-readings)", os.getpid(), rss=False)
                _watch_servers(ps, settings)
                await _timed_ingest(nc, settings, topo, csv, r.tenant, r, progress)
            r.rss, r.cpu = {"this process (ru_maxrss, lifetime)": ru_maxrss_bytes()}, ps.cpu
            r.sink_writes = runners[1].stats.batches - before
        finally:
            stop.set()
            await asyncio.gather(*tasks)
    finally:
        await nc.drain()


async def e2e_subproc(settings: Settings, csv: Path, r: E2E, logdir: Path, batch: int) -> None:
    """Each component in its own `tagus run` process; this one only submits and polls."""
    topo = wiring.topology(settings)
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    progress = _Progress(f"e2e {r.variant} {r.days}d {r.tenant}")
    procs: list[subprocess.Popen] = []
    try:
        js = nc.jetstream()
        await _refuse_foreign_runners(js, topo)
        for name in COMPONENTS:
            log = open(logdir / f"{r.tenant}-{name}.log", "wb")  # noqa: SIM115 - closed below
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "ops.cli", "run", name, "--batch", str(batch)], cwd=ROOT,
                stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy()))
            log.close()
        await _attached(js, topo, 120, procs)
        await _caught_up(js, topo, "warm-up")
        with ProcSampler() as ps:
            ps.watch("bench (submit + poll)", os.getpid(), rss=False)
            for name, p in zip(COMPONENTS, procs, strict=True):
                ps.watch(f"tagus run {name}", p.pid)
            _watch_servers(ps, settings)
            await _timed_ingest(nc, settings, topo, csv, r.tenant, r, progress, procs)
        r.rss, r.cpu = ps.peak, ps.cpu
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        await nc.drain()
    r.sink_writes = _writes_logged(logdir / f"{r.tenant}-questdb-readings.log", r.tenant)


def _writes_logged(log: Path, tenant: str) -> int:
    """The projection's write() calls for ``tenant``, from its "batch written" log lines."""
    n = 0
    for line in log.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        n += rec.get("event") == "batch written" and tenant in rec.get("tenants", ())
    return n


async def _refuse_foreign_runners(js, topo) -> None:
    busy = [n for n, (_, waiting) in (await _lags(js, topo)).items() if waiting]
    if busy:
        raise SystemExit(f"bench: another runner is attached to {busy} (a `tagus run` "
                         "somewhere?): it would take part of the work and skew the figures; "
                         "stop it and run the bench again")


# ---------------------------------------------------------------- ceilings


async def fetch_batches(settings: Settings, tenant: str) -> list[tuple[bytes, dict]]:
    """The ReadingsNormalised messages (bytes, headers) the e2e run of ``tenant`` published."""
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    try:
        js = nc.jetstream()
        subject = f"tagus.readings.{tenant}.normalised"
        want = sum((await _subject_counts(js, "READINGS", subject)).values())
        sub = await js.subscribe(subject, ordered_consumer=True)
        out = []
        try:
            while len(out) < want:
                msg = await sub.next_msg(timeout=30)
                out.append((msg.data, dict(msg.headers or {})))
        finally:
            await sub.unsubscribe()
        return out
    finally:
        await nc.drain()


def ceiling_questdb(db: QuestDB, batches: list[bytes], tenant: str, per_write: int) -> float:
    """decode -> frame -> write_frame, ``per_write`` messages per request, until WAL applied."""
    import msgspec

    t0 = time.perf_counter()
    for i in range(0, len(batches), per_write):
        events = [msgspec.structs.replace(decode("readings", b), tenant=tenant)
                  for b in batches[i:i + per_write]]
        db.write_frame(TABLE, frame(events), symbols=["tenant", "sensor", "unit"])
    db.wait_for_wal(TABLE, 600.0)
    return time.perf_counter() - t0


async def ceiling_jetstream(settings: Settings, batches: list[tuple[bytes, dict]],
                            stream: str, subject: str, run: int) -> tuple[float, float]:
    """(seconds with publish_async, seconds one awaited publish at a time) into ``stream``.

    Every publish gets a new ``Nats-Msg-Id``: a repeated id would be dropped by the
    stream's duplicate window, not stored, and flatter the figure.
    """
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    try:
        js = nc.jetstream()
        out = []
        for mode in ("async", "sync"):
            await js.purge_stream(stream)
            msgs = [(data, {**h, "Nats-Msg-Id": f"{h.get('Nats-Msg-Id')}-{mode}-{run}"})
                    for data, h in batches]
            t0 = time.perf_counter()
            if mode == "async":
                futures = [await js.publish_async(subject, data, headers=h) for data, h in msgs]
                await js.publish_async_completed()
                acks = [fut.result() for fut in futures]
            else:
                acks = [await js.publish(subject, data, headers=h, timeout=30)
                        for data, h in msgs]
            out.append(time.perf_counter() - t0)
            if any(a.duplicate for a in acks) or len(acks) != len(batches):
                raise SystemExit(f"bench: JetStream ceiling: {sum(bool(a.duplicate) for a in acks)}"
                                 " publishes were dropped as duplicates")
        return out[0], out[1]
    finally:
        await nc.drain()


async def make_bench_stream(settings: Settings, name: str, subject: str) -> None:
    """A temporary stream configured like READINGS (storage, replicas, dedup window)."""
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    try:
        js = nc.jetstream()
        have = (await js.stream_info("READINGS")).config
        await js.add_stream(js_api.StreamConfig(
            name=name, subjects=[subject], description="tagus bench ingest (temporary)",
            storage=have.storage, retention=have.retention, num_replicas=have.num_replicas,
            duplicate_window=have.duplicate_window, max_msg_size=have.max_msg_size,
            allow_direct=True))
    finally:
        await nc.drain()


# ---------------------------------------------------------------- clean-up


def drop_bench_days(db: QuestDB, prefix: str, days: int, tz: str) -> str:
    """Drop the day partitions of the bench window when only ``prefix`` tenants have rows there.

    Every run then writes into empty partitions: a write into days that already hold
    rows costs QuestDB an out-of-order merge that grows with what is there.
    """
    lo, hi = day_range_utc(days, tz)
    where = f"ts >= '{lo}' and ts < '{hi}'"
    held = db.rows(f"select tenant, count() from {TABLE} where {where}")
    if not held:
        return ""
    others = [t for t, _ in held if not t.startswith(prefix)]
    if others:
        return (f"kept {TABLE} partitions {lo[:10]}..{hi[:10]}: they also hold rows of "
                f"{others[:5]}{' ...' if len(others) > 5 else ''}")
    db.exec(f"ALTER TABLE {TABLE} DROP PARTITION WHERE {where}")
    db.wait_for_wal(TABLE, 120.0)
    return f"dropped {TABLE} partitions {lo[:10]}..{hi[:10]} (bench rows only)"


async def cleanup(settings: Settings, prefix: str, tenants: list[str], stream: str) -> list[str]:
    notes = []
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    try:
        js = nc.jetstream()
        try:
            await js.delete_stream(stream)
            notes.append(f"deleted the temporary stream {stream}")
        except JsNotFound:
            pass
        store = await js.object_store(INTAKE_BUCKET)
        seen, maps = await js.key_value(SEEN_BUCKET), await js.key_value(MAPPINGS_BUCKET)
        for t in tenants:
            for fam in ("intake", "readings", "deadletter"):
                await js.purge_stream(fam.upper(), subject=f"tagus.{fam}.{t}.>")
            for info in await _object_names(store, f"{t}/"):
                await store.delete(info)
                await seen.purge(f"{t}.{info.split('/', 1)[1]}")
            await maps.purge(f"{t}.{MAPPING_ID}")
        notes.append(f"purged {len(tenants)} bench tenants from INTAKE/READINGS/DEADLETTER, "
                     "their uploads and KV keys")
    finally:
        await nc.drain()
    return notes


async def _object_names(store, prefix: str) -> list[str]:
    try:
        return [o.name for o in await store.list() if o.name.startswith(prefix) and not o.deleted]
    except Exception:  # noqa: BLE001 - nats-py raises NotFoundError on an empty store
        return []


# ---------------------------------------------------------------- main


def _mb(n: int) -> str:
    return f"{n / 2**20:6.0f} MB"


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tagus bench ingest", description=__doc__.split("\n")[0])
    p.add_argument("--sensors", type=int, default=500)
    p.add_argument("--days", type=int, default=3, help="the large file (e2e + ceilings)")
    p.add_argument("--small-days", type=int, default=1, help="the small file (RSS vs size); "
                   "0 = skip")
    p.add_argument("--tz", default="Europe/Madrid", help="wall clock of the file's timestamps")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3, help="ceiling runs (median)")
    p.add_argument("--e2e-repeat", type=int, default=2, help="e2e runs per variant and size")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="e2e variants: inproc (one process), subproc (one per component)")
    p.add_argument("--batch", type=int, default=100, help="runners' fetch batch in messages "
                   "(`tagus run --batch`; one message holds up to 100k readings)")
    p.add_argument("--qdb-batch", type=int, default=0, help="messages per QuestDB write in "
                   "the ceiling (0 = what the e2e projection wrote on average)")
    p.add_argument("--workdir", type=Path, help="where the files go (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="leave the bench data in place")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"--variants: choose from {VARIANTS}")
    if args.sensors < 1 or args.days < 1 or args.small_days < 0 or args.repeat < 1:
        p.error("--sensors, --days and --repeat must be >= 1")
    try:
        ZoneInfo(args.tz)
    except (ZoneInfoNotFoundError, ValueError):
        p.error(f"--tz: expected an IANA time zone such as Europe/Lisbon or UTC, got {args.tz!r}")
    settings = load_settings()
    with tempfile.TemporaryDirectory(prefix="tagus-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cmd = " ".join(["tagus bench ingest", *(argv if argv is not None else sys.argv[1:])])
        return asyncio.run(_main(settings, args, variants, workdir, cmd))


async def _main(settings: Settings, args, variants: list[str], workdir: Path, cmd: str) -> int:
    from ops.dev import stack

    print(f"tagus bench ingest: {args.sensors} sensors x 1-minute rows, {args.tz} wall clock, "
          f"seed {args.seed}; {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for line in await asyncio.to_thread(stack.up, settings):
        print(f"  {line}")
    db = questdb(settings)
    nc = await wiring.nats_connection(settings, name="tagus-bench-ingest")
    try:
        await ensure_topology(nc.jetstream(), wiring.topology(settings))
    finally:
        await nc.drain()
    await asyncio.to_thread(projection(db).prepare)

    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    prefix = f"bench-{stamp}-"
    tenants: list[str] = []
    results: list[E2E] = []
    stream, subject = f"BENCH_INGEST_{stamp.replace('-', '_')}", f"tagusbench.{stamp}.readings"
    sizes = [d for d in dict.fromkeys([args.small_days, args.days]) if d]

    def fresh() -> None:
        """Empty the bench days again (this run's rows only) so the next run starts equal."""
        note = "" if args.keep else drop_bench_days(db, prefix, max(sizes), args.tz)
        if note.startswith("kept"):
            print(f"  WARNING: {note}; the runs write into partitions that already hold rows "
                  "(an out-of-order merge each time): slower, less comparable figures")

    try:
        fresh()
        for days in sizes:
            csv = workdir / f"bench-{args.sensors}x{days}d.csv"
            t = time.perf_counter()
            rows = await asyncio.to_thread(write_csv, csv, sensors=args.sensors, days=days,
                                           tz=args.tz, seed=args.seed)
            csv.with_suffix(".yaml").write_bytes(mapping_yaml(sensors=args.sensors, tz=args.tz))
            print(f"file: {csv} ({rows:,} rows x {args.sensors} = {rows * args.sensors:,} "
                  f"readings, {csv.stat().st_size / 2**20:.1f} MB) written in "
                  f"{time.perf_counter() - t:.1f} s")
            for i in range(args.e2e_repeat):
                for variant in variants:
                    tenant = f"{prefix}{days}d-{variant}-{i + 1}"
                    tenants.append(tenant)
                    r = E2E(variant, days, tenant, rows * args.sensors)
                    if variant == "inproc":
                        await e2e_inproc(settings, csv, r, args.batch)
                    else:
                        await e2e_subproc(settings, csv, r, workdir, args.batch)
                    results.append(r)
                    fresh()
        ceilings = await _ceilings(settings, db, args, results, prefix, tenants, stream, subject,
                                   fresh)
        _report(args, results, ceilings, sizes, cmd)
    finally:
        if args.keep:
            print(f"kept: tenants {prefix}*, stream {stream} (--keep)")
        elif tenants:
            notes = [n for n in (drop_bench_days(db, prefix, max(sizes), args.tz),) if n]
            notes += await cleanup(settings, prefix, tenants, stream)
            print("clean-up: " + "; ".join(notes))
    return 0


async def _ceilings(settings, db, args, results, prefix, tenants, stream, subject,
                    fresh) -> dict:
    big = [r for r in results if r.days == args.days]
    batches = await fetch_batches(settings, big[0].tenant)
    readings = big[0].readings
    seen = [r for r in big if r.sink_writes]
    per_write = args.qdb_batch or (
        max(1, round(_median([r.batches / r.sink_writes for r in seen]))) if seen else 1)
    print(f"ceilings: the {len(batches)} ReadingsNormalised messages of {big[0].tenant} "
          f"({sum(len(b) for b, _ in batches) / 2**20:.0f} MB msgpack), {args.repeat} runs each")
    qdb, nats_async, nats_sync = [], [], []
    cpu: dict[str, list[dict[str, float]]] = {"qdb": []}
    for i in range(args.repeat):
        tenant = f"{prefix}qdb-{i + 1}"
        tenants.append(tenant)
        with ProcSampler() as ps:
            ps.watch("bench (decode + frame + write_frame)", os.getpid(), rss=False)
            _watch_servers(ps, settings)
            s = await asyncio.to_thread(ceiling_questdb, db, [b for b, _ in batches], tenant,
                                        per_write)
        cpu["qdb"].append(ps.cpu)
        count = db.rows(f"select count() from {TABLE} where tenant = '{tenant}'")[0][0]
        if count != readings:
            raise SystemExit(f"bench: QuestDB ceiling wrote {count:,} rows, not {readings:,}")
        qdb.append(s)
        fresh()
        print(f"  questdb   run {i + 1}: {s:6.2f} s  {readings / s / 1e3:8,.0f} k readings/s "
              f"({per_write} message(s) per write)")
    await make_bench_stream(settings, stream, subject + ".>")
    for i in range(args.repeat):
        a, s = await ceiling_jetstream(settings, batches, stream, f"{subject}.x", i)
        nats_async.append(a)
        nats_sync.append(s)
        print(f"  jetstream run {i + 1}: publish_async {a:6.2f} s "
              f"{readings / a / 1e3:8,.0f} k readings/s; one at a time {s:6.2f} s "
              f"{readings / s / 1e3:8,.0f} k readings/s")
    return {"readings": readings, "qdb": qdb, "async": nats_async, "sync": nats_sync,
            "per_write": per_write, "cpu": cpu}


def _report(args, results: list[E2E], c: dict, sizes: list[int], cmd: str) -> None:
    print("\nend to end (file on disk -> rows queryable), median of runs:")
    best: dict[int, tuple[float, str]] = {}
    for days in sizes:
        for variant in dict.fromkeys(r.variant for r in results):
            rs = [r for r in results if r.days == days and r.variant == variant]
            if not rs:
                continue
            rate = _median([r.rate for r in rs])
            if rate > best.get(days, (0.0, ""))[0]:
                best[days] = (rate, variant)
            m = lambda attr: _median([getattr(r, attr) for r in rs])  # noqa: E731
            print(f"  {days}d {variant:7} {rs[0].readings:>10,} readings  {m('visible_s'):6.2f} s "
                  f"{rate / 1e3:8,.0f} k readings/s   (submit {m('submit_s'):.2f} s, "
                  f"parsed {m('parsed_s'):.2f} s, written {m('written_s'):.2f} s; "
                  f"{rs[0].batches} batches in {m('sink_writes'):.0f} writes; n={len(rs)})")
    readings = c["readings"]
    q = readings / _median(c["qdb"])
    print("ceilings, same batches, median of runs:")
    print(f"  questdb (decode + frame + write_frame + WAL, {c['per_write']} msg/write) "
          f"{q / 1e3:8,.0f} k readings/s")
    print(f"  jetstream publish_async                              "
          f"{readings / _median(c['async']) / 1e3:8,.0f} k readings/s")
    print(f"  jetstream publish, one at a time (as the runner)     "
          f"{readings / _median(c['sync']) / 1e3:8,.0f} k readings/s")
    rate, variant = best[args.days]
    ratio = rate / q
    print(f"end to end / questdb ceiling = {rate / 1e3:,.0f} / {q / 1e3:,.0f} = {ratio:.2f} "
          f"({variant}, {args.days}d; target >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'})")
    print(f"peak RSS, max over runs (runner fetch batch {args.batch}; subprocesses sampled "
          "every 50 ms):")
    for variant in dict.fromkeys(r.variant for r in results):
        names = list(dict.fromkeys(n for r in results if r.variant == variant for n in r.rss))
        for name in names:
            cells = []
            for days in sizes:
                vals = [r.rss.get(name, 0) for r in results
                        if r.variant == variant and r.days == days]
                cells.append(f"{days}d {_mb(max(vals))}")
            print(f"  {variant:7} {name:38} " + "   ".join(cells))
    print(f"CPU seconds while timed, median of runs ({os.cpu_count()} cores; 'other' = "
          "processes outside the bench, i.e. noise):")
    groups = [(f"e2e {v} {args.days}d", [r.cpu for r in results
                                          if r.variant == v and r.days == args.days])
              for v in dict.fromkeys(r.variant for r in results)]
    groups.append(("questdb ceiling", c["cpu"]["qdb"]))
    for label, cpus in groups:
        names = list(dict.fromkeys(n for d in cpus for n in d))
        print(f"  {label:22} " + ", ".join(
            f"{n} {_median([d.get(n, 0.0) for d in cpus]):.1f}" for n in names))
    print(f"reproduce: cd {ROOT} && .venv/bin/{cmd.strip()}")
