"""Raw intake: store an upload's bytes, then publish the immutable ``intake.received``.

Every intake adapter (CLI upload, drop folder, line-protocol and JSON endpoints, API
poller) ends here.  The bytes go to the ``tagus-intake`` object store under
``<tenant>/<sha256>`` (stored once per content); the event carries hash, size, source,
the mapping version and the receive time (``occurred_at``).

When are two uploads the same?  It depends on the door (``identity``):

- ``"content"`` (files, drop folder, pollers): the bytes carry the data's identity (their
  timestamps), so each distinct content is ingested once per tenant.  A second submit of
  the same bytes returns the first intake's event instead of publishing again
  (``tagus-intake-seen``; ``force`` overrides, for re-ingesting under a new mapping).
  The event id derives from tenant, hash and mapping version.
- ``"request"`` (HTTP pushes): every request is new data.  Line-protocol points without a
  timestamp take the receive time, as InfluxDB does, so the same body POSTed twice is two
  sets of readings.  The event id is random, unless the client sends an idempotency key:
  the id then derives from tenant and key, a retry with the same key and the same bytes
  returns the first intake, and the same key with other bytes is refused
  (``IdempotencyConflict``).  Keys are remembered per tenant in ``tagus-intake-seen``.

Errors: a NATS failure (server down, timeout, JetStream unavailable) is a
``TransientError``, raised at once when the connection is known to be down, so callers
answer 503 or retry later instead of waiting for a timeout; nothing else of NATS
escapes.  A mapping id the tenant never registered is a ``TenantConfigError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, ObjectNotFoundError
from opentelemetry import trace

from bus import metrics, tracing
from bus.publish import publish
from bus.storage import INTAKE_BUCKET, SEEN_BUCKET, get_mapping, mapping_version
from contracts.base import derive_id, new_id, utc_now, validate_tenant
from contracts.errors import ContractError, TenantConfigError, TransientError
from contracts.intake import RawIntakeReceived
from contracts.registry import decode, encode

log = structlog.get_logger("tagus.intake")
_CHUNK = 1024 * 1024
MAX_IDEMPOTENCY_KEY = 255

Identity = Literal["content", "request"]


class IdempotencyConflict(ContractError):
    """An idempotency key that was used before for other bytes."""


@dataclass(frozen=True)
class Submitted:
    event: RawIntakeReceived
    duplicate: bool  # the same upload was ingested before; nothing was published


def _digest(f: BinaryIO) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        size += len(chunk)
    f.seek(0)
    return h.hexdigest(), size


def check_idempotency_key(key: str) -> str:
    """The key if usable (1-255 printable ASCII characters); ContractError otherwise."""
    if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY or not (key.isascii() and key.isprintable()):
        raise ContractError(f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} printable "
                            f"ASCII characters; got {len(key)} characters")
    return key


@contextlib.asynccontextmanager
async def _nats(what: str) -> AsyncIterator[None]:
    """NATS failures inside become TransientError (callers retry or answer 503)."""
    try:
        yield
    except (nats.errors.Error, TimeoutError, ConnectionError) as e:
        raise TransientError(f"{what}: NATS {type(e).__name__} {e}".rstrip()) from None


class Intake:
    """Submits uploads for one deployment (a JetStream context).

    ``nc``: the connection behind ``js``; when given, a submit while it is down fails at
    once with ``TransientError`` instead of waiting for a NATS timeout.
    """

    def __init__(self, js: JetStreamContext, *, nc: Client | None = None) -> None:
        self.js = js
        self.nc = nc

    async def submit(self, *, tenant: str, source: str, content_type: str,
                     body: bytes | BinaryIO | Path, filename: str | None = None,
                     mapping_id: str | None = None, params: dict[str, str] | None = None,
                     force: bool = False, identity: Identity = "content",
                     idempotency_key: str | None = None) -> RawIntakeReceived:
        return (await self.submit_detailed(
            tenant=tenant, source=source, content_type=content_type, body=body,
            filename=filename, mapping_id=mapping_id, params=params, force=force,
            identity=identity, idempotency_key=idempotency_key)).event

    async def submit_detailed(self, *, tenant: str, source: str, content_type: str,
                              body: bytes | BinaryIO | Path, filename: str | None = None,
                              mapping_id: str | None = None,
                              params: dict[str, str] | None = None,
                              force: bool = False, identity: Identity = "content",
                              idempotency_key: str | None = None) -> Submitted:
        validate_tenant(tenant)
        if identity not in ("content", "request"):
            raise ValueError(f"identity must be 'content' or 'request', not {identity!r}")
        if idempotency_key is not None:
            if identity != "request":
                raise ValueError("an idempotency key names a request: use identity='request'")
            check_idempotency_key(idempotency_key)
        self._check_connected()
        version = None
        if mapping_id:
            async with _nats("reading the mapping"):
                text = await get_mapping(self.js, tenant, mapping_id)
            if text is None:
                raise TenantConfigError(
                    f"tenant {tenant!r} has no mapping {mapping_id!r}; register it with "
                    f"`tagus mapping put --tenant {tenant} --id {mapping_id} FILE.yaml`")
            version = mapping_version(text)
        upload = _Upload(tenant, source, content_type, filename, mapping_id, version,
                         params or {}, force, identity, idempotency_key)
        # an upload starts a trace (or continues its caller's): every event it leads to,
        # down to a released schedule, carries it in its headers
        with tracing.tracer().start_as_current_span(
                f"intake {source}", kind=trace.SpanKind.PRODUCER,
                attributes={"tagus.tenant": tenant, "tagus.source": source,
                            "tagus.filename": filename or ""}):
            if isinstance(body, Path):
                with open(body, "rb") as f:
                    return await self._submit(f, upload)
            f = io.BytesIO(body) if isinstance(body, bytes | bytearray) else body
            return await self._submit(f, upload)

    def _check_connected(self) -> None:
        if self.nc is not None and not self.nc.is_connected:
            state = "reconnecting" if self.nc.is_reconnecting else "not connected"
            raise TransientError(f"NATS is {state}; nothing was stored, retry later")

    async def _submit(self, f: BinaryIO, u: _Upload) -> Submitted:
        sha, size = await asyncio.to_thread(_digest, f)
        seen_key = u.seen_key(sha)
        async with _nats("storing the upload"):
            seen = await self.js.key_value(SEEN_BUCKET)
            if seen_key is not None:
                first = await _first_of(seen, seen_key)
                if first is not None:
                    if first.sha256 != sha:
                        raise IdempotencyConflict(
                            f"Idempotency-Key {u.idempotency_key!r} was used for intake "
                            f"{first.event_id} with other bytes (sha256 {first.sha256[:12]}...,"
                            f" now {sha[:12]}...); send a new key for new data")
                    log.info("already ingested", tenant=u.tenant, sha256=sha,
                             identity=u.identity, intake_id=first.event_id)
                    metrics.add("tagus.intake.uploads", 1, source=u.source,
                                outcome="duplicate")
                    return Submitted(first, duplicate=True)
            name = f"{u.tenant}/{sha}"
            await self._store(f, name, size)
            now = utc_now()
            event = RawIntakeReceived(
                event_id=u.event_id(sha), tenant=u.tenant, occurred_at=now, recorded_at=now,
                source=u.source, filename=u.filename, bucket=INTAKE_BUCKET, object_name=name,
                sha256=sha, size_bytes=size, content_type=u.content_type,
                mapping_id=u.mapping_id, mapping_version=u.version, params=dict(u.params))
            await publish(self.js, event)
            if seen_key is not None:
                await seen.put(seen_key, encode(event))
        metrics.add("tagus.intake.uploads", 1, source=u.source, outcome="received")
        metrics.add("tagus.intake.bytes", size, source=u.source)
        log.info("intake received", tenant=u.tenant, source=u.source, filename=u.filename,
                 sha256=sha, size_bytes=size, identity=u.identity, intake_id=event.event_id)
        return Submitted(event, duplicate=False)

    async def _store(self, f: BinaryIO, name: str, size: int) -> None:
        """Put the bytes under ``name`` unless they are there already (names are hashes:
        rewriting would only race with a reader of the same object)."""
        store = await self.js.object_store(INTAKE_BUCKET)
        try:
            info = await store.get_info(name)
            if info.size == size:
                return
        except ObjectNotFoundError:
            pass
        await store.put(name, f)


async def _first_of(seen, key: str) -> RawIntakeReceived | None:
    try:
        return decode("intake", (await seen.get(key)).value)
    except KeyNotFoundError:
        return None


@dataclass(frozen=True)
class _Upload:
    """What one submit is about, and the dedup rule of its door."""

    tenant: str
    source: str
    content_type: str
    filename: str | None
    mapping_id: str | None
    version: str | None
    params: dict[str, str]
    force: bool
    identity: Identity
    idempotency_key: str | None

    def seen_key(self, sha: str) -> str | None:
        """The ``tagus-intake-seen`` key that makes this upload a repeat, if any."""
        if self.identity == "content":
            return None if self.force else f"{self.tenant}.{sha}"
        if self.idempotency_key is None:
            return None
        digest = hashlib.sha256(self.idempotency_key.encode()).hexdigest()
        return f"{self.tenant}.request.{digest}"

    def event_id(self, sha: str) -> str:
        if self.identity == "content":
            return derive_id("intake", self.tenant, sha, self.mapping_id or "",
                             self.version or "", "force" if self.force else "")
        if self.idempotency_key is None:
            return new_id()
        return derive_id("intake", self.tenant, "request", self.idempotency_key)


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
