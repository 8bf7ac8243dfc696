"""What each processor published for each input: replays do not grow the log.

JetStream drops a re-published event only within the stream's duplicate window (2 min).
A replay later, or a redelivery after a long backoff, would append the same events
again: harmless for the idempotent projections, but every stream would grow with every
replay.  So the runner records, per processor and input event, the ids of the outputs it
published (KV bucket ``tagus-outputs``, key ``<processor>.<tenant>.<input id>``), and on a later
delivery publishes only outputs that are not already there: the same ids in the same
order are skipped, anything new (a corrected mapping gives new ids) is published.
"""

from __future__ import annotations

import re

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

OUTPUTS_BUCKET = "tagus-outputs"
_UNSAFE = re.compile(r"[^A-Za-z0-9_=-]")


class OutputLog:
    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self._kv = None

    async def _bucket(self):
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(OUTPUTS_BUCKET)
            except (BucketNotFoundError, NotFoundError):
                return None  # a topology without the bucket: behave as before
        return self._kv

    @staticmethod
    def key(processor: str, tenant: str, input_id: str) -> str:
        return ".".join(_UNSAFE.sub("_", x) for x in (processor, tenant, input_id))

    async def get(self, processor: str, tenant: str, input_id: str) -> list[str] | None:
        kv = await self._bucket()
        if kv is None:
            return None
        try:
            entry = await kv.get(self.key(processor, tenant, input_id))
        except KeyNotFoundError:
            return None
        return msgspec.msgpack.decode(entry.value, type=list[str]) if entry.value else None

    async def put(self, processor: str, tenant: str, input_id: str, ids: list[str]) -> None:
        kv = await self._bucket()
        if kv is not None:
            await kv.put(self.key(processor, tenant, input_id), msgspec.msgpack.encode(ids))
