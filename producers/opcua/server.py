"""The OPC UA server SCADA reads released schedules from (``tagus serve opcua``).

It lives in ``producers/`` because it is a door to the outside, like the HTTP intake: it
speaks SCADA's protocol, authenticates outside users (``access.py``) and turns what they
write (acknowledgements) into events on the bus.  What it shows is an in-memory view of
the SCHEDULE stream (followed with an ordered consumer from the first message, so a
restarted server shows the same), not a QuestDB projection.

Address space (namespace ``urn:tagus:schedules``; node ids ``<tenant>/...``)::

    Objects/Tagus/<tenant>/          each tenant's user sees only its own folder
        ScheduleId, Version          the latest released schedule (String, Int64)
        Start, PeriodSeconds         its first period (DateTime UTC) and period length (s)
        ReleasedAt, ReleasedBy
        AckVersion                   SCADA writes the Version it loaded (Int64, writable;
                                     needs an ``operate`` token): schedule.acknowledged
        Pumps/<pump>/
            Command                  relative speed to run at now (Double, 0 = off; the
                                     schedule in force, BadNoData when none: local control)
            NextChangeAt, NextCommand when the command changes next and to what (BadNoData:
                                     no change ahead / no schedule from then on)
            Speeds, Reasons          the whole plan of the latest release (Double[], String[])

Values change within a second of ``schedule.released`` (a push consumer) and at period
boundaries (a one-second tick that writes only values that changed).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import nats.errors
import structlog
from asyncua import Server, ua
from nats.js import JetStreamContext
from nats.js.api import DeliverPolicy
from nats.js.errors import NotFoundError

from bus.publish import publish
from bus.runner import tenant_mismatch
from bus.subjects import event_subjects
from contracts.base import derive_id, utc_now
from contracts.errors import TransientError
from contracts.registry import decode
from contracts.schedules import ScheduleAcknowledged, ScheduleReleased
from producers.opcua.access import TenantServer, TenantUser, TokenUsers
from producers.opcua.timeline import command, next_change, schedule_end

log = structlog.get_logger("tagus.opcua")
NAMESPACE = "urn:tagus:schedules"
ROOT = "Tagus"
KEEP_VERSIONS = 20  # releases kept per tenant (acks name one of them), besides those in force
_V = ua.VariantType
_NO_DATA = ua.StatusCode(ua.StatusCodes.BadNoData)


@dataclass
class _Tenant:
    schedules: list[ScheduleReleased] = field(default_factory=list)
    pumps: dict[str, ua.NodeId] = field(default_factory=dict)  # pump -> its folder
    latest: ScheduleReleased | None = None


class ScheduleServer:
    """``await start()``, then ``await follow(js, stop)`` until ``stop`` is set, ``await
    stop_server()``.  ``clock`` (aware UTC) decides the current period (tests move it)."""

    def __init__(self, tokens, *, endpoint: str, certificate: Path | None = None,
                 private_key: Path | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.endpoint, self.clock = endpoint, clock
        self._certificate, self._private_key = certificate, private_key
        self._iserver = TenantServer(TokenUsers(tokens), self.owner, self.acknowledge)
        self.server = Server(iserver=self._iserver)
        self._tenants: dict[str, _Tenant] = {}
        self._written: dict[str, tuple] = {}
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self.ns = 0
        self.acknowledged = 0

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        s = self.server
        await s.init()
        s.set_endpoint(self.endpoint)
        s.set_server_name("Tagus released pump schedules")
        await s.set_application_uri("urn:tagus:opcua")
        s.set_identity_tokens([ua.UserNameIdentityToken])
        if self._certificate and self._private_key:
            await s.load_certificate(str(self._certificate))
            await s.load_private_key(str(self._private_key))
            s.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
        else:
            log.warning("opcua endpoint without encryption: user tokens travel in clear "
                        "(set TAGUS_OPCUA_CERTIFICATE and TAGUS_OPCUA_PRIVATE_KEY)")
            s.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        self.ns = await s.register_namespace(NAMESPACE)
        await s.nodes.objects.add_folder(ua.NodeId(ROOT, self.ns), ua.QualifiedName(ROOT, self.ns))
        await s.start()
        log.info("opcua server listening", endpoint=self.endpoint)

    async def stop_server(self) -> None:
        await self.server.stop()

    def owner(self, node_id: ua.NodeId) -> str | None:
        """The tenant a node belongs to: ``<tenant>/...`` in our namespace; None = shared."""
        if node_id.NamespaceIndex != self.ns or not isinstance(node_id.Identifier, str):
            return None
        tenant, slash, _ = node_id.Identifier.partition("/")
        return tenant if slash else None

    def node_id(self, tenant: str, *path: str) -> ua.NodeId:
        return ua.NodeId("/".join((tenant, *path)), self.ns)

    # ------------------------------------------------------------ following the stream

    async def follow(self, js: JetStreamContext, stop: asyncio.Event) -> None:
        """Apply every released schedule (history first, then live) and keep the current
        commands up to date, until ``stop`` is set."""
        self._js = js
        sub = await self._subscribe(js, stop)
        try:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _subscribe(self, js: JetStreamContext, stop: asyncio.Event):
        async def on_msg(msg) -> None:
            try:
                event = decode("schedule", msg.data)
            except Exception as e:  # noqa: BLE001 - a bad message is skipped, said once
                log.error("undecodable schedule message skipped", subject=msg.subject,
                          error=str(e))
                return
            if not isinstance(event, ScheduleReleased):
                return
            if (problem := tenant_mismatch(event, msg.subject)) is not None:
                log.error("schedule refused", problem=problem)
                return
            try:
                await self.apply(event)
            except Exception as e:  # noqa: BLE001 - the callback's caller would only log it
                log.error("schedule not shown", tenant=event.tenant, version=event.version,
                          event_id=event.event_id, error=repr(e))

        while not stop.is_set():
            try:
                return await js.subscribe(event_subjects(ScheduleReleased), cb=on_msg,
                                          ordered_consumer=True,
                                          deliver_policy=DeliverPolicy.ALL)
            except (NotFoundError, nats.errors.Error, TimeoutError) as e:
                log.warning("cannot follow the SCHEDULE stream yet; retrying", error=str(e))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 2.0)
        return None

    # ------------------------------------------------------------ the view

    async def apply(self, released: ScheduleReleased) -> None:
        """Take one released schedule in (idempotent: a version is applied once)."""
        async with self._lock:
            state = self._tenants.get(released.tenant)
            if state is None:
                state = self._tenants[released.tenant] = _Tenant()
                await self._add_tenant(released.tenant)
            if any(s.version == released.version for s in state.schedules):
                return
            state.schedules.append(released)
            state.schedules.sort(key=lambda s: s.version)
            now = self.clock()
            recent = {s.version for s in state.schedules[-KEEP_VERSIONS:]}
            state.schedules = [s for s in state.schedules
                               if s.version in recent or schedule_end(s) > now]
            state.latest = state.schedules[-1]
            for plan in released.pumps:
                if plan.pump not in state.pumps:
                    state.pumps[plan.pump] = await self._add_pump(released.tenant, plan.pump)
            await self._refresh(released.tenant, state, now)
        log.info("schedule shown", tenant=released.tenant, version=released.version,
                 schedule_id=released.schedule_id, pumps=len(released.pumps))

    async def tick(self) -> None:
        async with self._lock:
            now = self.clock()
            for tenant, state in self._tenants.items():
                await self._refresh(tenant, state, now)

    async def _refresh(self, tenant: str, state: _Tenant, now: datetime) -> None:
        latest = state.latest
        if latest is None:
            return
        await self._set(tenant, "ScheduleId", latest.schedule_id, _V.String)
        await self._set(tenant, "Version", latest.version, _V.Int64)
        await self._set(tenant, "Start", latest.start, _V.DateTime)
        await self._set(tenant, "PeriodSeconds", latest.period_s, _V.Int32)
        await self._set(tenant, "ReleasedAt", latest.occurred_at, _V.DateTime)
        await self._set(tenant, "ReleasedBy", latest.released_by, _V.String)
        plans = {p.pump: p for p in latest.pumps}
        for pump in state.pumps:
            await self._set(tenant, f"Pumps/{pump}/Command",
                            command(state.schedules, pump, now), _V.Double)
            change = next_change(state.schedules, pump, now)
            await self._set(tenant, f"Pumps/{pump}/NextChangeAt", change and change[0],
                            _V.DateTime)
            await self._set(tenant, f"Pumps/{pump}/NextCommand", change and change[1],
                            _V.Double)
            plan = plans.get(pump)
            await self._set(tenant, f"Pumps/{pump}/Speeds",
                            [float(v) for v in plan.speeds] if plan else [], _V.Double)
            await self._set(tenant, f"Pumps/{pump}/Reasons",
                            list(plan.reasons) if plan else [], _V.String)

    async def _set(self, tenant: str, path: str, value, variant: ua.VariantType) -> None:
        node_id = self.node_id(tenant, path)
        key = node_id.to_string()
        if self._written.get(key) == (value,):
            return
        if value is None:
            dv = ua.DataValue(ua.Variant(), StatusCode=_NO_DATA)
        else:
            dv = ua.DataValue(ua.Variant(value, variant))
        await self.server.write_attribute_value(node_id, dv)
        self._written[key] = (value,)

    async def _add_tenant(self, tenant: str) -> None:
        root = self.server.get_node(ua.NodeId(ROOT, self.ns))
        folder = await root.add_object(self.node_id(tenant, ""), ua.QualifiedName(tenant, self.ns))
        for name, variant, initial in (
                ("ScheduleId", _V.String, ""), ("Version", _V.Int64, 0),
                ("Start", _V.DateTime, None), ("PeriodSeconds", _V.Int32, 0),
                ("ReleasedAt", _V.DateTime, None), ("ReleasedBy", _V.String, ""),
                ("AckVersion", _V.Int64, 0)):
            var = await _variable(folder, self.node_id(tenant, name), self.ns, name,
                                  initial, variant)
            if name == "AckVersion":
                await var.set_writable()
        await folder.add_folder(self.node_id(tenant, "Pumps"), ua.QualifiedName("Pumps", self.ns))

    async def _add_pump(self, tenant: str, pump: str) -> ua.NodeId:
        pumps = self.server.get_node(self.node_id(tenant, "Pumps"))
        node = await pumps.add_object(self.node_id(tenant, "Pumps", pump),
                                      ua.QualifiedName(pump, self.ns))
        for name, variant, initial in (
                ("Command", _V.Double, None), ("NextChangeAt", _V.DateTime, None),
                ("NextCommand", _V.Double, None), ("Speeds", _V.Double, []),
                ("Reasons", _V.String, [])):
            await _variable(node, self.node_id(tenant, "Pumps", pump, name), self.ns, name,
                            initial, variant)
        return node.nodeid

    # ------------------------------------------------------------ acknowledgements

    async def acknowledge(self, session, tenant: str, params, write) -> list[ua.StatusCode]:
        """A session's write (tenant checked already): values written to ``AckVersion``
        become ``schedule.acknowledged`` first (a write whose event could not be published
        fails, so SCADA retries); other nodes take asyncua's path (read-only: refused)."""
        ack_node = self.node_id(tenant, "AckVersion")
        results: list[ua.StatusCode | None] = [None] * len(params.NodesToWrite)
        passed = []
        for i, wv in enumerate(params.NodesToWrite):
            if wv.NodeId == ack_node and wv.AttributeId == ua.AttributeIds.Value:
                code = await self._ack(tenant, session.user, wv.Value)
                if code is not None:
                    results[i] = ua.StatusCode(code)
                    continue
            passed.append((i, wv))
        if passed:
            rest = ua.WriteParameters(NodesToWrite=[wv for _, wv in passed])
            for (i, _), status in zip(passed, await write(rest), strict=True):
                results[i] = status
        return results

    async def _ack(self, tenant: str, user: TenantUser, value: ua.DataValue) -> int | None:
        """None when acknowledged, else the status code to answer."""
        if not user.can_ack:
            return ua.StatusCodes.BadUserAccessDenied
        version = value.Value.Value if value is not None and value.Value is not None else None
        if not isinstance(version, int) or isinstance(version, bool):
            return ua.StatusCodes.BadTypeMismatch
        state = self._tenants.get(tenant)
        schedule = next((s for s in (state.schedules if state else ()) if s.version == version),
                        None)
        if schedule is None:
            return ua.StatusCodes.BadOutOfRange
        if self._js is None:
            return ua.StatusCodes.BadResourceUnavailable
        now = utc_now()
        event = ScheduleAcknowledged(
            event_id=derive_id("schedule.acknowledged", tenant, schedule.schedule_id, "opcua",
                               user.name),
            tenant=tenant, occurred_at=now, recorded_at=now, causation_id=schedule.event_id,
            correlation_id=schedule.correlation_id or schedule.event_id,
            schedule_id=schedule.schedule_id, version=schedule.version, channel="opcua",
            by=user.name or "")
        try:
            await publish(self._js, event, timeout=5)
        except (nats.errors.Error, TimeoutError, TransientError) as e:
            log.warning("acknowledgement not recorded; refused", tenant=tenant,
                        version=version, error=repr(e))
            return ua.StatusCodes.BadResourceUnavailable
        self.acknowledged += 1
        log.info("schedule acknowledged", tenant=tenant, version=version, by=user.name,
                 schedule_id=schedule.schedule_id)
        return None


async def _variable(parent, node_id: ua.NodeId, ns: int, name: str, initial,
                    variant: ua.VariantType):
    """A variable of a fixed data type (built-in type ids equal the variant types); no
    initial value = Null with ``BadNoData`` until the first schedule fills it."""
    value = ua.Variant() if initial is None else ua.Variant(initial, variant)
    var = await parent.add_variable(node_id, ua.QualifiedName(name, ns), value,
                                    datatype=ua.NodeId(variant.value))
    if initial is None:
        await var.write_value(ua.DataValue(value, StatusCode=_NO_DATA))
    return var
