"""Tenants' configuration: validate a document, append it as a version, read versions back.

The write path of every configuration change (CLI, API, demo): parse the document of its
kind (``contracts.config``), check it against the rest of the tenant's configuration
(a binding names a tank of the current network; a sensor the tenant has), refuse it with
a reason naming the field, or append ``config.changed`` conditionally on the version it
was made against (``bus.config_log``).  A document identical to the current one is not a
new version.  The current view (KV ``tagus-config``) is updated at once (read your
writes) and kept by the ``config-view`` projection (rebuilt by replay).
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import yaml

from bus import config_log
from bus.config_log import Stored, VersionConflict
from bus.config_view import update_view
from bus.storage import MAPPINGS_BUCKET
from bus.tokens import hash_token, new_token
from contracts.base import derive_id, utc_now, validate_tenant
from contracts.config import (
    MAPPING_PREFIX, MAX_DOCUMENT_BYTES, ConfigChanged, TenantDoc, TokenEntry, TokensDoc,
    check_kind, parse_document,
)
from contracts.errors import NotFoundError, TenantConfigError
from contracts.mapping import SourceMapping

__all__ = ["ConfigStore", "VersionConflict", "connected"]


@dataclass(frozen=True)
class Validated:
    """What a write will store: the document or text, its hash, summary and warnings."""

    sha256: str
    document: dict[str, Any] | None = None
    text: str | None = None
    media_type: str = "application/json"
    summary: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()


class ConfigStore:
    """The configuration of every tenant, over one JetStream context."""

    def __init__(self, js, *, known_sensors=None) -> None:
        self.js = js
        # async (tenant) -> set of sensor ids the tenant has (readings, mappings); None:
        # no QuestDB at hand, sensors named in the tenant's mappings only
        self._known_sensors = known_sensors

    # ------------------------------------------------------------ reading

    async def current(self, tenant: str, kind: str) -> Stored | None:
        return await config_log.last(self.js, validate_tenant(tenant), check_kind(kind))

    async def document(self, tenant: str, kind: str) -> Any:
        """The current document of ``kind``: a pydantic model, or the text of a network
        or mapping; None if never configured."""
        stored = await self.current(tenant, kind)
        if stored is None:
            return None
        return await self.body(stored.event)

    async def body(self, event: ConfigChanged) -> Any:
        if event.document is not None:
            return parse_document(event.kind, event.document)
        return await config_log.text_of(self.js, event)

    async def history(self, tenant: str, kind: str) -> list[Stored]:
        return await config_log.history(self.js, validate_tenant(tenant), check_kind(kind))

    async def tenants(self) -> list[tuple[str, TenantDoc, int]]:
        out = []
        for tenant in await config_log.tenants(self.js):
            stored = await config_log.last(self.js, tenant, "tenant")
            out.append((tenant, parse_document("tenant", stored.event.document),
                        stored.event.version))
        return out

    async def diff(self, tenant: str, kind: str, a: int, b: int) -> str:
        """What changed from version ``a`` to ``b``, as a unified diff of their texts."""
        olds = await config_log.version(self.js, tenant, kind, a)
        news = await config_log.version(self.js, tenant, kind, b)
        old_text, new_text = await self.render(olds.event), await self.render(news.event)
        return "".join(difflib.unified_diff(
            old_text.splitlines(keepends=True), new_text.splitlines(keepends=True),
            fromfile=f"{tenant}/{kind} v{a} ({olds.event.author}, {olds.event.recorded_at:%Y-%m-%d %H:%M}Z)",
            tofile=f"{tenant}/{kind} v{b} ({news.event.author}, {news.event.recorded_at:%Y-%m-%d %H:%M}Z)"))

    async def render(self, event: ConfigChanged) -> str:
        if event.document is not None:
            return yaml.safe_dump(event.document, sort_keys=True, allow_unicode=True)
        return await config_log.text_of(self.js, event) or ""

    # ------------------------------------------------------------ writing

    async def put(self, tenant: str, kind: str, body: bytes | str | dict, *, author: str,
                  reason: str = "", expected_version: int | None = None) -> ConfigChanged | None:
        """Validate ``body`` and append it as the next version of ``kind``.

        ``expected_version``: the version the change was made against (None: whatever is
        current now; the append is still conditional on it).  Returns the new event, or
        None when the document equals the current one (no new version).  Raises
        TenantConfigError (invalid, with the field path), VersionConflict (stale).
        """
        validate_tenant(tenant)
        check_kind(kind)
        if (kind != "tenant" and not kind.startswith(MAPPING_PREFIX)
                and await config_log.last(self.js, tenant, "tenant") is None):
            raise NotFoundError(f"tenant {tenant!r} does not exist: `tagus tenant create "
                                f"{tenant}` first")
        current = await config_log.last(self.js, tenant, kind)
        have = current.event.version if current else 0
        if expected_version is not None and expected_version != have:
            raise VersionConflict(tenant, kind, expected_version, have)
        checked = await self.validate(tenant, kind, body)
        if current is not None and current.event.sha256 == checked.sha256:
            # the same document: no new version, but a put whose append landed and whose
            # view update did not (NATS failing over in between) is completed by its retry
            await update_view(self.js, current.event, text=checked.text)
            return None
        object_name = None
        text = checked.text
        if text is not None and len(text.encode()) > config_log.INLINE_TEXT_MAX:
            object_name = await config_log.put_file(self.js, tenant, checked.sha256,
                                                    text.encode())
            text = None
        now = utc_now()
        event = ConfigChanged(
            event_id=derive_id("config", tenant, kind, have + 1, checked.sha256),
            tenant=tenant, occurred_at=now, recorded_at=now, kind=kind, version=have + 1,
            sha256=checked.sha256, document=checked.document, text=text,
            object_name=object_name, media_type=checked.media_type, author=author,
            reason=reason, summary=checked.summary or {}, warnings=list(checked.warnings))
        await config_log.append(self.js, event, current.seq if current else 0)
        await update_view(self.js, event, text=checked.text)
        return event

    async def validate(self, tenant: str, kind: str, body: bytes | str | dict) -> Validated:
        if kind == "network":
            return await self._network(body)
        if kind.startswith(MAPPING_PREFIX):
            text = _text(body, kind)
            SourceMapping.from_yaml(text)
            return Validated(hashlib.sha256(text.encode()).hexdigest(), text=text,
                             media_type="application/yaml")
        data = body if isinstance(body, dict) else _yaml(_text(body, kind), kind)
        doc = parse_document(kind, data)
        warnings = await self._cross_check(tenant, kind, doc)
        dumped = doc.model_dump(mode="json")
        canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":")).encode()
        return Validated(hashlib.sha256(canonical).hexdigest(), document=dumped,
                         warnings=tuple(warnings))

    async def _network(self, body: bytes | str | dict) -> Validated:
        from processors.simulate.network import load_network

        text = _text(body, "network")
        network = load_network(text)
        warnings = list(_network_warnings(network))
        warnings += _short_run(network)
        summary = network.summary()
        summary["tank_ids"] = list(network.tank_ids)
        summary["pump_ids"] = list(network.pump_ids)
        return Validated(hashlib.sha256(text.encode()).hexdigest(), text=text,
                         media_type="text/x-epanet-inp", summary=summary,
                         warnings=tuple(warnings))

    async def _cross_check(self, tenant: str, kind: str, doc) -> list[str]:
        """Checks against the tenant's network and sensors; raises on what cannot work,
        returns warnings for what can but looks wrong."""
        if kind == "mailbox":
            return await self._check_mailbox(tenant, doc)
        if kind not in ("assets", "rules", "tariff"):
            return []
        network = await self._network_of(tenant)
        if kind == "assets":
            return await self._check_assets(tenant, doc, network)
        if kind == "rules":
            return _check_rules(doc, network)
        assets = await self.document(tenant, "assets")
        if doc.price_sensor and not (assets and any(
                b.sensor == doc.price_sensor and b.role == "price" for b in assets.bindings)):
            raise TenantConfigError(f"tariff: price_sensor: {doc.price_sensor!r} is not bound "
                                    f"with role price in the tenant's assets")
        return []

    async def _check_mailbox(self, tenant: str, doc) -> list[str]:
        """A rule naming a mapping the tenant does not have (yet) would refuse every
        attachment it matches as ``invalid_mapping``: said as a warning (the mapping may
        come next)."""
        from bus.storage import get_mapping

        warnings = []
        for i, rule in enumerate(doc.rules):
            if (await get_mapping(self.js, tenant, rule.mapping) is None
                    and await self.current(tenant, f"mapping-{rule.mapping}") is None):
                warnings.append(f"rules.{i}.mapping: the tenant has no mapping "
                                f"{rule.mapping!r} yet; attachments matching "
                                f"{rule.attachment!r} are refused until it exists")
        return warnings

    async def _network_of(self, tenant: str):
        from processors.simulate.network import load_network

        text = await self.document(tenant, "network")
        return load_network(text) if text else None

    async def _check_assets(self, tenant: str, doc, network) -> list[str]:
        needs_network = [b for b in doc.bindings if b.role in (
            "tank_level", "pump_status", "pump_flow", "pump_power", "pump_speed", "pressure")
            or b.junctions or b.pattern]
        if network is None and needs_network:
            b = needs_network[0]
            raise TenantConfigError(f"assets: {b.sensor} as {b.role} refers to the network, "
                                    "and the tenant has none yet: configure it first (`tagus "
                                    "config put --tenant T network NET.inp`)")
        known = await self._sensors(tenant)
        junctions = set(network.junctions) if network else set()
        for i, b in enumerate(doc.bindings):
            where = f"assets: bindings.{i} ({b.sensor} as {b.role})"
            if b.role == "tank_level" and b.element not in network.tank_ids:
                raise TenantConfigError(f"{where}: no tank {b.element!r} in the network; "
                                        f"tanks: {', '.join(network.tank_ids) or 'none'}")
            if b.role.startswith("pump_") and b.element not in network.pump_ids:
                raise TenantConfigError(f"{where}: no pump {b.element!r} in the network; "
                                        f"pumps: {', '.join(network.pump_ids) or 'none'}")
            if b.role == "pressure" and b.element not in junctions:
                raise TenantConfigError(f"{where}: no junction {b.element!r} in the network")
            bad = [j for j in b.junctions if j not in junctions]
            if bad:
                raise TenantConfigError(f"{where}: junctions not in the network: {bad[:5]}")
            if b.pattern is not None and b.pattern not in network.patterns:
                raise TenantConfigError(f"{where}: no demand pattern {b.pattern!r}; "
                                        f"patterns: {', '.join(sorted(network.patterns))}")
            if b.sensor not in known:
                raise TenantConfigError(
                    f"{where}: the tenant has no sensor {b.sensor!r} (not in any of its "
                    f"mappings nor in its readings); known: {', '.join(sorted(known)[:20])}")
        return []

    async def _sensors(self, tenant: str) -> set[str]:
        known: set[str] = set()
        for kind in await config_log.kinds(self.js, tenant):
            if kind.startswith(MAPPING_PREFIX):
                text = await self.document(tenant, kind)
                known |= {s.id for s in SourceMapping.from_yaml(text).sensors.values()}
        kv = await self.js.key_value(MAPPINGS_BUCKET)
        with contextlib.suppress(Exception):
            for key in await kv.keys():
                if key.startswith(f"{tenant}."):
                    text = (await kv.get(key)).value
                    known |= {s.id for s in SourceMapping.from_yaml(text).sensors.values()}
        if self._known_sensors is not None:
            known |= await self._known_sensors(tenant)
        return known

    # ------------------------------------------------------------ tenants and tokens

    async def create_tenant(self, tenant: str, *, display_name: str, timezone: str = "UTC",
                            country: str | None = None, region: str | None = None,
                            author: str, reason: str = "created") -> ConfigChanged:
        validate_tenant(tenant)
        if await config_log.last(self.js, tenant, "tenant") is not None:
            raise TenantConfigError(f"tenant {tenant!r} exists already "
                                    f"(`tagus config put --tenant {tenant} tenant FILE` "
                                    f"changes it)")
        doc = {"display_name": display_name, "timezone": timezone, "country": country,
               "region": region}
        return await self.put(tenant, "tenant", doc, author=author, reason=reason,
                              expected_version=0)

    async def set_suspended(self, tenant: str, suspended: bool, *, author: str,
                            reason: str = "") -> ConfigChanged | None:
        stored = await self.current(tenant, "tenant")
        if stored is None:
            raise NotFoundError(f"no tenant {tenant!r}")
        doc = dict(stored.event.document or {}, suspended=suspended)
        return await self.put(tenant, "tenant", doc, author=author,
                              reason=reason or ("suspended" if suspended else "resumed"),
                              expected_version=stored.event.version)

    async def issue_token(self, tenant: str, name: str, scopes: list[str], *, author: str,
                          expires_in: timedelta | None = None,
                          reason: str = "") -> tuple[str, ConfigChanged]:
        """A new token (returned once; only its hash is stored) with ``scopes``."""
        token = new_token()
        now = datetime.now(UTC)
        for _ in range(3):  # a concurrent change of the token list: re-read and retry
            stored = await self.current(tenant, "tokens")
            tokens = list(TokensDoc.model_validate(stored.event.document).tokens
                          if stored else [])
            tokens.append(TokenEntry(name=name, sha256=hash_token(token), scopes=scopes,
                                     issued_at=now,
                                     expires_at=now + expires_in if expires_in else None))
            try:
                event = await self.put(tenant, "tokens", TokensDoc(tokens=tokens).model_dump(
                    mode="json"), author=author, reason=reason or f"issued token {name}",
                    expected_version=stored.event.version if stored else 0)
                return token, event
            except VersionConflict:
                continue
        raise VersionConflict(tenant, "tokens", -1, -1)

    async def revoke_token(self, tenant: str, name: str, *, author: str,
                           reason: str = "") -> int:
        stored = await self.current(tenant, "tokens")
        if stored is None:
            raise NotFoundError(f"tenant {tenant!r} has no tokens")
        now = datetime.now(UTC)
        tokens, revoked = [], 0
        for t in TokensDoc.model_validate(stored.event.document).tokens:
            if t.name == name and t.revoked_at is None:
                t = t.model_copy(update={"revoked_at": now})
                revoked += 1
            tokens.append(t)
        if not revoked:
            raise NotFoundError(f"tenant {tenant!r} has no live token named {name!r}")
        await self.put(tenant, "tokens", TokensDoc(tokens=tokens).model_dump(mode="json"),
                       author=author, reason=reason or f"revoked token {name}",
                       expected_version=stored.event.version)
        return revoked


@contextlib.asynccontextmanager
async def connected(settings):
    """A ConfigStore over a fresh connection (topology ensured); for commands."""
    from bus.topology import ensure_topology
    from ops import wiring

    async with wiring.nats(settings, "tagus-config") as nc:
        await ensure_topology(nc.jetstream(), wiring.topology(settings))
        yield ConfigStore(nc.jetstream(), known_sensors=wiring.sensor_lister(settings))


# ---------------------------------------------------------------- helpers


def _text(body: bytes | str | dict, kind: str) -> str:
    if isinstance(body, dict):
        raise TenantConfigError(f"{kind}: expected a file (text), got structured data")
    raw = body.encode() if isinstance(body, str) else bytes(body)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise TenantConfigError(f"{kind}: {len(raw) / 1e6:.1f} MB is larger than the "
                                f"{MAX_DOCUMENT_BYTES // 2**20} MiB a configuration document "
                                "may be")
    if b"\x00" in raw[:65536]:
        raise TenantConfigError(f"{kind}: binary data (NUL bytes): expected a text file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            return raw.decode("cp1252")
        except UnicodeDecodeError as e:
            raise TenantConfigError(f"{kind}: not text in UTF-8 or Windows-1252 ({e})") from None


def _yaml(text: str, kind: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise TenantConfigError(f"{kind}: not valid YAML or JSON: {' '.join(str(e).split())}") \
            from None


def _network_warnings(network) -> list[str]:
    out = []
    if not network.tanks:
        out.append("the network has no tanks: nothing to schedule against")
    if not network.pumps:
        out.append("the network has no pumps: nothing to schedule")
    for p in network.pumps:
        if p.kind == "HEAD" and not p.head_curve:
            out.append(f"pump {p.id} has no head curve")
    if network.times.duration_s == 0:
        out.append("the network's duration is 0 (a snapshot): simulations set the horizon")
    return out


def _short_run(network) -> list[str]:
    """A short extended-period run (at most 2 hydraulic hours): does EPANET solve it?"""
    from processors.simulate.errors import SimulationError
    from processors.simulate.run import simulate
    from processors.simulate.scenario import Scenario

    step = max(network.times.hydraulic_step_s, 1)
    horizon = max(step, min(network.times.duration_s or 3600, 7200) // step * step)
    try:
        result = simulate(network, Scenario(horizon_s=horizon, period_s=horizon))
    except SimulationError as e:
        raise TenantConfigError(f"network: EPANET cannot run it: {e}") from None
    return [f"short run ({horizon // 60} min): {w}" for w in result.warnings]


def _check_rules(doc, network) -> list[str]:
    if network is None:
        raise TenantConfigError("rules: the tenant has no network yet: configure it first")
    for tank_id, rule in doc.tanks.items():
        if tank_id not in network.tank_ids:
            raise TenantConfigError(f"rules: tanks.{tank_id}: no such tank; tanks: "
                                    f"{', '.join(network.tank_ids)}")
        tank = network.tank(tank_id)
        for field in ("min_level_m", "max_level_m", "reserve_level_m"):
            level = getattr(rule, field)
            if level is not None and not tank.min_level_m <= level <= tank.max_level_m:
                raise TenantConfigError(
                    f"rules: tanks.{tank_id}.{field}: {level} m is outside the tank "
                    f"({tank.min_level_m}..{tank.max_level_m} m in the network)")
    for pump_id in doc.pumps:
        if pump_id not in network.pump_ids:
            raise TenantConfigError(f"rules: pumps.{pump_id}: no such pump; pumps: "
                                    f"{', '.join(network.pump_ids)}")
    for i, group in enumerate(doc.exclusive):
        bad = [p for p in group if p not in network.pump_ids]
        if bad:
            raise TenantConfigError(f"rules: exclusive.{i}: no such pumps {bad}")
    return []


def format_change(event: ConfigChanged | None) -> str:
    if event is None:
        return "unchanged: the document equals the current version"
    lines = [f"{event.tenant}/{event.kind} version {event.version} by {event.author}"
             + (f": {event.reason}" if event.reason else "")]
    if event.summary:
        lines.append("summary: " + ", ".join(f"{k}={v}" for k, v in event.summary.items()
                                             if not isinstance(v, list)))
    lines += [f"warning: {w}" for w in event.warnings]
    return "\n".join(lines)


def format_tenants(rows) -> str:
    out = [f"{'tenant':20} {'name':30} {'zone':18} {'country':8} {'state':10} version"]
    for tenant, doc, version in rows:
        state = "suspended" if doc.suspended else "active"
        out.append(f"{tenant:20} {doc.display_name[:30]:30} {doc.timezone:18} "
                   f"{(doc.country or '-') + ('-' + doc.region if doc.region else ''):8} "
                   f"{state:10} {version}")
    return "\n".join(out)


async def show_tenant(store: ConfigStore, tenant: str) -> str:
    stored = await store.current(tenant, "tenant")
    if stored is None:
        raise NotFoundError(f"no tenant {tenant!r}")
    lines = [f"tenant {tenant} (version {stored.event.version})",
             yaml.safe_dump(stored.event.document, sort_keys=True).rstrip()]
    lines.append("configured:")
    for kind in await config_log.kinds(store.js, tenant):
        last = await config_log.last(store.js, tenant, kind)
        e = last.event
        lines.append(f"  {kind:24} v{e.version:<4} {e.recorded_at:%Y-%m-%d %H:%M}Z "
                     f"{e.author}: {e.reason}")
    return "\n".join(lines)


