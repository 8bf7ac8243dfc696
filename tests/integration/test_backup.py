"""Backup, destroy, restore, replay: every QuestDB table as it was (issue 14).

The session's stack holds a configured L-Town tenant with real uploads and a task that
ran; the backup goes to a directory; a second, empty stack on free ports (its own NATS
and QuestDB) receives it through ``tagus restore --replay``; every table, KV value,
object, stream sequence and consumer position is compared with the original.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from nats.js import api as js_api
from nats.js.errors import NoKeysError, NotFoundError

from bus.storage import INTAKE_BUCKET
from bus.topology import ensure_topology
from contracts.forecasts import MODELS_BUCKET
from ops import wiring
from ops.backup import BackupError, backup, read_manifest, rebuild_questdb, restore
from ops.config_service import ConfigStore
from ops.dev import stack
from ops.ingest import ingest, register_mapping
from ops.service import positions
from tests.conftest import REPO, stack_env

pytestmark = pytest.mark.servers
MAPPINGS = REPO / "tests" / "mappings"


def table_digests(settings, tenant: str) -> dict[str, tuple[int, str]]:
    """{table: (rows, sha256 of its rows)} of the tenant's rows in every QuestDB table
    that has a tenant column (rows sorted, so the order QuestDB returns them is moot)."""
    db = wiring.questdb(settings)
    db.wait_for_wal()
    out = {}
    for (table,) in db.rows("select table_name from tables()"):
        columns = [c[0] for c in db.rows(f"select \"column\" from table_columns('{table}')")]
        if "tenant" not in columns:
            continue
        rows = db.rows(f"select * from '{table}' where tenant = '{tenant}'")
        if rows:
            text = "\n".join(sorted(json.dumps(r, sort_keys=True) for r in rows))
            out[table] = (len(rows), hashlib.sha256(text.encode()).hexdigest())
    return out


async def configured_tenant(nc, shared_data, tenant: str) -> None:
    """Tenant, mappings, the network (a large body: object store ``tagus-config-files``),
    a sensor binding and a chain that turns tank levels into a completeness-KPI task."""
    store = ConfigStore(nc.jetstream())
    await store.create_tenant(tenant, display_name="L-Town", timezone="Europe/Nicosia",
                              author="test")
    for name in ("battledim_flows", "battledim_levels"):
        await register_mapping(nc, tenant, MAPPINGS / f"{name}.yaml", name)
    await store.put(tenant, "network", (shared_data / "battledim" / "L-TOWN.inp").read_bytes(),
                    author="test")
    await store.put(tenant, "assets", {"bindings": [
        {"sensor": "T1", "role": "tank_level", "element": "T1"}]}, author="test")
    await store.put(tenant, "chains", {"rules": [{
        "name": "levels-to-completeness", "on": "readings.normalised",
        "where": {"bound_role": "tank_level"}, "request": "data.completeness",
        "params": {"day": "2019-01-02"}, "debounce_s": 86400, "delay_s": 1}]},
        author="test")


def second_stack(base, tmp_path: Path) -> tuple[dict[str, str], object]:
    """TAGUS_* of an empty stack on free ports, and its settings (the consumers' policy
    of ``base``, so the restored topology is the one these settings describe)."""
    env = {**stack_env(tmp_path / "var2"),
           "TAGUS_CONSUMER_ACK_WAIT_S": str(base.consumer_ack_wait_s),
           "TAGUS_CONSUMER_MAX_DELIVER": str(base.consumer_max_deliver)}
    s = base.model_copy(update=dict(
        data_dir=Path(env["TAGUS_DATA_DIR"]), nats_port=int(env["TAGUS_NATS_PORT"]),
        nats_monitor_port=int(env["TAGUS_NATS_MONITOR_PORT"]),
        nats_mqtt_port=int(env["TAGUS_NATS_MQTT_PORT"]),
        questdb_http_port=int(env["TAGUS_QUESTDB_HTTP_PORT"]),
        questdb_pg_port=int(env["TAGUS_QUESTDB_PG_PORT"]),
        questdb_ilp_port=int(env["TAGUS_QUESTDB_ILP_PORT"]),
        questdb_min_http_port=int(env["TAGUS_QUESTDB_MIN_HTTP_PORT"])))
    return env, s


def tagus(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO,
                          env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=180)


async def kv_contents(js, bucket: str) -> dict[str, bytes]:
    kv = await js.key_value(bucket)
    try:
        keys = await kv.keys()
    except NoKeysError:
        return {}
    return {k: (await kv.get(k)).value for k in keys}


async def test_backup_destroy_restore_replay_gives_every_table_back(
        nc, fast_settings, shared_data, tmp_path):
    env2, s2 = second_stack(fast_settings, tmp_path)
    try:
        await _round_trip(nc, fast_settings, shared_data, tmp_path, env2, s2)
    finally:
        await asyncio.to_thread(stack.down, s2)


async def _round_trip(nc, settings, shared_data, tmp_path, env2, s2) -> None:
    tenant = f"bk-{uuid.uuid4().hex[:6]}"
    started = time.monotonic()
    await configured_tenant(nc, shared_data, tenant)
    flawed = tmp_path / "flawed.csv"  # a few rejections: readings_rejected has rows too
    flawed.write_bytes(
        (shared_data / "battledim" / "2019-01_SCADA_Flows.csv").read_bytes()[:3000]
        .rsplit(b"\r\n", 1)[0] + b"\r\n2019-01-01 09:00:00;abc;1;2\r\nnot a time;1;2;3\r\n")
    for path, mapping in [(shared_data / "battledim" / "2019-01_SCADA_Levels.csv", "levels"),
                          (shared_data / "battledim" / "2019-01_SCADA_Flows.csv", "flows"),
                          (flawed, "flows")]:
        result = await ingest(settings, path, tenant, MAPPINGS / f"battledim_{mapping}.yaml",
                              mapping_id=f"battledim_{mapping}", process="yes",
                              progress=False, timeout_s=300)
        assert type(result.outcome).__name__ == "IntakeParsed", result.outcome
    ingest_s = time.monotonic() - started
    js = nc.jetstream()
    model = os.urandom(300_000)  # several object-store chunks
    await (await js.object_store(MODELS_BUCKET)).put(f"{tenant}/model", model)
    before = table_digests(settings, tenant)
    assert {"readings", "intake_log", "readings_rejected", "tasks", "kpis"} <= set(before), before
    were = {(p.stream, p.durable): p.ack_floor_stream_seq
            for p in await positions(nc, wiring.topology(settings))}
    states = {s.config.name: (s.state.first_seq, s.state.last_seq, s.state.messages)
              for s in await js.streams_info() if not s.config.name.startswith("$MQTT_")}

    started = time.monotonic()
    report = await backup(settings, tmp_path / "backup", progress=False, nc=nc)
    backup_s = time.monotonic() - started
    manifest = read_manifest(tmp_path / "backup")
    assert {e["name"]: (e["first_seq"], e["last_seq"], e["messages"])
            for e in manifest["streams"]} == states
    kinds = {e["name"]: e["kind"] for e in manifest["streams"]}
    assert kinds["KV_tagus-task-state"] == "kv" and kinds["OBJ_tagus-intake"] == "object"
    assert kinds["READINGS"] == "events"
    with pytest.raises(BackupError, match="not empty"):
        await backup(settings, tmp_path / "backup", progress=False, nc=nc)

    # the second stack starts once the data is in: a JVM starting beside the ingest on two
    # cores slowed the first stack's JetStream API past its clients' timeouts
    await asyncio.to_thread(stack.up, s2)
    started = time.monotonic()
    done = tagus(env2, "restore", str(tmp_path / "backup"), "--quiet")
    restore_s = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified" in done.stdout and "PROBLEMS" not in done.stdout
    assert "tagus replay --into P" in done.stdout and "questdb-readings" in done.stdout
    again = tagus(env2, "restore", str(tmp_path / "backup"), "--replay", "--quiet")
    assert again.returncode == 1 and "not empty" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    nc2 = await wiring.nats_connection(s2, name="tagus-tests-restored")
    try:
        js2 = nc2.jetstream()
        assert await ensure_topology(js2, wiring.topology(s2)) == []  # as it was
        assert {s.config.name: (s.state.first_seq, s.state.last_seq, s.state.messages)
                for s in await js2.streams_info()
                if not s.config.name.startswith("$MQTT_")} == states
        assert {(p.stream, p.durable): p.ack_floor_stream_seq
                for p in await positions(nc2, wiring.topology(s2))} == were
        for name, kind in kinds.items():
            if kind == "kv":
                bucket = name.removeprefix("KV_")
                assert await kv_contents(js2, bucket) == await kv_contents(js, bucket), bucket
        assert (await (await js2.object_store(MODELS_BUCKET)).get(f"{tenant}/model")
                ).data == model
        assert (await ConfigStore(js2).document(tenant, "network")) == (
            shared_data / "battledim" / "L-TOWN.inp").read_bytes().decode()
        assert len(await (await js2.object_store(INTAKE_BUCKET)).list()) == 3

        started = time.monotonic()
        replayed = await rebuild_questdb(s2, progress=False, nc=nc2)
        replay_s = time.monotonic() - started
        assert table_digests(s2, tenant) == before

        # the restored stack goes on where the original stood: the next config version
        assert (await ConfigStore(js2).put(tenant, "assets", {"bindings": [
            {"sensor": "T1", "role": "tank_level", "element": "T1", "offset_m": 0.1}]},
            author="test")).version == 2
    finally:
        await nc2.drain()
    print(f"\nconfigure and ingest (processed) {ingest_s:.1f} s; "
          f"backup {report.messages:,} messages, {report.bytes / 1e6:.2f} MB, files "
          f"{manifest['totals']['file_bytes'] / 1e6:.2f} MB in {backup_s:.2f} s; `tagus "
          f"restore` (process, restore, verify) {restore_s:.1f} s; replay {replay_s:.1f} s\n"
          f"{done.stdout}" + "\n".join(replayed))


async def test_sequences_gaps_duplicate_ids_revisions_and_positions_survive(
        nc, fast_settings, tmp_path):
    """What a quick round trip would get wrong: a purged prefix, deleted messages, ids
    re-appended after the duplicate window, KV revisions with deletes and purges, a
    consumer's acknowledged position; a damaged file; a target that is not empty."""
    js = nc.jetstream()
    await js.add_stream(js_api.StreamConfig(name="BKTEST", subjects=["bktest.>"],
                                            duplicate_window=1.0))
    for i in range(300):
        await js.publish_async(f"bktest.t{i % 3}", f"m{i}".encode(),
                               headers={"Nats-Msg-Id": f"id{i}", "Tagus-Type": "x"})
    await js.publish_async_completed()
    await asyncio.sleep(1.2)  # the window has passed: the same ids are stored again
    for i in range(5):
        await js.publish("bktest.t0", b"again", headers={"Nats-Msg-Id": f"id{i}"})
    for seq in (50, 51, 52, 200):
        await js.delete_msg("BKTEST", seq)
    await js.purge_stream("BKTEST", seq=10)
    await js.add_consumer("BKTEST", js_api.ConsumerConfig(
        durable_name="bk-reader", ack_policy=js_api.AckPolicy.EXPLICIT,
        filter_subjects=["bktest.t0", "bktest.t1"]))
    reader = await js.pull_subscribe_bind("bk-reader", stream="BKTEST")
    for m in await reader.fetch(40, timeout=5):
        await m.ack()
    kv = await js.create_key_value(js_api.KeyValueConfig(bucket="bktest", history=3))
    for i in range(40):
        await kv.put(f"k{i % 4}", f"v{i}".encode())
    await kv.delete("k1")
    await kv.purge("k2")
    await kv.create("fresh", b"1")
    await kv.update("fresh", b"2", last=(await kv.get("fresh")).revision)

    async def picture():
        info = await js.stream_info("BKTEST")
        msgs = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            try:
                m = await js.get_msg("BKTEST", seq)
            except NotFoundError:
                continue
            msgs.append((m.seq, m.subject, m.data, m.headers))
        c = await js.consumer_info("BKTEST", "bk-reader")
        # each key's history read from the bucket's stream (nats-py's kv.history() can
        # end its replay early and raise NoKeysError: nats-io/nats.py#842)
        kv_info = await js.stream_info("KV_bktest")
        history: dict[str, list] = {}
        for seq in range(kv_info.state.first_seq, kv_info.state.last_seq + 1):
            try:
                m = await js.get_msg("KV_bktest", seq)
            except NotFoundError:
                continue
            history.setdefault(m.subject.removeprefix("$KV.bktest."), []).append(
                (m.seq, m.data, (m.headers or {}).get("KV-Operation", "PUT")))
        return (info.state.first_seq, info.state.last_seq, info.state.num_deleted, msgs,
                c.ack_floor.stream_seq, c.num_pending, history)

    before = await picture()
    assert before[0] == 10 and len(before[3]) == 305 - 9 - 4
    await backup(fast_settings, tmp_path / "bk", progress=True, nc=nc)  # bars to stderr
    with pytest.raises(BackupError, match="not empty.*BKTEST.*--replace"):
        await restore(fast_settings, tmp_path / "bk", progress=False, nc=nc)
    await js.delete_stream("BKTEST")
    await js.delete_key_value("bktest")
    # what is left (the topology's streams, all empty) is replaced without asking
    report = await restore(fast_settings, tmp_path / "bk", progress=True, nc=nc)
    assert report.ok, report.lines()
    assert await picture() == before
    report = await restore(fast_settings, tmp_path / "bk", replace=True, progress=False, nc=nc)
    assert report.ok and await picture() == before

    damaged = tmp_path / "bk" / "streams" / "BKTEST.msgs"
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    with pytest.raises(BackupError, match="BKTEST.msgs is damaged"):
        await restore(fast_settings, tmp_path / "bk", replace=True, progress=False, nc=nc)
    damaged.write_bytes(bytes(raw[: len(raw) // 2]))  # a copy that stopped half-way
    with pytest.raises(BackupError, match="BKTEST.msgs is damaged"):
        await restore(fast_settings, tmp_path / "bk", replace=True, progress=False, nc=nc)
    damaged.unlink()
    with pytest.raises(BackupError, match="BKTEST.msgs is missing from the backup"):
        await restore(fast_settings, tmp_path / "bk", replace=True, progress=False, nc=nc)
    (tmp_path / "bk" / "manifest.json").unlink()  # a backup that never finished
    with pytest.raises(BackupError, match="not found: not a backup, or one that did not"):
        await restore(fast_settings, tmp_path / "bk", replace=True, progress=False, nc=nc)
    assert (await js.stream_info("BKTEST")).state.messages == len(before[3])  # untouched
    await js.delete_stream("BKTEST")
    await js.delete_key_value("bktest")


@pytest.mark.skipif(os.environ.get("TAGUS_TEST_SLOW") != "1",
                    reason="long variant: TAGUS_TEST_SLOW=1 runs it")
async def test_backup_and_restore_throughput(nc, fast_settings, tmp_path):
    """Figures for the README: N messages of 300 bytes (TAGUS_BACKUP_BENCH_MESSAGES,
    200,000) and a KV bucket of 5,000 keys, backed up and restored (verify included)."""
    n = int(os.environ.get("TAGUS_BACKUP_BENCH_MESSAGES", "200000"))
    js = nc.jetstream()
    await js.add_stream(js_api.StreamConfig(name="BKBENCH", subjects=["bkbench.>"]))
    body = os.urandom(300)
    for start in range(0, n, 5000):
        for i in range(start, min(start + 5000, n)):
            await js.publish_async(f"bkbench.t{i % 50}", body,
                                   headers={"Nats-Msg-Id": f"m{i}"})
        await js.publish_async_completed()
    kv = await js.create_key_value(js_api.KeyValueConfig(bucket="bkbench", history=2))
    for i in range(5000):
        await kv.put(f"k{i}", body[:100])

    started = time.monotonic()
    report = await backup(fast_settings, tmp_path / "bk", progress=False, nc=nc)
    backup_s = time.monotonic() - started
    await js.delete_stream("BKBENCH")
    await js.delete_key_value("bkbench")
    started = time.monotonic()
    restored = await restore(fast_settings, tmp_path / "bk", progress=False, nc=nc)
    restore_s = time.monotonic() - started
    assert restored.ok, restored.lines()
    assert (await js.stream_info("BKBENCH")).state.messages == n
    assert (await (await js.key_value("bkbench")).get("k4999")).value == body[:100]
    mb = report.bytes / 1e6
    print(f"\n{report.messages:,} messages, {mb:.1f} MB: backup {backup_s:.1f} s "
          f"({report.messages / backup_s:,.0f} msg/s, {mb / backup_s:.1f} MB/s); restore "
          f"with verify {restore_s:.1f} s ({report.messages / restore_s:,.0f} msg/s)")
    await js.delete_stream("BKBENCH")
    await js.delete_key_value("bkbench")
