"""What the runner fetches for a handler before calling it (I/O stays in the runner).

A processor declares ``NEEDS = ("payload", "mapping")``; the runner loads each named
resource for the event and hands it over in ``ctx.resources``.  A resource that does
not exist is handed over as ``None``: the handler decides what that means.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from bus.storage import get_mapping
from contracts.base import Event
from contracts.errors import ContractError

SPOOL_MAX_BYTES = 16 * 1024 * 1024  # larger payloads spill to a temporary file


async def load_payload(js: JetStreamContext, event: Event):
    """The uploaded bytes as a binary file object (memory up to 16 MiB, then disk)."""
    bucket, name = getattr(event, "bucket", None), getattr(event, "object_name", None)
    if not bucket or not name:
        raise ContractError(f"{type(event).__name__} carries no object reference")
    store = await js.object_store(bucket)
    f = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_BYTES)
    try:
        await store.get(name, writeinto=f)
    except (ObjectNotFoundError, NotFoundError):
        f.close()
        return None
    f.seek(0)
    return f


async def load_mapping(js: JetStreamContext, event: Event) -> bytes | None:
    mapping_id = getattr(event, "mapping_id", None)
    if not mapping_id:
        return None
    return await get_mapping(js, event.tenant, mapping_id)


LOADERS: dict[str, Callable[[JetStreamContext, Event], Awaitable[Any]]] = {
    "payload": load_payload,
    "mapping": load_mapping,
}


async def load(js: JetStreamContext, names: tuple[str, ...], event: Event) -> dict[str, Any]:
    unknown = set(names) - set(LOADERS)
    if unknown:
        raise ContractError(f"unknown resources {sorted(unknown)}; known {sorted(LOADERS)}")
    return {n: await LOADERS[n](js, event) for n in names}


def close(resources: dict[str, Any]) -> None:
    for value in resources.values():
        if hasattr(value, "close"):
            value.close()
