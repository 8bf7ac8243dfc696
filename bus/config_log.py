"""The CONFIG stream as an event store: read a kind's versions, append conditionally.

One subject per tenant and kind (``tagus.config.<tenant>.<kind>``).  ``append`` sets
``Nats-Expected-Last-Subject-Sequence``: the write succeeds only if nobody wrote the same
kind since the version it was made against, so two writers racing on one version cannot
both win (JetStream refuses the second with "wrong last sequence").  Large text bodies
(network files) go to the object store ``tagus-config-files`` by content hash.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.errors import APIError, NotFoundError, ObjectNotFoundError

from bus.publish import headers_for
from bus.storage import CONFIG_FILES_BUCKET as FILES_BUCKET
from bus.subjects import ROOT, stream_name
from contracts.config import ConfigChanged, check_kind
from contracts.errors import NotFoundError as TagusNotFound
from contracts.errors import TagusError
from contracts.registry import decode, encode

STREAM = stream_name("config")
INLINE_TEXT_MAX = 256 * 1024  # text bodies larger than this go to the object store
_WRONG_LAST_SEQUENCE = 10071


class VersionConflict(TagusError):
    """Somebody changed the same kind since the version a write was made against."""

    def __init__(self, tenant: str, kind: str, expected: int, current: int) -> None:
        super().__init__(f"{tenant}/{kind} is at version {current}, the change was made "
                         f"against version {expected}: re-read it, reapply, try again")
        self.tenant, self.kind, self.expected, self.current = tenant, kind, expected, current


@dataclass(frozen=True)
class Stored:
    event: ConfigChanged
    seq: int  # the stream sequence, what the next conditional write expects


def subject(tenant: str, kind: str) -> str:
    return f"{ROOT}.config.{tenant}.{check_kind(kind)}"


async def last(js: JetStreamContext, tenant: str, kind: str) -> Stored | None:
    """The current version of ``kind`` (None if it was never written)."""
    try:
        raw = await js.get_last_msg(STREAM, subject(tenant, kind))
    except NotFoundError:
        return None
    return Stored(decode("config", raw.data), raw.seq)


async def history(js: JetStreamContext, tenant: str, kind: str) -> list[Stored]:
    """Every version of ``kind``, oldest first."""
    out, seq = [], 1
    subj = subject(tenant, kind)
    while True:
        try:
            raw = await js.get_msg(STREAM, seq=seq, subject=subj, next=True)
        except NotFoundError:
            return out
        out.append(Stored(decode("config", raw.data), raw.seq))
        seq = raw.seq + 1


async def version(js: JetStreamContext, tenant: str, kind: str, number: int) -> Stored:
    for stored in await history(js, tenant, kind):
        if stored.event.version == number:
            return stored
    raise TagusNotFound(f"{tenant}/{kind} has no version {number}")


async def kinds(js: JetStreamContext, tenant: str) -> list[str]:
    """The kinds a tenant has configured."""
    info = await js.stream_info(STREAM, subjects_filter=f"{ROOT}.config.{tenant}.*")
    return sorted(s.rsplit(".", 1)[1] for s in (info.state.subjects or {}))


async def tenants(js: JetStreamContext) -> list[str]:
    info = await js.stream_info(STREAM, subjects_filter=f"{ROOT}.config.*.tenant")
    return sorted(s.split(".")[2] for s in (info.state.subjects or {}))


async def append(js: JetStreamContext, event: ConfigChanged, expected_seq: int) -> int:
    """Publish ``event`` if its subject's last sequence is still ``expected_seq`` (0: the
    kind was never written); returns the new sequence.  VersionConflict otherwise."""
    headers = headers_for(event)
    headers["Nats-Expected-Last-Subject-Sequence"] = str(expected_seq)
    try:
        ack = await js.publish(subject(event.tenant, event.kind), encode(event),
                               headers=headers, timeout=10)
    except APIError as e:
        if getattr(e, "err_code", None) == _WRONG_LAST_SEQUENCE:
            current = await last(js, event.tenant, event.kind)
            raise VersionConflict(event.tenant, event.kind, event.version - 1,
                                  current.event.version if current else 0) from None
        raise
    return ack.seq


async def put_file(js: JetStreamContext, tenant: str, sha256: str, body: bytes) -> str:
    store = await js.object_store(FILES_BUCKET)
    name = f"{tenant}/{sha256}"
    try:
        await store.get_info(name)
    except (ObjectNotFoundError, NotFoundError):
        await store.put(name, body)
    return name


async def text_of(js: JetStreamContext, event: ConfigChanged) -> str | None:
    """The text body of a change (inline or from the object store)."""
    if event.text is not None or event.object_name is None:
        return event.text
    store = await js.object_store(FILES_BUCKET)
    try:
        result = await store.get(event.object_name)
    except (ObjectNotFoundError, NotFoundError):
        raise TagusNotFound(f"object {event.object_name} of {event.tenant}/{event.kind} "
                            f"v{event.version} is missing from {FILES_BUCKET}") from None
    return result.data.decode("utf-8")
