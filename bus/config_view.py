"""The current configuration view: KV ``tagus-config``, ``<tenant>.<kind>`` -> the latest
``config.changed``.  Written by the config write path and the ``config-view`` projection;
read by the token view, the API and the loaders of processors."""

from __future__ import annotations

from nats.js.errors import KeyNotFoundError

from bus import config_log
from bus.storage import CONFIG_BUCKET, MAPPINGS_BUCKET, mapping_key
from contracts.config import MAPPING_PREFIX, ConfigChanged
from contracts.registry import decode, encode


async def update_view(js, event: ConfigChanged, *, text: str | None = None) -> bool:
    """Put ``event`` into the current view if it is newer than what the view holds
    (idempotent: a replay, or the projection after the writer, changes nothing).  A
    mapping's text also goes to the intake's mapping view (``tagus-mappings``), first:
    the view's record is the mark that both are done, so a writer that dies between the
    two puts leaves the record behind and its retry does both (the other order left the
    mapping view empty for good, seen when a cluster's leader was killed)."""
    kv = await js.key_value(CONFIG_BUCKET)
    key = f"{event.tenant}.{event.kind}"
    try:
        held = decode("config", (await kv.get(key)).value)
        if held.version >= event.version:
            return False
    except KeyNotFoundError:
        pass
    if event.kind.startswith(MAPPING_PREFIX):
        body = text if text is not None else await config_log.text_of(js, event)
        mappings = await js.key_value(MAPPINGS_BUCKET)
        await mappings.put(mapping_key(event.tenant, event.kind[len(MAPPING_PREFIX):]),
                           body.encode())
    await kv.put(key, encode(event))
    return True


async def current(js, tenant: str, kind: str) -> ConfigChanged | None:
    """What the view holds for ``tenant``/``kind`` (None if nothing)."""
    kv = await js.key_value(CONFIG_BUCKET)
    try:
        return decode("config", (await kv.get(f"{tenant}.{kind}")).value)
    except KeyNotFoundError:
        return None
