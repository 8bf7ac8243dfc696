"""`tagus ingest FILE --tenant T --mapping M.yaml`: upload a file and report what it gave.

Registers (or confirms) the mapping, submits the file as raw intake, makes sure it gets
processed (in this process when no ``normalise`` runner is attached to the stream), and
prints the accounting: rows and values received, accepted, rejected and missing, with
the rejection reasons grouped and an example of each.
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from nats.aio.client import Client

from bus.subjects import tenant_subjects
from bus.storage import get_mapping, mapping_key, mapping_version
from bus.topology import ensure_topology
from contracts.errors import TenantConfigError
from contracts.intake import IntakeFailed, IntakeParsed, RawIntakeReceived
from contracts.registry import decode
from ops import wiring
from ops.service import components_running
from ops.settings import Settings
from producers.intake import Intake, content_type_for
from contracts.mapping import SourceMapping
from projections.intake_log import REJECTED_TABLE



@dataclass(frozen=True)
class IngestResult:
    intake: RawIntakeReceived
    duplicate: bool
    outcome: IntakeParsed | IntakeFailed


def mapping_id_for(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)[:128]


async def register_mapping(nc: Client, tenant: str, path: Path, mapping_id: str, *,
                           author: str = "cli", reason: str = "") -> str:
    """Record the mapping as the tenant's configuration (kind ``mapping-<id>``, a new
    version only if the text changed) and in the intake's mapping view; returns its
    version (the sha256 of its text)."""
    from ops.config_service import ConfigStore

    text = path.read_bytes()
    SourceMapping.from_yaml(text)  # refuse an invalid mapping before anything is stored
    mapping_key(tenant, mapping_id)
    js = nc.jetstream()
    await ConfigStore(js).put(tenant, f"mapping-{mapping_id}", text, author=author,
                              reason=reason or f"from {path.name}")
    return mapping_version(await get_mapping(js, tenant, mapping_id))


async def find_outcome(nc: Client, tenant: str, intake_id: str, timeout_s: float):
    """The intake.parsed / intake.failed event of ``intake_id`` (waits for it)."""
    js = nc.jetstream()
    deadline = time.monotonic() + timeout_s
    sub = await js.subscribe(tenant_subjects("intake", tenant), ordered_consumer=True)
    try:
        while time.monotonic() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if not msg.subject.endswith((".parsed", ".failed")):
                continue
            event = decode("intake", msg.data)
            if event.intake_id == intake_id:
                return event
    finally:
        await sub.unsubscribe()
    raise TimeoutError(f"no result for intake {intake_id} within {timeout_s:.0f}s: is "
                       "`tagus run normalise` running?")


async def _runner_attached(nc: Client, durable: str, stream: str) -> bool:
    info = await nc.jetstream().consumer_info(stream, durable)
    return bool(info.num_waiting)


async def ingest(settings: Settings, path: Path, tenant: str, mapping: Path | None, *,
                 mapping_id: str | None = None, force: bool = False,
                 process: str = "auto", timeout_s: float = 600.0,
                 progress: bool = True) -> IngestResult:
    if not path.is_file():
        raise TenantConfigError(f"{path} is not a file")
    topo = wiring.topology(settings)
    nc = await wiring.nats_connection(settings, name="tagus-ingest")
    try:
        js = nc.jetstream()
        await ensure_topology(js, topo)
        mid = None
        if mapping is not None:
            mid = mapping_id or mapping_id_for(mapping)
            await register_mapping(nc, tenant, mapping, mid)
        submitted = await Intake(js).submit_detailed(
            tenant=tenant, source="file", content_type=content_type_for(path), body=path,
            filename=path.name, mapping_id=mid, force=force)
        local = process == "yes" or (
            process == "auto" and not await _runner_attached(nc, "normalise", "INTAKE"))
        if local:
            async with _processing_locally(nc, settings, topo, progress):
                outcome = await find_outcome(nc, tenant, submitted.event.event_id, timeout_s)
        else:
            outcome = await find_outcome(nc, tenant, submitted.event.event_id, timeout_s)
    finally:
        await nc.drain()
    return IngestResult(submitted.event, submitted.duplicate, outcome)


@contextlib.asynccontextmanager
async def _processing_locally(nc: Client, settings: Settings, topo, progress: bool):
    """Run every component here while the caller waits; on exit, let them catch up."""

    def show(pos) -> None:
        if progress:
            sys.stderr.write(f"\r  processing: {sum(p.lag for p in pos):6d} events behind ")
            sys.stderr.flush()

    try:
        async with components_running(nc, settings, topo, on_progress=show, batch=20):
            yield
    finally:
        if progress:
            sys.stderr.write("\n")


async def rejection_examples(settings: Settings, tenant: str, intake_id: str,
                             limit: int = 40) -> list[tuple]:
    """Some rejected items of one upload, from the readings_rejected projection."""
    from ops.wiring import pg_connection, questdb

    questdb(settings).wait_for_wal(REJECTED_TABLE)
    conn = await pg_connection(settings)
    try:
        rows = await conn.fetch(
            f"select reason, sensor, row, raw, detail, count from {REJECTED_TABLE} "
            "where tenant = $1 and intake_id = $2 limit $3", tenant, intake_id, limit)
    finally:
        await conn.close()
    return [tuple(r) for r in rows]


def format_report(result: IngestResult, examples: list) -> str:
    e, o = result.intake, result.outcome
    lines = [f"intake {e.event_id}  {e.filename}  {e.size_bytes} bytes  sha256 {e.sha256[:12]}"
             + ("  (already ingested: showing the earlier result)" if result.duplicate else "")]
    if isinstance(o, IntakeFailed):
        lines.append(f"FAILED ({o.reason}): {o.detail}")
        return "\n".join(lines)
    lines += [
        f"rows   received {o.rows_received:>9}  accepted {o.rows_accepted:>9}  "
        f"rejected {o.rows_rejected:>9}",
        f"values received {o.values_received:>9}  accepted {o.values_accepted:>9}  "
        f"rejected {o.values_rejected:>9}  missing {o.values_missing:>9}",
        f"sensors {', '.join(o.sensors)}",
    ]
    if o.reasons:
        lines.append("not accepted, by reason:")
        shown: dict[str, int] = {}
        for reason, count in sorted(o.reasons.items(), key=lambda kv: -kv[1]):
            lines.append(f"  {reason:24} {count:>9}")
            for r_reason, sensor, row, raw, detail, cnt in examples:
                if r_reason == reason and shown.get(reason, 0) < 2:
                    shown[reason] = shown.get(reason, 0) + 1
                    lines.append(f"      e.g. row {row} {sensor or ''} {raw!r}"
                                 f"{f' x{cnt}' if cnt > 1 else ''}: {detail}")
    return "\n".join(lines)
