"""Raw intake: store an upload's bytes, then publish the immutable ``intake.received``.

Every intake adapter (CLI upload, drop folder, line-protocol and JSON endpoints, API
poller) ends here.  The bytes go to the ``tagus-intake`` object store under
``<tenant>/<sha256>``; the event carries hash, size, source and the mapping version.
Each distinct content is ingested once per tenant: a second submit of the same bytes
returns the first intake's event instead of publishing again (``force`` overrides, for
re-ingesting under a new mapping; replay is usually the better tool).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import structlog
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError

from bus.publish import publish
from bus.storage import INTAKE_BUCKET, SEEN_BUCKET, get_mapping, mapping_version
from contracts.base import derive_id, utc_now, validate_tenant
from contracts.errors import TenantConfigError
from contracts.intake import RawIntakeReceived
from contracts.registry import decode, encode

log = structlog.get_logger("tagus.intake")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Submitted:
    event: RawIntakeReceived
    duplicate: bool  # the same content was ingested before; nothing was published


def _digest(f: BinaryIO) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    f.seek(0)
    return h.hexdigest(), size


class Intake:
    """Submits uploads for one deployment (a JetStream context)."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def submit(self, *, tenant: str, source: str, content_type: str,
                     body: bytes | BinaryIO | Path, filename: str | None = None,
                     mapping_id: str | None = None, params: dict[str, str] | None = None,
                     force: bool = False) -> RawIntakeReceived:
        return (await self.submit_detailed(
            tenant=tenant, source=source, content_type=content_type, body=body,
            filename=filename, mapping_id=mapping_id, params=params, force=force)).event

    async def submit_detailed(self, *, tenant: str, source: str, content_type: str,
                              body: bytes | BinaryIO | Path, filename: str | None = None,
                              mapping_id: str | None = None,
                              params: dict[str, str] | None = None,
                              force: bool = False) -> Submitted:
        validate_tenant(tenant)
        version = None
        if mapping_id:
            text = await get_mapping(self.js, tenant, mapping_id)
            if text is None:
                raise TenantConfigError(
                    f"tenant {tenant!r} has no mapping {mapping_id!r}; register it with "
                    f"`tagus mapping put --tenant {tenant} --id {mapping_id} FILE.yaml`")
            version = mapping_version(text)
        if isinstance(body, Path):
            with open(body, "rb") as f:
                return await self._submit(f, tenant, source, content_type, filename,
                                          mapping_id, version, params or {}, force)
        f = io.BytesIO(body) if isinstance(body, bytes | bytearray) else body
        return await self._submit(f, tenant, source, content_type, filename, mapping_id,
                                  version, params or {}, force)

    async def _submit(self, f: BinaryIO, tenant, source, content_type, filename, mapping_id,
                      version, params, force) -> Submitted:
        sha, size = _digest(f)
        seen = await self.js.key_value(SEEN_BUCKET)
        seen_key = f"{tenant}.{sha}"
        if not force:
            try:
                first = decode("intake", (await seen.get(seen_key)).value)
                log.info("content already ingested", tenant=tenant, sha256=sha,
                         intake_id=first.event_id)
                return Submitted(first, duplicate=True)
            except KeyNotFoundError:
                pass
        store = await self.js.object_store(INTAKE_BUCKET)
        name = f"{tenant}/{sha}"
        await store.put(name, f)
        now = utc_now()
        event = RawIntakeReceived(
            event_id=derive_id("intake", tenant, sha, mapping_id or "", version or "",
                               "force" if force else ""),
            tenant=tenant, occurred_at=now, recorded_at=now, source=source, filename=filename,
            bucket=INTAKE_BUCKET, object_name=name, sha256=sha, size_bytes=size,
            content_type=content_type, mapping_id=mapping_id, mapping_version=version,
            params=dict(params))
        await publish(self.js, event)
        await seen.put(seen_key, encode(event))
        log.info("intake received", tenant=tenant, source=source, filename=filename,
                 sha256=sha, size_bytes=size, intake_id=event.event_id)
        return Submitted(event, duplicate=False)


CONTENT_TYPES = {
    ".csv": "text/csv", ".txt": "text/csv", ".tsv": "text/csv",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".lp": "text/x-influx-line-protocol", ".json": "application/json",
}


def content_type_for(path: Path) -> str:
    try:
        return CONTENT_TYPES[path.suffix.lower()]
    except KeyError:
        raise TenantConfigError(
            f"cannot tell the format of {path.name!r} from its extension; "
            f"known: {sorted(CONTENT_TYPES)}") from None
