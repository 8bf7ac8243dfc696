"""The resources handlers may ask for (``NEEDS``), loaded by the runner: the I/O edge.

Registered by the bootstrap (``ops/wiring.py``) and handed to every runner.
"""

from __future__ import annotations

import tempfile

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError, ObjectNotFoundError

from bus.resources import Loaders
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
    """The tenant's current text of the mapping the upload names (None if none)."""
    mapping_id = getattr(event, "mapping_id", None)
    if not mapping_id:
        return None
    return await get_mapping(js, event.tenant, mapping_id)


def loaders() -> Loaders:
    return {"payload": load_payload, "mapping": load_mapping}
