"""``tagus bench ingest``: readings/s from a wide CSV on disk to rows queryable in QuestDB.

Writes a synthetic wide CSV (``--sensors`` flow meters in l/s at 1-minute resolution
over ``--days``, wall-clock time in ``--tz``, ``;``-separated with decimal commas, fixed
seed) plus its source mapping, then, for a fresh tenant per run, times
``Intake.submit_detailed`` -> ``normalise`` -> ``questdb-readings`` -> WAL applied, and
checks that exactly sensors x rows rows exist for the tenant.  The two components run in
this process (``ops.service.run_components``) or as two ``tagus run`` subprocesses (one
per core); the clock stops when both consumers have acknowledged everything and the WAL
is applied.  Ceilings, same run, same batches: QuestDB through ``frame`` + ``write_frame``
until WAL is applied, and JetStream publishing (``publish_async`` and one at a time as the
runner does) into a temporary stream.  Peak RSS at two file sizes (``--small-days``,
``--days``): ``ru_maxrss`` of this process in-process (run first, small file first),
sampled with psutil for the subprocesses; CPU seconds of every process involved, the
servers included, and of everything else on the machine (noise).

``--quick`` (the CI smoke run): 20 sensors x 1 day, one run of each variant and ceiling,
the same table in well under a minute.  Exit code 0 unless an upload failed, readings
were lost or duplicated, or a runner died; the ratio target is reported, not enforced.

Side effects: the bench rows live on days of 2001 in the shared ``readings`` table; those
day partitions are dropped after every run (only when every row there is this bench's),
so each run writes into empty partitions.  At the end the bench tenants' subjects are
purged from every stream, their uploads, KV keys and output records deleted, and the
temporary stream deleted.  ``--keep`` leaves all of it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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

import msgspec
import numpy as np
import pandas as pd
import psutil
from nats.aio.client import Client
from nats.js import api as js_api
from nats.js.errors import NotFoundError as JsNotFound

from bus.outputs import OUTPUTS_BUCKET, OutputLog
from bus.storage import INTAKE_BUCKET, MAPPINGS_BUCKET, SEEN_BUCKET, mapping_key, put_mapping
from bus.subjects import event_subjects, stream_name, tenant_subjects
from bus.topology import Topology, ensure_topology
from contracts.intake import IntakeFailed, IntakeParsed
from contracts.mapping import SourceMapping
from contracts.readings import ReadingsNormalised
from contracts.registry import FAMILIES, decode, family_of
from ops import wiring
from ops.service import positions, run_components, wait_caught_up
from ops.settings import Settings, load_settings
from producers.intake import Intake
from projections.questdb import QuestDB
from projections.readings import TABLE, frame, projection

ROOT = Path(__file__).resolve().parents[2]  # the repository: ops/dev/ -> ops/ -> here
START = (2001, 2, 5)  # a Monday; days of 2001 that no real tenant's data touches
MAPPING_ID = "bench-flows"
COMPONENTS = ("normalise", "questdb-readings")
VARIANTS = ("inproc", "subproc")
QUICK = {"sensors": 20, "days": 1, "small_days": 0, "repeat": 1, "e2e_repeat": 1}
_TTY = sys.stderr.isatty()

# SQL: values are bound over PG wire ($1...); the only identifier is the projection's
# constant table name.
COUNT_SQL = f"SELECT count() FROM {TABLE} WHERE tenant = $1"
HELD_SQL = f"SELECT tenant, count() FROM {TABLE} WHERE ts >= $1 AND ts < $2"


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


def day_range_utc(days: int, tz: str) -> tuple[datetime, datetime]:
    """[first, end) UTC midnights of the day partitions that hold a ``days``-day file
    starting at START (aware datetimes)."""
    y, m, d = START
    lo = datetime(y, m, d, tzinfo=ZoneInfo(tz)).astimezone(UTC)
    last = lo + timedelta(days=days) - timedelta(microseconds=1)
    first = datetime(lo.year, lo.month, lo.day, tzinfo=UTC)
    return first, datetime(last.year, last.month, last.day, tzinfo=UTC) + timedelta(days=1)


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
        self._sample()
        self.cpu["other"] = max(0.0, _busy() - self._busy0 - sum(self.cpu.values()))

    def _sample(self) -> None:
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


# ---------------------------------------------------------------- QuestDB and JetStream


async def _sql(settings: Settings, query: str, *args) -> list:
    """Rows of ``query`` over PG wire with ``args`` bound to ``$1``..."""
    conn = await wiring.pg_connection(settings)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def _rows_of(settings: Settings, tenant: str) -> int:
    return (await _sql(settings, COUNT_SQL, tenant))[0][0]


def _bench_topology(settings: Settings) -> Topology:
    """The deployment's topology with only the two consumers the bench times."""
    topo = wiring.topology(settings)
    return Topology(topo.streams, tuple(topo.consumer(n) for n in COMPONENTS), topo.buckets)


async def _count(js, event_cls, tenant: str) -> int:
    """Messages of one event type of ``tenant`` in its family's stream."""
    info = await js.stream_info(stream_name(family_of(event_cls)),
                                subjects_filter=event_subjects(event_cls, tenant))
    return sum((info.state.subjects or {}).values())


async def _waiting(nc: Client, topo: Topology) -> dict[str, int]:
    """Pull requests waiting per consumer, i.e. whether a runner is attached (the
    positions of ``ops.service`` carry lag, not this)."""
    js = nc.jetstream()
    return {c.durable: (await js.consumer_info(c.stream, c.durable)).num_waiting or 0
            for c in topo.consumers}


# ---------------------------------------------------------------- end to end


@dataclass
class E2E:
    variant: str
    days: int
    tenant: str
    readings: int
    intake_id: str = ""
    submit_s: float = 0.0
    parsed_s: float = 0.0  # normalise done: it acknowledged the upload (intake.parsed out)
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


@dataclass
class _Hosts:
    """Where the two components run: a task of this process or two `tagus run` processes."""

    logs: dict[str, Path] = field(default_factory=dict)
    procs: list[subprocess.Popen] = field(default_factory=list)
    task: asyncio.Task | None = None
    sink_writes: int = 0  # the projection's write() calls, known once they stopped

    def check(self) -> None:
        """Raise if a runner is gone (it would leave the bench waiting for nothing)."""
        if self.task is not None and self.task.done():
            exc = None if self.task.cancelled() else self.task.exception()
            raise SystemExit(f"bench: the in-process runners stopped: {exc!r}")
        for name, p in zip(COMPONENTS, self.procs, strict=False):
            if p.poll() is not None:
                raise SystemExit(f"bench: `tagus {' '.join(p.args[3:])}` exited with code "
                                 f"{p.returncode}; see {self.logs[name]}")


@contextlib.asynccontextmanager
async def _hosted(variant: str, settings: Settings, batch: int, logdir: Path, label: str):
    """Run the two components for the body; stop them after it (SIGTERM for processes)."""
    hosts, stop = _Hosts(), asyncio.Event()
    try:
        if variant == "inproc":
            hosts.task = asyncio.create_task(
                run_components(settings, list(COMPONENTS), stop, batch=batch))
        else:
            for name in COMPONENTS:
                hosts.logs[name] = logdir / f"{label}-{name}.log"
                with open(hosts.logs[name], "wb") as log:
                    hosts.procs.append(subprocess.Popen(
                        [sys.executable, "-m", "ops.cli", "run", name, "--batch", str(batch)],
                        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        yield hosts
    finally:
        stop.set()
        for p in hosts.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in hosts.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
        stats = await hosts.task if hosts.task is not None else None
    hosts.sink_writes = (stats[COMPONENTS.index("questdb-readings")].batches if stats
                         else _writes_logged(hosts.logs["questdb-readings"], label))


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


async def _warm_up(nc: Client, settings: Settings, topo: Topology, batch: int) -> None:
    """Refuse a runner attached elsewhere (it would take part of the work and skew the
    figures); work off whatever was already pending (others' events) before the clock."""
    deadline = time.monotonic() + 3.0  # our previous run's last pull request may linger ~1 s
    while busy := [n for n, w in (await _waiting(nc, topo)).items() if w]:
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: another runner is attached to {busy} (a `tagus run` "
                             "somewhere?): it would take part of the work and skew the "
                             "figures; stop it and run the bench again")
        await asyncio.sleep(0.1)
    if any(p.lag for p in await positions(nc, topo)):
        async with _hosted("inproc", settings, batch, Path(), "warm-up") as hosts:
            await _caught_up(nc, topo, "warm-up", 600.0, lambda _: hosts.check())


async def _attached(nc: Client, topo: Topology, hosts: _Hosts, timeout_s: float) -> None:
    """Wait until both consumers have a pull request waiting (their runners are up)."""
    deadline = time.monotonic() + timeout_s
    while not all((await _waiting(nc, topo)).values()):
        hosts.check()
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: runners not attached to {COMPONENTS} within "
                             f"{timeout_s:.0f} s")
        await asyncio.sleep(0.05)


async def _caught_up(nc: Client, topo: Topology, label: str, timeout_s: float,
                     on_progress) -> None:
    try:
        await wait_caught_up(nc, topo, timeout_s=timeout_s, on_progress=on_progress)
    except TimeoutError as e:
        raise SystemExit(f"bench: {label}: {e}") from None


async def _timed_ingest(nc: Client, settings: Settings, topo: Topology, csv: Path, r: E2E,
                        hosts: _Hosts, progress: _Progress) -> None:
    """Submit, wait until both consumers caught up, wait for WAL, verify the count."""
    js = nc.jetstream()
    await put_mapping(js, r.tenant, MAPPING_ID, (csv.with_suffix(".yaml")).read_bytes())
    t0 = time.perf_counter()
    submitted = await Intake(js).submit_detailed(
        tenant=r.tenant, source="file", content_type="text/csv", body=csv,
        filename=csv.name, mapping_id=MAPPING_ID)
    r.submit_s = time.perf_counter() - t0
    r.intake_id = submitted.event.event_id
    if submitted.duplicate:
        raise SystemExit(f"bench: tenant {r.tenant} already ingested this file (not fresh)")
    shown = [0.0]

    def on_progress(pos) -> None:
        hosts.check()
        now = time.perf_counter() - t0
        lag = {p.durable: p.lag for p in pos}
        if not r.parsed_s and lag["normalise"] == 0:  # acked after its outputs went out
            r.parsed_s = now
        if now - shown[0] >= 1.0:
            shown[0] = now
            progress.show(f"{now:5.1f} s  normalise {'done' if r.parsed_s else 'parsing'}, "
                          f"questdb-readings {lag['questdb-readings']} behind")

    await _caught_up(nc, topo, r.tenant, 1800.0, on_progress)
    r.written_s = time.perf_counter() - t0
    if await _count(js, IntakeFailed, r.tenant) or not await _count(js, IntakeParsed, r.tenant):
        raise SystemExit(f"bench: {r.tenant}: no intake.parsed (intake.failed?); see `tagus "
                         "status` and the DEADLETTER stream")
    progress.show(f"{r.written_s:5.1f} s  written; waiting for WAL apply")
    await asyncio.to_thread(wiring.questdb(settings).wait_for_wal, TABLE, 600.0)
    r.visible_s = time.perf_counter() - t0
    count = await _rows_of(settings, r.tenant)
    if count != r.readings:
        raise SystemExit(f"bench: {r.tenant}: expected {r.readings:,} rows in {TABLE}, "
                         f"found {count:,}: the pipeline lost or duplicated readings")
    r.batches = await _count(js, ReadingsNormalised, r.tenant)
    progress.show(f"{r.visible_s:5.1f} s  {count:,} rows queryable "
                  f"({r.rate / 1e3:,.0f} k readings/s)", final=True)


async def e2e(nc: Client, settings: Settings, csv: Path, r: E2E, batch: int,
              logdir: Path) -> None:
    """One timed run of ``r.variant``; fills ``r``."""
    topo = _bench_topology(settings)
    await _warm_up(nc, settings, topo, batch)
    progress = _Progress(f"e2e {r.variant} {r.days}d {r.tenant}")
    async with _hosted(r.variant, settings, batch, logdir, r.tenant) as hosts:
        await _attached(nc, topo, hosts, 60 if r.variant == "inproc" else 120)
        with ProcSampler() as ps:
            if hosts.procs:
                ps.watch("bench (submit + poll)", os.getpid(), rss=False)
                for name, p in zip(COMPONENTS, hosts.procs, strict=True):
                    ps.watch(f"tagus run {name}", p.pid)
            else:
                ps.watch("bench (normalise + questdb-readings)", os.getpid(), rss=False)
            _watch_servers(ps, settings)
            await _timed_ingest(nc, settings, topo, csv, r, hosts, progress)
        r.cpu = ps.cpu
        r.rss = ps.peak if hosts.procs else {
            "this process (ru_maxrss, lifetime)": ru_maxrss_bytes()}
    r.sink_writes = hosts.sink_writes


# ---------------------------------------------------------------- ceilings


async def fetch_batches(nc: Client, tenant: str) -> list[tuple[bytes, dict]]:
    """The ReadingsNormalised messages (bytes, headers) the e2e run of ``tenant`` published."""
    js = nc.jetstream()
    want = await _count(js, ReadingsNormalised, tenant)
    sub = await js.subscribe(event_subjects(ReadingsNormalised, tenant), ordered_consumer=True)
    out = []
    try:
        while len(out) < want:
            msg = await sub.next_msg(timeout=30)
            out.append((msg.data, dict(msg.headers or {})))
    finally:
        await sub.unsubscribe()
    return out


def ceiling_questdb(db: QuestDB, batches: list[bytes], tenant: str, per_write: int) -> float:
    """decode -> frame -> write_frame, ``per_write`` messages per request, until WAL applied."""
    t0 = time.perf_counter()
    for i in range(0, len(batches), per_write):
        events = [msgspec.structs.replace(decode("readings", b), tenant=tenant)
                  for b in batches[i:i + per_write]]
        db.write_frame(TABLE, frame(events), symbols=["tenant", "sensor", "unit"])
    db.wait_for_wal(TABLE, 600.0)
    return time.perf_counter() - t0


async def ceiling_jetstream(nc: Client, batches: list[tuple[bytes, dict]], stream: str,
                            subject: str, run: int) -> tuple[float, float]:
    """(seconds with publish_async, seconds one awaited publish at a time) into ``stream``.

    Every publish gets a new ``Nats-Msg-Id``: a repeated id would be dropped by the
    stream's duplicate window, not stored, and flatter the figure.
    """
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
            acks = [await js.publish(subject, data, headers=h, timeout=30) for data, h in msgs]
        out.append(time.perf_counter() - t0)
        if any(a.duplicate for a in acks) or len(acks) != len(batches):
            raise SystemExit(f"bench: JetStream ceiling: {sum(bool(a.duplicate) for a in acks)}"
                             " publishes were dropped as duplicates")
    return out[0], out[1]


async def make_bench_stream(nc: Client, name: str, subject: str) -> None:
    """A temporary stream configured like the readings stream (storage, replicas, dedup
    window).  Its name and subject are the bench's own, outside the ``tagus.`` root on
    purpose: no Tagus stream or consumer may capture what the ceiling publishes."""
    js = nc.jetstream()
    have = (await js.stream_info(stream_name(family_of(ReadingsNormalised)))).config
    await js.add_stream(js_api.StreamConfig(
        name=name, subjects=[subject], description="tagus bench ingest (temporary)",
        storage=have.storage, retention=have.retention, num_replicas=have.num_replicas,
        duplicate_window=have.duplicate_window, max_msg_size=have.max_msg_size,
        allow_direct=True))


# ---------------------------------------------------------------- clean-up


async def drop_bench_days(settings: Settings, db: QuestDB, prefix: str, days: int,
                          tz: str) -> str:
    """Drop the day partitions of the bench window when only ``prefix`` tenants have rows there.

    Every run then writes into empty partitions: a write into days that already hold
    rows costs QuestDB an out-of-order merge that grows with what is there.
    """
    lo, hi = day_range_utc(days, tz)
    span = f"{lo:%Y-%m-%d}..{hi:%Y-%m-%d}"
    held = await _sql(settings, HELD_SQL, *(t.replace(tzinfo=None) for t in (lo, hi)))  # UTC
    if not held:
        return ""
    others = [t for t, _ in held if not t.startswith(prefix)]
    if others:
        return (f"kept {TABLE} partitions {span}: they also hold rows of "
                f"{others[:5]}{' ...' if len(others) > 5 else ''}")
    # QuestDB's DDL cannot bind values: this statement is formatted, but only from the two
    # datetimes day_range_utc computed (START, a day count, a zone ZoneInfo accepted)
    lo_s, hi_s = (f"'{t:%Y-%m-%dT%H:%M:%S.%fZ}'" for t in (lo, hi))
    await asyncio.to_thread(
        db.exec, f"ALTER TABLE {TABLE} DROP PARTITION WHERE ts >= {lo_s} AND ts < {hi_s}")
    await asyncio.to_thread(db.wait_for_wal, TABLE, 120.0)
    return f"dropped {TABLE} partitions {span} (bench rows only)"


async def cleanup(nc: Client, tenants: list[str], intakes: list[tuple[str, str]],
                  stream: str) -> list[str]:
    """``intakes``: (tenant, intake id) of every upload the bench submitted."""
    notes = []
    js = nc.jetstream()
    try:
        await js.delete_stream(stream)
        notes.append(f"deleted the temporary stream {stream}")
    except JsNotFound:
        pass
    store = await js.object_store(INTAKE_BUCKET)
    seen, maps = await js.key_value(SEEN_BUCKET), await js.key_value(MAPPINGS_BUCKET)
    for t in tenants:
        for family in FAMILIES:
            with contextlib.suppress(JsNotFound):
                await js.purge_stream(stream_name(family), subject=tenant_subjects(family, t))
        for name in await _object_names(store, f"{t}/"):
            await store.delete(name)
            await seen.purge(name.replace("/", ".", 1))  # <tenant>/<sha> -> <tenant>.<sha>
        await maps.purge(mapping_key(t, MAPPING_ID))
    with contextlib.suppress(JsNotFound):
        outputs = await js.key_value(OUTPUTS_BUCKET)
        for tenant, intake_id in intakes:
            await outputs.purge(OutputLog.key("normalise", tenant, intake_id))
    notes.append(f"purged {len(tenants)} bench tenants from every stream, their uploads, "
                 "KV keys and output records")
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
    p.add_argument("--quick", action="store_true", help="CI smoke run: " + ", ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()) + " (options given win)")
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**QUICK)
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or set(variants) - set(VARIANTS):
        p.error(f"--variants: choose from {VARIANTS}")
    if min(args.sensors, args.days, args.repeat, args.e2e_repeat) < 1 or args.small_days < 0:
        p.error("--sensors, --days, --repeat and --e2e-repeat must be >= 1")
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
    db = wiring.questdb(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    prefix = f"bench-{stamp}-"
    tenants: list[str] = []
    results: list[E2E] = []
    # the temporary stream of the JetStream ceiling (see make_bench_stream)
    stream, subject = f"BENCH_INGEST_{stamp.replace('-', '_')}", f"tagusbench.{stamp}.readings"
    sizes = [d for d in dict.fromkeys([args.small_days, args.days]) if d]

    async def fresh() -> None:
        """Empty the bench days again (this run's rows only) so the next run starts equal."""
        note = "" if args.keep else await drop_bench_days(settings, db, prefix, max(sizes),
                                                          args.tz)
        if note.startswith("kept"):
            print(f"  WARNING: {note}; the runs write into partitions that already hold rows "
                  "(an out-of-order merge each time): slower, less comparable figures")

    async with wiring.nats(settings, "tagus-bench-ingest") as nc:
        await ensure_topology(nc.jetstream(), wiring.topology(settings))
        await asyncio.to_thread(projection(db).prepare)
        try:
            await fresh()
            for days in sizes:
                csv = workdir / f"bench-{args.sensors}x{days}d.csv"
                t = time.perf_counter()
                rows = await asyncio.to_thread(write_csv, csv, sensors=args.sensors, days=days,
                                               tz=args.tz, seed=args.seed)
                csv.with_suffix(".yaml").write_bytes(mapping_yaml(sensors=args.sensors,
                                                                  tz=args.tz))
                print(f"file: {csv} ({rows:,} rows x {args.sensors} = {rows * args.sensors:,} "
                      f"readings, {csv.stat().st_size / 2**20:.1f} MB) written in "
                      f"{time.perf_counter() - t:.1f} s")
                for i in range(args.e2e_repeat):
                    for variant in variants:
                        tenants.append(f"{prefix}{days}d-{variant}-{i + 1}")
                        results.append(E2E(variant, days, tenants[-1], rows * args.sensors))
                        await e2e(nc, settings, csv, results[-1], args.batch, workdir)
                        await fresh()
            ceilings = await _ceilings(nc, settings, db, args, results, prefix, tenants,
                                       stream, subject, fresh)
            _report(args, results, ceilings, sizes, cmd)
        finally:
            if args.keep:
                print(f"kept: tenants {prefix}*, stream {stream} (--keep)")
            elif tenants:
                notes = [n for n in [await drop_bench_days(settings, db, prefix, max(sizes),
                                                           args.tz)] if n]
                notes += await cleanup(nc, tenants, [(r.tenant, r.intake_id) for r in results
                                                     if r.intake_id], stream)
                print("clean-up: " + "; ".join(notes))
    return 0


async def _ceilings(nc, settings, db, args, results, prefix, tenants, stream, subject,
                    fresh) -> dict:
    big = [r for r in results if r.days == args.days]
    batches = await fetch_batches(nc, big[0].tenant)
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
        count = await _rows_of(settings, tenant)
        if count != readings:
            raise SystemExit(f"bench: QuestDB ceiling wrote {count:,} rows, not {readings:,}")
        qdb.append(s)
        await fresh()
        print(f"  questdb   run {i + 1}: {s:6.2f} s  {readings / s / 1e3:8,.0f} k readings/s "
              f"({per_write} message(s) per write)")
    await make_bench_stream(nc, stream, subject + ".>")
    for i in range(args.repeat):
        a, s = await ceiling_jetstream(nc, batches, stream, f"{subject}.x", i)
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
