"""The resources handlers may ask for (``NEEDS``), loaded by the runner: the I/O edge.

Registered by the bootstrap (``ops/wiring.py``) and handed to every runner.
"""

from __future__ import annotations

import tempfile
from datetime import datetime

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


def loaders(settings=None) -> Loaders:
    """Every loader of this deployment (those that read QuestDB need ``settings``)."""
    config = ConfigLoader()
    out = {"payload": load_payload, "mapping": load_mapping, "config": config}
    if settings is not None:
        out["readings"] = ReadingsForKpis(settings, config)
    return out


# ---------------------------------------------------------------- configuration


class ConfigLoader:
    """The tenant's configuration as it was when the input event was recorded.

    A handler that ``NEEDS = ("config",)`` gets ``{kind: document}`` (pydantic documents;
    the network as its .inp text) plus ``"versions": {kind: version}``.  Which version:
    the one the input names in ``config_versions`` (a task request pins them), else the
    latest recorded at or before the input's ``recorded_at``: a forecast replayed after a
    tariff change still sees the tariff that was in force.  Versions are read from the
    CONFIG stream (a kind's history is short) and cached per process.
    """

    KINDS = ("tenant", "network", "assets", "tariff", "rules", "chains")

    def __init__(self) -> None:
        self._history: dict[tuple[str, str], list] = {}
        self._texts: dict[str, str] = {}

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        from bus import config_log
        from contracts.config import parse_document

        pinned = getattr(event, "config_versions", None) or {}
        out: dict = {"versions": {}}
        for kind in self.KINDS:
            chosen = await self._choose(js, event, kind, pinned.get(kind))
            if chosen is None:
                out[kind] = None
                continue
            out["versions"][kind] = chosen.version
            if chosen.document is not None:
                out[kind] = parse_document(kind, chosen.document)
            else:
                if chosen.sha256 not in self._texts:
                    self._texts[chosen.sha256] = await config_log.text_of(js, chosen)
                out[kind] = self._texts[chosen.sha256]
        return out

    async def _choose(self, js, event: Event, kind: str, pinned: int | None):
        from bus import config_log

        key = (event.tenant, kind)
        history = self._history.get(key)
        latest = await config_log.last(js, event.tenant, kind)
        if latest is None:
            return None
        if not history or history[-1].version < latest.event.version:
            history = [s.event for s in await config_log.history(js, event.tenant, kind)]
            self._history[key] = history
        if pinned is not None:
            for e in history:
                if e.version == pinned:
                    return e
            raise ContractError(f"{event.tenant}/{kind} has no version {pinned} (pinned by "
                                f"{type(event).__name__} {event.event_id})")
        in_force = [e for e in history if e.recorded_at <= event.recorded_at]
        return in_force[-1] if in_force else None


class ReadingsForKpis:
    """``{sensor: timestamps_ns}`` of the tenant's bound sensors over the task's day and the
    week before it (the nominal interval), from QuestDB with bound parameters."""

    def __init__(self, settings, config: ConfigLoader) -> None:
        self.settings, self.config = settings, config

    async def __call__(self, js: JetStreamContext, event: Event) -> dict:
        from datetime import timedelta

        from ops.wiring import pg_connection
        from processors.kpi.completeness import day_bounds_utc
        from processors.kpi.handler import LOOKBACK_DAYS, target_day

        cfg = await self.config(js, event)
        if cfg.get("assets") is None:
            return {}
        tz = cfg["tenant"].timezone if cfg.get("tenant") else "UTC"
        start, end = day_bounds_utc(target_day(event, tz), tz)
        start -= timedelta(days=LOOKBACK_DAYS)
        sensors = sorted({b.sensor for b in cfg["assets"].bindings})
        conn = await pg_connection(self.settings)
        try:
            rows = await conn.fetch(
                "SELECT sensor, ts FROM readings WHERE tenant = $1 AND ts >= $2 AND ts < $3",
                event.tenant, start.replace(tzinfo=None), end.replace(tzinfo=None))
        finally:
            await conn.close()
        out: dict[str, list[int]] = {s: [] for s in sensors}
        epoch = datetime(1970, 1, 1)
        for r in rows:
            if r["sensor"] in out:
                out[r["sensor"]].append((r["ts"] - epoch) // timedelta(microseconds=1) * 1000)
        return out
