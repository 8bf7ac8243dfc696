"""Faults on a three-node JetStream cluster, with real processes and BattLeDIM files.

The components run as ``tagus run`` child processes (``normalise`` and
``questdb-readings``, one process each, started once for the module); uploads go
through ``ops.ingest.ingest`` (the ``tagus ingest`` path) or ``Intake.submit_detailed``
(the path every door ends in), and an upload that fails is retried, as the drop folder
does with a file it still holds.

- The READINGS stream's leader is SIGKILLed in the middle of an ingest: every
  acknowledged upload ends in QuestDB exactly once, with no operator action; the node,
  restarted, catches up (its copy of every stream equals the leader's).
- QuestDB is SIGKILLed during an ingest and restarted after a while: the projection
  backs off (nak with growing delays), then catches up; nothing lost, no dead letters.
- The normalise processor is stopped while uploads keep arriving, then restarted: it
  catches up.

Each prints its figures (``pytest -s``).  The long variants (QuestDB down 60 s, the
processor stopped 10 minutes) run with ``TAGUS_TEST_SLOW=1``.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import nats
import psutil
import pytest

from bus.publish import headers_for
from bus.subjects import subject_for
from contracts.intake import IntakeParsed
from contracts.registry import encode
from ops import wiring
from ops.dev import stack
from ops.ingest import IngestResult, ingest, register_mapping
from ops.nats_users import issue_credentials
from producers.intake import Intake
from tests.cluster_support import ACK_WAIT_S, cluster, cluster_nodes, slow  # noqa: F401
from tests.conftest import REPO
from tests.helpers import (
    assert_accepted_were_stored, eventually, reported, stream_events, stream_messages,
)

pytestmark = [pytest.mark.servers, pytest.mark.cluster]

MAPPINGS = REPO / "tests" / "mappings"
FILES = (("2019-01_SCADA_Flows.csv", "battledim_flows.yaml"),
         ("2019-01_SCADA_Levels.csv", "battledim_levels.yaml"))
PIPELINE = (("INTAKE", "normalise"), ("READINGS", "questdb-readings"))


@dataclass
class Upload:
    tenant: str
    path: Path
    mapping: Path
    result: IngestResult | None = None
    done_at: float | None = None  # monotonic: ingest returned (acknowledged and parsed)
    failures: list[str] = field(default_factory=list)


async def ingest_until_done(settings, u: Upload, deadline: float) -> None:
    """``tagus ingest`` until it succeeds: a retry of an upload already acknowledged is
    recognised by its content and waits for the first one's outcome."""
    while True:
        try:
            u.result = await ingest(settings, u.path, u.tenant, u.mapping, process="no",
                                    timeout_s=30, progress=False)
            u.done_at = time.monotonic()
            return
        except Exception as e:  # noqa: BLE001 - NATS failing over: retry, as a client does
            u.failures.append(f"{type(e).__name__}: {e}"[:200])
            if time.monotonic() > deadline:
                raise AssertionError(f"{u.tenant}/{u.path.name} never went through: "
                                     f"{u.failures[-3:]}") from e
            await asyncio.sleep(0.5)


async def ingest_all(settings, uploads: list[Upload], *, concurrency: int = 2,
                     timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    queue: asyncio.Queue[Upload] = asyncio.Queue()
    for u in uploads:
        queue.put_nowait(u)

    async def worker() -> None:
        while not queue.empty():
            await ingest_until_done(settings, queue.get_nowait(), deadline)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def battledim_uploads(shared_data: Path, prefix: str, tenants: int) -> list[Upload]:
    names = [f"{prefix}-{uuid.uuid4().hex[:6]}-{i}" for i in range(tenants)]
    return [Upload(t, shared_data / "battledim" / f, MAPPINGS / m)
            for t in names for f, m in FILES]


async def lag(nc, stream: str, durable: str) -> int | None:
    try:
        ci = await nc.jetstream().consumer_info(stream, durable, timeout=2)
    except Exception:  # noqa: BLE001 - no consumer leader at this instant
        return None
    return ci.num_pending + ci.num_ack_pending


async def wait_caught_up(nc, timeout_s: float) -> None:
    async def done() -> bool:
        lags = [await lag(nc, s, d) for s, d in PIPELINE]
        return all(n == 0 for n in lags)
    await eventually(done, timeout_s=timeout_s, interval_s=0.5,
                     what="normalise and questdb-readings caught up")


async def all_events(nc, stream: str, family: str, subject: str | None = None,
                     timeout_s: float = 60.0) -> list:
    """Every event of ``stream`` (``subject``: a filter), read again until as many as the
    stream holds: right after a leader change a fetch can time out, and the reader of
    ``tests.helpers`` then returns what it had so far."""
    js = nc.jetstream(timeout=30)
    deadline = time.monotonic() + timeout_s
    while True:
        info = await js.stream_info(stream, subjects_filter=subject or f"tagus.{family}.>")
        want = sum((info.state.subjects or {}).values())
        got = await stream_events(nc, stream, family, subject)
        if len(got) >= want:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"read {len(got)} of the {want} messages of {stream}")
        await asyncio.sleep(1)


async def assert_exactly_once(nc, settings, uploads: Counter[str]) -> dict[str, int]:
    """Each tenant's uploads (``uploads``: how many per tenant) parsed once each, each
    reading they accepted one row in QuestDB (none missing, none twice), no dead
    letters; returns rows per tenant."""
    tenants = set(uploads)
    parsed = [e for e in await all_events(nc, "INTAKE", "intake")
              if isinstance(e, IntakeParsed) and e.tenant in tenants]
    assert parsed, f"no intake.parsed of {sorted(tenants)}"
    times = Counter(p.intake_id for p in parsed)
    assert max(times.values()) == 1, [i for i, n in times.items() if n > 1]
    assert Counter(p.tenant for p in parsed) == uploads  # a retried upload is no new one
    want = Counter()
    for p in parsed:
        want[p.tenant] += p.values_accepted
    db = wiring.questdb(settings)
    await asyncio.to_thread(db.wait_for_wal, "readings", 120)
    have = {}
    for tenant in tenants:
        rows = db.rows("select sensor, count(), count_distinct(ts) from readings "
                       f"where tenant = '{tenant}'")
        have[tenant] = sum(n for _, n, _ in rows)
        assert all(n == distinct for _, n, distinct in rows), (tenant, rows)
        assert have[tenant] == want[tenant], (tenant, have[tenant], want[tenant])
    ids = Counter(e.event_id for e in await all_events(  # each readings message once
        nc, "READINGS", "readings", "tagus.readings.*.normalised") if e.tenant in tenants)
    assert ids and max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    assert not await stream_messages(nc, "DEADLETTER")
    await assert_accepted_were_stored(nc, settings)
    return have


def expected_accepted(uploads: list[Upload]) -> None:
    """The same file gives the same accounting for every tenant."""
    by_file: dict[str, set[int]] = {}
    for u in uploads:
        by_file.setdefault(u.path.name, set()).add(u.result.outcome.values_accepted)
    assert all(len(v) == 1 and min(v) > 0 for v in by_file.values()), by_file


# ---------------------------------------------------------------- the commands


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


async def test_commands_and_tenant_users_on_every_node(cluster):
    """`tagus stack up` leaves the running cluster alone; `tagus stack status` and
    `tagus status` show each node, and each stream's leader and replicas; a tenant's
    NATS user, issued once, works on every node (all of them reloaded)."""
    names = [n.name for n in cluster.nodes]
    up = await asyncio.to_thread(cluster.start_missing)  # what `tagus stack up` does
    assert all(any(ln.startswith(f"nats {n}: already running") for ln in up)
               for n in names), up

    servers, status = await asyncio.gather(
        asyncio.to_thread(cli, cluster.stack_env, "stack", "status"),
        asyncio.to_thread(cli, cluster.stack_env, "status"))
    assert servers.returncode == 0, servers.stdout + servers.stderr
    lines = {n: [ln for ln in servers.stdout.splitlines() if ln.startswith(f"nats {n} ")]
             for n in names}
    assert all(len(v) == 1 and " running " in v[0] for v in lines.values()), servers.stdout
    assert sum(ln[0].rstrip().endswith("meta leader") for ln in lines.values()) == 1

    def replicas_shown(out: subprocess.CompletedProcess) -> bool:
        """Each stream's leader and its two other nodes, both current."""
        assert out.returncode == 0, out.stderr
        rows = {ln.split()[0]: ln.split() for ln in out.stdout.splitlines() if ln.strip()}
        for stream in ("READINGS", "INTAKE", "KV_tagus-intake-seen", "OBJ_tagus-intake"):
            _, _, leader, *replicas = rows[stream]
            others = sorted(set(names) - {leader})
            assert leader in names, rows[stream]
            assert replicas[::2] == others, rows[stream]
            if replicas[1::2] != ["current,", "current"]:  # a follower a few ops behind
                return False
        return True

    async def status_current() -> bool:
        nonlocal status
        if replicas_shown(status):
            return True
        status = await asyncio.to_thread(cli, cluster.stack_env, "status")
        return False
    await eventually(status_current, timeout_s=60, interval_s=1,
                     what="`tagus status`: every stream's replicas current")

    tenant = f"cl-{uuid.uuid4().hex[:6]}"
    creds = await asyncio.to_thread(issue_credentials, cluster.stack_settings, tenant)
    assert creds.server.startswith("nats-server reloaded") and creds.server.count(",") == 2
    event = reported(1, tenant=tenant)
    for node in cluster.nodes:
        conn = await nats.connect(f"nats://127.0.0.1:{node.client_port}", user=creds.user,
                                  password=creds.password, inbox_prefix=creds.inbox_prefix,
                                  allow_reconnect=False, connect_timeout=5)
        try:
            ack = await conn.jetstream().publish(subject_for(event), encode(event), timeout=10,
                                                 headers=headers_for(event))
        finally:
            await conn.close()
        assert ack.stream == "READINGS", node.name  # once: the same event id each time


async def test_stream_replicas_3_replicates_streams_buckets_and_consumers(cluster):
    """With ``TAGUS_STREAM_REPLICAS=3`` every stream and bucket of the topology has three
    replicas (a leader and two current followers), consumers too; ensuring it again
    changes nothing; a bucket made at R1 before is moved to R3 by ``ensure_topology``."""
    from dataclasses import replace

    from bus.storage import BucketSpec, ensure_buckets
    from bus.topology import ensure_topology

    topo = wiring.topology(cluster.settings)
    want = {s.name for s in topo.streams} | {
        ("OBJ_" if b.kind == "object" else "KV_") + b.name for b in topo.buckets}
    async with wiring.nats(cluster.settings, "tagus-tests-cluster") as nc:
        js = nc.jetstream(timeout=30)  # R3 changes take seconds under load
        assert await ensure_topology(js, topo) == []
        have = {i.config.name: i for i in await js.streams_info()}
        assert want <= set(have), sorted(want - set(have))
        assert {n: have[n].config.num_replicas for n in want} == dict.fromkeys(want, 3)
        assert all(len(have[n].cluster.replicas or []) == 2 for n in want), [
            n for n in want if len(have[n].cluster.replicas or []) != 2]
        ci = await js.consumer_info("INTAKE", "normalise")
        assert ci.cluster.leader and len(ci.cluster.replicas or []) == 2, ci.cluster

        suffix = uuid.uuid4().hex[:6]
        old = (BucketSpec(f"tagus-test-kv-{suffix}", "kv", "test: R1 then R3"),
               BucketSpec(f"tagus-test-obj-{suffix}", "object", "test: R1 then R3"))
        try:
            assert await ensure_buckets(js, old) == [f"created {b.kind} bucket {b.name}"
                                                     for b in old]
            kv = await js.key_value(old[0].name)
            await kv.put("k", b"before")
            r3 = tuple(replace(b, replicas=3) for b in old)
            assert await ensure_buckets(js, r3) == [
                f"updated {b.kind} bucket {b.name}: replicas 3" for b in old]
            assert await ensure_buckets(js, r3) == []
            for b in old:
                info = await js.stream_info(("OBJ_" if b.kind == "object" else "KV_") + b.name)
                assert info.config.num_replicas == 3, (b.name, info.config.num_replicas)
            assert (await kv.get("k")).value == b"before"
        finally:
            await js.delete_key_value(old[0].name)
            await js.delete_object_store(old[1].name)


# ---------------------------------------------------------------- the stream leader


async def test_stream_leader_killed_mid_ingest_then_restarted(cluster, shared_data):
    s = cluster.settings
    uploads = battledim_uploads(shared_data, "leader", tenants=4)
    async with wiring.nats(s, "tagus-tests-cluster") as nc:
        work = asyncio.create_task(ingest_all(s, uploads, concurrency=2))
        await eventually(lambda: sum(u.done_at is not None for u in uploads) >= 2,
                         timeout_s=120, what="the first uploads through")
        victim = await cluster.leader(nc, "READINGS")
        done_at_kill = sum(u.done_at is not None for u in uploads)
        t_kill = time.monotonic()
        cluster.kill(victim)
        new = await cluster.leader(nc, "READINGS")
        elected_s = time.monotonic() - t_kill
        assert new != victim
        await work
        assert done_at_kill < len(uploads), "the kill came after the ingest"
        first_after_s = min(u.done_at for u in uploads if u.done_at > t_kill) - t_kill
        await wait_caught_up(nc, timeout_s=120)
        recovered_s = time.monotonic() - t_kill
        expected_accepted(uploads)
        rows = await assert_exactly_once(nc, s, Counter(u.tenant for u in uploads))
        retried = sum(bool(u.failures) for u in uploads)

        t_restart = time.monotonic()
        lines = await asyncio.to_thread(cluster.start_missing)
        assert any(victim.name in ln and "started" in ln for ln in lines), lines
        healthy_s = time.monotonic() - t_restart

        def same_as_leader() -> bool:
            mine, theirs = cluster.states(victim), cluster.states(new)
            return mine is not None and mine == theirs and "READINGS" in mine
        await eventually(same_as_leader, timeout_s=60, interval_s=0.5,
                         what=f"{victim.name}'s streams equal to {new.name}'s")
        caught_up_s = time.monotonic() - t_restart
        readings = cluster.states(victim)["READINGS"]
    print(f"\ncluster figure: READINGS leader {victim.name} SIGKILLed with {done_at_kill}/"
          f"{len(uploads)} uploads done; new leader {new.name} in {elected_s:.1f} s; first "
          f"upload through after the kill {first_after_s:.1f} s; pipeline caught up "
          f"{recovered_s:.1f} s after the kill; {retried} uploads retried by the client; "
          f"{sum(rows.values()):,} rows, each once; {victim.name} restarted, healthy in "
          f"{healthy_s:.1f} s, streams equal to the leader's after {caught_up_s:.1f} s "
          f"(READINGS {readings['messages']} messages, last seq {readings['last_seq']})")


# ---------------------------------------------------------------- QuestDB


@pytest.mark.parametrize("outage_s", [6, pytest.param(60, marks=[pytest.mark.slow, slow])],
                         ids=lambda s: f"{s}s")
async def test_questdb_killed_during_ingest(cluster, settings, shared_data, outage_s):
    s = cluster.settings
    uploads = battledim_uploads(shared_data, f"qdb{outage_s}", tenants=2 if outage_s < 60
                                else 4)
    tenants = {u.tenant for u in uploads}
    db = wiring.questdb(s)

    def rows_in() -> int:
        try:
            return db.rows("select count() from readings where tenant in ("
                           + ",".join(f"'{t}'" for t in tenants) + ")")[0][0]
        except Exception:  # noqa: BLE001 - QuestDB down
            return 0

    async with wiring.nats(s, "tagus-tests-cluster") as nc:
        work = asyncio.create_task(ingest_all(s, uploads, concurrency=1))
        try:
            await eventually(rows_in, timeout_s=120, interval_s=0.2,
                             what="the first rows in QuestDB")
            pid = stack.managed_pids(settings)["questdb"]
            if not pid:  # TAGUS_TEST_EXTERNAL_STACK=1: not ours to kill
                pytest.skip("the session's QuestDB is external: not ours to kill")
            log_from = cluster.log_path("questdb-readings").stat().st_size
            t_kill = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            psutil.Process(pid).wait(10)
            stored_at_kill = sum(u.done_at is not None for u in uploads)
            await asyncio.sleep(outage_s)
            lag_before = await lag(nc, "READINGS", "questdb-readings")
        finally:
            t_up = time.monotonic()
            await asyncio.to_thread(stack.questdb_up, settings)
        questdb_start_s = time.monotonic() - t_up
        await work
        await wait_caught_up(nc, timeout_s=outage_s + 240)
        caught_up_s = time.monotonic() - t_kill
        rows = await assert_exactly_once(nc, s, Counter(u.tenant for u in uploads))
    retries = [ln for ln in cluster.log_lines("questdb-readings", since=log_from)
               if ln.get("event") == "handler failed; will retry"]
    delays = [r["delay_s"] for r in retries]
    assert lag_before, "nothing was waiting for QuestDB"
    assert retries, "the projection never retried"
    assert max(delays) > ACK_WAIT_S, f"no backoff beyond the first step: {sorted(set(delays))}"
    print(f"\ncluster figure: QuestDB SIGKILLed for {outage_s} s ({stored_at_kill}/"
          f"{len(uploads)} uploads parsed at the kill, {lag_before} readings batches waiting "
          f"at the end of the outage); restarted in {questdb_start_s:.1f} s; projection "
          f"retried {len(retries)} times with delays {sorted(set(delays))} s; caught up "
          f"{caught_up_s:.1f} s after the kill; {sum(rows.values()):,} rows, each once")


# ---------------------------------------------------------------- a processor stopped


def day_slices(path: Path) -> list[tuple[str, bytes]]:
    """A month's file as one upload per day (header + that day's rows, bytes as is)."""
    header, *rows = path.read_bytes().splitlines(keepends=True)
    days: dict[str, list[bytes]] = {}
    for row in rows:
        days.setdefault(row[:10].decode(), []).append(row)
    return [(day, header + b"".join(r)) for day, r in sorted(days.items())]


@pytest.mark.parametrize("stop_s,every_s", [
    (10, 0.5), pytest.param(600, 2.0, marks=[pytest.mark.slow, slow])],
    ids=["10s", "10min"])
async def test_processor_stopped_while_readings_flow(cluster, shared_data, stop_s, every_s):
    s = cluster.settings
    slices = {f: day_slices(shared_data / "battledim" / f) for f, _ in FILES}
    per_tenant = sum(len(v) for v in slices.values())
    needed = math.ceil((stop_s + 15) / every_s)
    tenants = [f"stop{stop_s}-{uuid.uuid4().hex[:6]}-{i}"
               for i in range(math.ceil(needed / per_tenant))]
    plan = [(t, f, day, body) for t in tenants for day_i in range(31) for f, _ in FILES
            for day, body in slices[f][day_i:day_i + 1]]
    acked: list[tuple[str, str]] = []  # (tenant, intake id)
    feeding = asyncio.Event()
    feeding.set()

    async with wiring.nats(s, "tagus-tests-cluster") as nc:
        js = nc.jetstream()
        for t in tenants:
            for f, m in FILES:
                await register_mapping(nc, t, MAPPINGS / m, Path(m).stem)

        async def feed() -> None:
            intake = Intake(js)
            for tenant, f, day, body in plan:
                if not feeding.is_set():
                    return
                mapping_id = Path(dict(FILES)[f]).stem
                sub = await intake.submit_detailed(
                    tenant=tenant, source="file", content_type="text/csv", body=body,
                    filename=f"{day}_{f}", mapping_id=mapping_id)
                acked.append((tenant, sub.event.event_id))
                await asyncio.sleep(every_s)

        feeder = asyncio.create_task(feed())
        try:
            await eventually(lambda: len(acked) >= 4, timeout_s=60, what="uploads flowing")
            await wait_caught_up(nc, timeout_s=60)  # the processor is keeping up
            assert cluster.stop("normalise") == 0, "normalise did not stop cleanly"
            t_stop, at_stop = time.monotonic(), len(acked)
            await asyncio.sleep(stop_s)
            behind = await lag(nc, "INTAKE", "normalise")
            assert behind and behind >= len(acked) - at_stop - 1, (behind, len(acked), at_stop)
            t_restart = time.monotonic()
            cluster.run("normalise")
            await asyncio.sleep(3)  # uploads keep arriving while it catches up
        finally:
            feeding.clear()
            await feeder
        await wait_caught_up(nc, timeout_s=300)
        caught_up_s = time.monotonic() - t_restart
        uploads_during = len(acked) - at_stop
        rows = await assert_exactly_once(nc, s, Counter(t for t, _ in acked))
        parsed = {e.intake_id for e in await all_events(nc, "INTAKE", "intake")
                  if isinstance(e, IntakeParsed) and e.tenant in set(tenants)}
        assert parsed == {i for _, i in acked}
    print(f"\ncluster figure: normalise stopped {stop_s} s ({time.monotonic() - t_stop:.0f} s "
          f"in all) while {uploads_during} uploads arrived ({behind} waiting at the "
          f"restart); caught up {caught_up_s:.1f} s after the restart (3 s of it still "
          f"feeding); {len(acked)} uploads, {sum(rows.values()):,} rows, each once")
