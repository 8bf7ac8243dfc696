"""`tagus backup DIR` / `tagus restore DIR`: every JetStream stream to a directory and back.

KV buckets (``KV_<bucket>``) and object stores (``OBJ_<bucket>``) are streams, so one
mechanism covers events, configuration views, task state, uploads and models.  QuestDB
is not backed up: it is a projection, rebuilt by replay (``tagus restore --replay`` or
``tagus replay --into <projection>``).

The directory::

    manifest.json            what was backed up: streams (kind, bucket, configuration,
                             first/last sequence, message count, sha256 of the content and
                             of the file), their durable consumers (configuration, position)
    streams/<stream>.msgs    "TAGUSBK1", then per message a 4-byte big-endian length and a
                             msgpack array [sequence, subject, time_ns, headers, data]

Messages are read with an ordered consumer (no state left on the server) up to each
stream's last sequence when its backup started: each stream is a point in time of its
own.  KV buckets are read first, event streams next, object stores last, so a restored
event never refers to an upload that is missing, and a processor's output record never
names an output that is missing (it may re-publish one, which dedup makes harmless).
For one point in time across all streams, stop the components (``tagus run``) first.

A restore keeps stream sequences: KV revisions, the CONFIG stream's versions, dead
letters' ``stream_seq`` and consumer positions mean the same afterwards.  Gaps (deleted
messages, superseded KV revisions) are filled with placeholder messages on a subject of
their own, added to the stream while it is restored and purged before the stream gets its
original configuration back.  ``Nats-Expected-*`` headers (publish preconditions, such as
the CONFIG stream's expected version) are not re-sent; the duplicate window is 100 ms
while restoring, so messages that share a ``Nats-Msg-Id`` (a replay after the window) are
all stored.  What cannot be kept: the time each message was stored (it becomes the
restore's; the original is in the backup file), multi-valued headers (nats-py reads the
last value).  Durable consumers come back with their configuration and at their
acknowledged position (a consumer reset: nats-server 2.14+); a message acknowledged out
of order beyond it is delivered once more (components are idempotent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import APIError
from tqdm import tqdm

from contracts.errors import TagusError, TransientError
from ops.settings import Settings

FORMAT = "tagus-backup/1"
MAGIC = b"TAGUSBK1"
MANIFEST = "manifest.json"
SERVER_OWNED = ("$MQTT_",)  # nats-server's own MQTT session streams: never ours to copy
_EXPECTED = "Nats-Expected-"
_RESTORE_DUP_WINDOW_S = 0.1  # the server's minimum
_READ_STALL_S = 30.0
_KIND_ORDER = {"kv": 0, "events": 1, "object": 2}


class BackupError(TagusError):
    """A backup directory or a restore target is not what the operation needs."""


class _Record(msgspec.Struct, array_like=True):
    seq: int
    subject: str
    time_ns: int
    headers: dict[str, str] | None
    data: bytes


_encode = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(_Record).decode


def stream_kind(name: str) -> tuple[str, str | None]:
    """("kv", bucket) | ("object", bucket) | ("events", None) for a stream name."""
    if name.startswith("KV_"):
        return "kv", name[3:]
    if name.startswith("OBJ_"):
        return "object", name[4:]
    return "events", None


def _kept_headers(headers: dict[str, str] | None) -> dict[str, str] | None:
    """The headers a restore re-sends: all but the publish preconditions."""
    if not headers:
        return None
    kept = {k: v for k, v in headers.items() if not k.startswith(_EXPECTED)}
    return kept or None


class _Digest:
    """sha256 over (sequence, subject, kept headers, data) of each message, in order."""

    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def add(self, seq: int, subject: str, headers: dict[str, str] | None, data: bytes) -> None:
        kept = sorted((_kept_headers(headers) or {}).items())
        self._h.update(_encode([seq, subject, kept, data]))

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass
class StreamResult:
    """One stream's figures: ``bytes`` = subjects, headers and payloads."""

    name: str
    kind: str
    messages: int = 0
    bytes: int = 0
    consumers: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def line(self) -> str:
        bad = f"  PROBLEMS: {'; '.join(self.problems)}" if self.problems else ""
        return (f"  {self.name:24} {self.kind:7} {self.messages:>10,} msgs "
                f"{self.bytes / 1e6:>10.2f} MB {self.consumers:>4} consumers "
                f"{self.seconds:>7.1f} s{bad}")


@dataclass
class Report:
    action: str
    directory: Path
    streams: list[StreamResult]
    seconds: float
    notes: list[str] = field(default_factory=list)

    @property
    def messages(self) -> int:
        return sum(s.messages for s in self.streams)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.streams)

    @property
    def ok(self) -> bool:
        return not any(s.problems for s in self.streams)

    def lines(self) -> list[str]:
        return [f"{self.action} {self.directory}: {len(self.streams)} streams, "
                f"{self.messages:,} messages, {self.bytes / 1e6:.2f} MB in {self.seconds:.1f} s",
                *(s.line() for s in self.streams), *self.notes]


# ---------------------------------------------------------------- reading a stream


async def _read(js: JetStreamContext, stream: str, last_seq: int,
                on_message: Callable[[int, str, int, dict | None, bytes], None]) -> None:
    """Every message of ``stream`` up to ``last_seq``, in order, through an ordered
    consumer (ephemeral, flow-controlled, recreated by nats-py on a gap) whose callback
    calls ``on_message`` (a callback reads 2-4x faster than ``next_msg`` here)."""
    done = asyncio.Event()
    seen, failure = 0, None

    async def deliver(msg) -> None:
        nonlocal seen, failure
        if done.is_set():
            return
        try:
            meta = msg.metadata
            seq = meta.sequence.stream
            if seq <= last_seq:
                on_message(seq, msg.subject, _ns(meta.timestamp), msg.headers, msg.data or b"")
                seen += 1
            if seq >= last_seq or not meta.num_pending:
                done.set()
        except Exception as e:  # noqa: BLE001 - handed to the caller below
            failure = e
            done.set()

    sub = await js.subscribe(">", stream=stream, ordered_consumer=True, cb=deliver)
    try:
        before = -1
        while not done.is_set():
            if seen == before:
                raise TransientError(f"reading stream {stream}: nothing delivered for "
                                     f"{_READ_STALL_S:.0f} s before sequence {last_seq}; "
                                     "is the server overloaded? retry")
            before = seen
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), _READ_STALL_S)
        if failure is not None:
            raise failure
    finally:
        await sub.unsubscribe()


async def _connect(settings: Settings, name: str) -> Client:
    """The bootstrap's connection (imported here: ``ops.wiring`` loads every component,
    seconds a backup or restore does not need)."""
    from ops import wiring

    return await wiring.nats_connection(settings, name,
                                        first_connect_timeout_s=settings.cli_timeout_s)


_BAR_EVERY = 500  # messages between progress-bar updates (one per message slows a backup)


def _advance(bar: tqdm, result: StreamResult) -> None:
    bar.update(result.messages - bar.n)
    bar.set_postfix_str(f"{result.bytes / 1e6:.1f} MB", refresh=False)


def _ns(ts) -> int:
    if isinstance(ts, datetime):
        return int(ts.timestamp() * 1e9)
    return int(ts or 0)


async def _all_streams(js: JetStreamContext) -> list[js_api.StreamInfo]:
    out: list[js_api.StreamInfo] = []
    while True:
        page = await js.streams_info(offset=len(out))
        out += page
        if not page:
            return [s for s in out if not s.config.name.startswith(SERVER_OWNED)]


async def _durables(js: JetStreamContext, stream: str) -> tuple[list[dict], list[str]]:
    """(kept, skipped): durable consumers with their positions; ephemeral ones and those
    the server removes when idle (``inactive_threshold``: replays, watchers) are skipped."""
    kept, skipped, offset = [], [], 0
    while True:
        page = await js.consumers_info(stream, offset=offset)
        if not page:
            return kept, skipped
        offset += len(page)
        for c in page:
            if not c.config.durable_name or c.config.inactive_threshold:
                skipped.append(c.name)
                continue
            kept.append({
                "name": c.name, "config": c.config.as_dict(),
                "delivered_stream_seq": c.delivered.stream_seq or 0,
                "ack_floor_stream_seq": c.ack_floor.stream_seq or 0,
                "num_pending": c.num_pending or 0, "num_ack_pending": c.num_ack_pending or 0,
            })


# ---------------------------------------------------------------- backup


async def backup(settings: Settings, directory: Path, *, progress: bool = True,
                 nc: Client | None = None) -> Report:
    """Write every stream (and its durable consumers) to ``directory``, which must not
    exist or be empty; ``manifest.json`` is written last, so its presence marks a
    complete backup."""
    directory = Path(directory)
    if directory.exists() and any(directory.iterdir()):
        raise BackupError(f"{directory} is not empty: back up into a new directory")
    (directory / "streams").mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    own = nc is None
    nc = nc or await _connect(settings, "tagus-backup")
    try:
        js = nc.jetstream()
        infos = sorted(await _all_streams(js),
                       key=lambda s: (_KIND_ORDER[stream_kind(s.config.name)[0]], s.config.name))
        entries, results = [], []
        for info in infos:
            entry, result = await _backup_stream(js, info.config.name, directory, progress)
            entries.append(entry)
            results.append(result)
        seconds = time.monotonic() - started
        manifest = {
            "format": FORMAT,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "nats_server": nc.connected_server_version and str(nc.connected_server_version),
            "streams": entries,
            "totals": {"streams": len(entries), "messages": sum(r.messages for r in results),
                       "bytes": sum(r.bytes for r in results),
                       "file_bytes": sum(e["file_bytes"] for e in entries)},
            "seconds": round(seconds, 3),
        }
        tmp = directory / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
        tmp.rename(directory / MANIFEST)
        return Report("backup", directory, results, seconds,
                      [f"  manifest {directory / MANIFEST}; files "
                       f"{manifest['totals']['file_bytes'] / 1e6:.2f} MB"])
    finally:
        if own:
            await nc.drain()


async def _backup_stream(js: JetStreamContext, name: str, directory: Path,
                         progress: bool) -> tuple[dict, StreamResult]:
    started = time.monotonic()
    info = await js.stream_info(name)  # the point in time of this stream
    consumers, skipped = await _durables(js, name)
    kind, bucket = stream_kind(name)
    result = StreamResult(name, kind, consumers=len(consumers))
    digest, file_hash = _Digest(), hashlib.sha256()
    rel = f"streams/{name}.msgs"
    first = None
    bar = tqdm(total=info.state.messages, unit="msg", desc=f"backup {name}", leave=False,
               disable=not progress)
    with open(directory / rel, "wb") as f:
        def write(chunk: bytes) -> None:
            f.write(chunk)
            file_hash.update(chunk)

        def on_message(seq, subject, time_ns, headers, data) -> None:
            nonlocal first
            first = first or seq
            raw = _encode(_Record(seq, subject, time_ns, headers, data))
            write(len(raw).to_bytes(4, "big"))
            write(raw)
            digest.add(seq, subject, headers, data)
            result.messages += 1
            result.bytes += len(subject) + len(data) + sum(
                len(k) + len(v) for k, v in (headers or {}).items())
            if not result.messages % _BAR_EVERY:
                _advance(bar, result)

        write(MAGIC)
        if info.state.messages:
            await _read(js, name, info.state.last_seq, on_message)
    _advance(bar, result)
    bar.close()
    result.seconds = time.monotonic() - started
    last_seq = info.state.last_seq
    entry = {
        "name": name, "kind": kind, "bucket": bucket, "config": info.config.as_dict(),
        "first_seq": first or info.state.first_seq, "last_seq": last_seq,
        "messages": result.messages, "bytes": result.bytes,
        "content_sha256": digest.hexdigest(),
        "file": rel, "file_bytes": (directory / rel).stat().st_size,
        "file_sha256": file_hash.hexdigest(),
        "consumers": consumers, "skipped_consumers": skipped,
    }
    return entry, result


# ---------------------------------------------------------------- restore


def read_manifest(directory: Path, *, check_files: bool = True) -> dict:
    """The manifest, after checking each file's size and sha256 (a damaged or partial
    backup is refused before anything is written)."""
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackupError(f"{path} not found: not a backup, or one that did not finish")
    except ValueError as e:
        raise BackupError(f"{path} is not valid JSON ({e})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    for entry in manifest["streams"] if check_files else ():
        file = Path(directory) / entry["file"]
        h = hashlib.sha256()
        try:
            with open(file, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except FileNotFoundError:
            raise BackupError(f"{file} is missing from the backup") from None
        if h.hexdigest() != entry["file_sha256"]:
            raise BackupError(f"{file} is damaged: sha256 {h.hexdigest()[:16]}..., the "
                              f"manifest says {entry['file_sha256'][:16]}...")
    return manifest


def records(path: Path) -> Iterator[_Record]:
    """The messages of one backup file, in order."""
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise BackupError(f"{path} is not a Tagus backup file (no {MAGIC!r} header)")
        while head := f.read(4):
            size = int.from_bytes(head, "big")
            raw = f.read(size)
            if len(head) < 4 or len(raw) < size:
                raise BackupError(f"{path} ends in the middle of a message")
            yield _decode_record(raw)


async def restore(settings: Settings, directory: Path, *, replace: bool = False,
                  verify: bool = True, progress: bool = True,
                  nc: Client | None = None) -> Report:
    """Recreate every stream of the backup in ``directory`` (messages at their original
    sequences, the stream's configuration, its durable consumers at their positions).

    Refuses a target that holds any stream with messages, unless ``replace``: then the
    target's streams of the same names are deleted first (their contents are lost).
    Streams of the target that exist but never held a message (``tagus topology`` on a
    fresh stack) are replaced without asking.  Streams get ``settings.stream_replicas``
    replicas.  ``verify`` reads everything back and compares it with the manifest."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    started = time.monotonic()
    own = nc is None
    nc = nc or await _connect(settings, "tagus-restore")
    try:
        js = nc.jetstream()
        existing = {s.config.name: s for s in await _all_streams(js)}
        occupied = {n: s for n, s in existing.items() if s.state.last_seq}
        if occupied and not replace:
            shown = ", ".join(f"{n} ({s.state.messages} messages)"
                              for n, s in sorted(occupied.items())[:5])
            raise BackupError(f"the target is not empty: {shown}"
                              f"{' ...' if len(occupied) > 5 else ''}; restore into an empty "
                              "stack, or pass --replace to delete these streams first")
        wanted = {e["name"] for e in manifest["streams"]}
        for name in sorted(wanted & set(existing)):
            await js.delete_stream(name)
        results = []
        for entry in manifest["streams"]:
            results.append(await _restore_stream(js, entry, directory, settings.stream_replicas,
                                                 progress))
        notes = [f"  kept the target's own streams: {', '.join(sorted(set(occupied) - wanted))}"
                 ] if set(occupied) - wanted else []
        if verify:
            for entry, result in zip(manifest["streams"], results, strict=True):
                result.problems += await _verify_stream(js, entry, progress)
            notes.append("  verified: every stream's sequences, messages and content sha256 "
                         "match the manifest; every durable consumer exists"
                         if not any(r.problems for r in results) else "  VERIFY FAILED")
        return Report("restore", directory, results, time.monotonic() - started, notes)
    finally:
        if own:
            await nc.drain()


def _restoring_config(entry: dict, replicas: int) -> tuple[js_api.StreamConfig,
                                                           js_api.StreamConfig, str]:
    """(config while restoring, final config, placeholder subject)."""
    final = js_api.StreamConfig.from_response(copy.deepcopy(entry["config"]))
    if final.mirror or final.sources:
        raise BackupError(f"stream {final.name} mirrors or sources other streams: restore "
                          "its origin instead (not supported here)")
    final.num_replicas = replicas
    final.first_seq = None
    final.sealed = False
    if final.metadata:  # the server's own keys (_nats.*) are set by the server
        final.metadata = {k: v for k, v in final.metadata.items()
                          if not k.startswith("_nats.")} or None
    placeholder = f"_tagus_restore.{final.name}"
    during = copy.deepcopy(final)
    during.subjects = list(final.subjects or [final.name]) + [placeholder]
    during.duplicate_window = _RESTORE_DUP_WINDOW_S
    during.deny_purge = False
    during.max_msgs = during.max_bytes = -1
    during.max_age = 0
    return during, final, placeholder


async def _restore_stream(js: JetStreamContext, entry: dict, directory: Path, replicas: int,
                          progress: bool) -> StreamResult:
    started = time.monotonic()
    name = entry["name"]
    result = StreamResult(name, entry["kind"], consumers=len(entry["consumers"]))
    during, final, placeholder = _restoring_config(entry, replicas)
    await js.add_stream(during)
    first, last = entry["first_seq"], entry["last_seq"]
    if first > 1:
        await js.purge_stream(name, seq=first)  # an empty stream then starts at ``first``
    publisher = _Publisher(js, name, max(first, 1))  # 0: a stream never written to
    bar = tqdm(total=entry["messages"], unit="msg", desc=f"restore {name}", leave=False,
               disable=not progress)
    try:
        for rec in records(directory / entry["file"]):
            while publisher.next_seq < rec.seq:
                await publisher.send(placeholder, b"", None)
            await publisher.send(rec.subject, rec.data, _kept_headers(rec.headers))
            result.messages += 1
            result.bytes += len(rec.subject) + len(rec.data) + sum(
                len(k) + len(v) for k, v in (rec.headers or {}).items())
            if not result.messages % _BAR_EVERY:
                _advance(bar, result)
        _advance(bar, result)
        while publisher.next_seq <= last:
            await publisher.send(placeholder, b"", None)
        await publisher.flush()
    finally:
        bar.close()
    await js.purge_stream(name, subject=placeholder)
    await js.update_stream(final)
    for consumer in entry["consumers"]:
        await _restore_consumer(js, name, consumer)
    result.seconds = time.monotonic() - started
    return result


async def _restore_consumer(js: JetStreamContext, stream: str, consumer: dict) -> None:
    """The consumer with its configuration as it was, then moved to just after its
    acknowledged position (a consumer reset, nats-server 2.14+): its configuration stays
    the one ``tagus topology`` knows, so later topology updates apply to it."""
    cfg = js_api.ConsumerConfig.from_response(copy.deepcopy(consumer["config"]))
    if cfg.metadata:
        cfg.metadata = {k: v for k, v in cfg.metadata.items()
                        if not k.startswith("_nats.")} or None
    await js.add_consumer(stream, cfg)
    floor = consumer["ack_floor_stream_seq"]
    if not floor:
        return
    try:
        await js.reset_consumer(stream, consumer["name"], seq=floor + 1)
    except (APIError, TimeoutError) as e:
        raise BackupError(f"cannot move consumer {stream}/{consumer['name']} to sequence "
                          f"{floor + 1} ({e}): restoring consumer positions needs "
                          "nats-server 2.14 or later") from None


class _Publisher:
    """Publishes in order without waiting for each ack, checking that message N of the
    backup lands at sequence N.  A message whose ``Nats-Msg-Id`` was sent less than
    twice the (100 ms) duplicate window ago waits, so the server does not drop it."""

    def __init__(self, js: JetStreamContext, stream: str, first_seq: int) -> None:
        self.js, self.stream, self.next_seq = js, stream, first_seq
        self._pending: collections.deque = collections.deque()
        self._recent: dict[str, float] = {}

    async def send(self, subject: str, data: bytes, headers: dict | None) -> None:
        msg_id = headers.get("Nats-Msg-Id") if headers else None
        now = time.monotonic()
        if msg_id is not None:
            while self._recent and next(iter(self._recent.values())) < now - 1.0:
                self._recent.pop(next(iter(self._recent)))
            sent = self._recent.pop(msg_id, None)
            if sent is not None and now - sent < 2 * _RESTORE_DUP_WINDOW_S:
                await self.flush()
                await asyncio.sleep(2 * _RESTORE_DUP_WINDOW_S - (time.monotonic() - sent))
            self._recent[msg_id] = time.monotonic()
        fut = await self.js.publish_async(subject, data, headers=headers)
        self._pending.append((self.next_seq, fut))
        self.next_seq += 1
        while self._pending and self._pending[0][1].done():
            self._check(*self._pending.popleft())

    async def flush(self) -> None:
        while self._pending:
            seq, fut = self._pending.popleft()
            try:
                await asyncio.wait_for(asyncio.shield(fut), 30)
            except TimeoutError:
                raise TransientError(f"restoring {self.stream}: no acknowledgement for "
                                     f"sequence {seq} within 30 s; delete the stream and "
                                     "restore again") from None
            self._check(seq, fut)

    def _check(self, want: int, fut) -> None:
        ack = fut.result()
        if ack.duplicate or ack.seq != want:
            raise BackupError(
                f"restoring {self.stream}: a message meant for sequence {want} was stored "
                f"{'as a duplicate' if ack.duplicate else f'at {ack.seq}'}; was something "
                "else publishing into the stack? delete the stream and restore again")


async def _verify_stream(js: JetStreamContext, entry: dict, progress: bool) -> list[str]:
    name = entry["name"]
    problems = []
    info = await js.stream_info(name)
    if info.state.last_seq != entry["last_seq"]:
        problems.append(f"last sequence {info.state.last_seq}, backup {entry['last_seq']}")
    digest, count, first = _Digest(), 0, None

    bar = tqdm(total=info.state.messages, unit="msg", desc=f"verify {name}", leave=False,
               disable=not progress)

    def on_message(seq, subject, time_ns, headers, data) -> None:
        nonlocal count, first
        first = first or seq
        count += 1
        digest.add(seq, subject, headers, data)
        if not count % _BAR_EVERY:
            bar.update(count - bar.n)

    try:
        if info.state.messages:
            await _read(js, name, info.state.last_seq, on_message)
    finally:
        bar.close()
    if count != entry["messages"]:
        problems.append(f"{count} messages, backup {entry['messages']}")
    if count and first != entry["first_seq"]:
        problems.append(f"first sequence {first}, backup {entry['first_seq']}")
    if digest.hexdigest() != entry["content_sha256"]:
        problems.append("content sha256 differs from the backup's")
    have = {c.name for c in await js.consumers_info(name)}
    missing = [c["name"] for c in entry["consumers"] if c["name"] not in have]
    if missing:
        problems.append(f"consumers missing: {', '.join(missing)}")
    return problems


# ---------------------------------------------------------------- rebuilding QuestDB


def questdb_projections(settings: Settings) -> list[str]:
    """The components whose state lives in QuestDB (not in JetStream): what a restore
    leaves to rebuild by replay.  KV views (``write(events, js)``) are restored."""
    import inspect

    from bus.components import Projection
    from ops import wiring

    return sorted(n for n, c in wiring.components(settings).items()
                  if isinstance(c, Projection) and not inspect.iscoroutinefunction(c.write))


async def rebuild_questdb(settings: Settings, *, progress: bool = True,
                          nc: Client | None = None, parallel: int = 4) -> list[str]:
    """Replay every stream into every QuestDB projection, ``parallel`` projections at a
    time (idempotent: rows already there are upserted with the same values); returns one
    summary line per projection.  A projection that dead-letters a message fails it."""
    from ops.replay import ReplayRequest, replay

    gate = asyncio.Semaphore(parallel)

    async def one(name: str):
        async with gate:
            return name, await replay(settings, ReplayRequest(into=name), progress=progress,
                                      nc=nc)

    lines, failed = [], []
    for name, summary in await asyncio.gather(*map(one, questdb_projections(settings))):
        s = summary.stats
        lines.append(f"  replayed {summary.matched:>8,} messages of {summary.stream} into "
                     f"{name} ({s.dead_lettered} dead-lettered) in {summary.elapsed_s:.1f} s")
        if s.dead_lettered:
            failed.append(f"{name} ({s.dead_lettered})")
    if failed:
        raise BackupError(f"replay dead-lettered messages in {', '.join(failed)}: "
                          "`tagus deadletters list` says why")
    return lines
