"""Who may log in to the OPC UA server, and what a session may touch.

**Users.** The OPC UA user name is the tenant id; the password is one of that tenant's
API tokens (``tagus token issue``, kept as sha256 in its ``tokens`` configuration and
followed live by ``TokenView``): a token with ``read`` may browse, read and subscribe;
acknowledging a schedule needs ``operate``.  Nothing new to store or rotate: revoking or
expiring the token, or suspending the tenant, refuses the next request of an open session
too (every request re-checks it).  Anonymous and certificate logins are not offered.

**Isolation.** asyncua knows roles, not owners, so each session is a ``TenantSession``:

- a node of the Tagus namespace belongs to the tenant its id starts with
  (``<tenant>/...``); reading, writing, browsing, subscribing to, calling or translating a
  path into another tenant's node is refused with ``BadUserAccessDenied``, and browsing
  the shared ``Tagus`` folder lists only the session's own tenant;
- asyncua's subscription service is global (any session may name any subscription id):
  a session may only use, modify, acknowledge, republish or delete its own
  subscriptions, and transfers are refused (they would hand one session another's data);
- adding or deleting nodes and references is refused by asyncua's role rules (users are
  never admins).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from asyncua import ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.server.internal_server import InternalServer
from asyncua.server.internal_session import InternalSession

from bus.tokens import grants
from contracts.errors import ForbiddenError

_DENIED = ua.uaerrors.BadUserAccessDenied


@dataclass
class TenantUser(User):
    tenant: str = ""
    token_name: str = ""
    can_ack: bool = False
    token: str = field(default="", repr=False)  # in memory only: re-checked per request


class TokenUsers:
    """asyncua user manager: user = tenant id, password = one of its API tokens."""

    def __init__(self, tokens) -> None:
        self.tokens = tokens  # TokenView (live) or TokenFile

    def get_user(self, iserver, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> TenantUser | None:
        if not username or not password:
            return None
        try:
            record = self.tokens.authenticate(password, "read")
        except ForbiddenError:
            return None
        if record.tenant != username:
            return None
        return TenantUser(role=UserRole.User, name=f"{record.tenant}/{record.name}",
                          tenant=record.tenant, token_name=record.name,
                          can_ack=grants(record.scopes, "operate"), token=password)

    def still_valid(self, user: TenantUser) -> bool:
        try:
            self.tokens.authenticate(user.token, "read")
            return True
        except ForbiddenError:
            return False


class TenantServer(InternalServer):
    """asyncua's internal server, handing out ``TenantSession``s.  ``owner(nodeid)`` says
    which tenant a node belongs to (None: shared); ``write_hook`` handles writes to the
    acknowledgement nodes (``server.ScheduleServer.acknowledge``)."""

    def __init__(self, users: TokenUsers, owner: Callable[[ua.NodeId], str | None],
                 write_hook) -> None:
        super().__init__(user_manager=users)
        self.users, self.owner, self.write_hook = users, owner, write_hook

    def create_session(self, name: str, user: User = User(role=UserRole.Anonymous),
                       external: bool = False) -> InternalSession:
        cls = TenantSession if external else InternalSession
        return cls(self, self.aspace, self.subscription_service, name, user=user,
                   external=external)


class TenantSession(InternalSession):
    iserver: TenantServer

    # ------------------------------------------------------------ checks

    def _tenant(self) -> str:
        user = self.user
        if not isinstance(user, TenantUser) or not self.iserver.users.still_valid(user):
            raise _DENIED
        return user.tenant

    def _nodes(self, node_ids: Iterable[ua.NodeId]) -> str:
        tenant = self._tenant()
        for node_id in node_ids:
            if self.iserver.owner(node_id) not in (None, tenant):
                raise _DENIED
        return tenant

    def _subscriptions(self, ids: Iterable[int]) -> None:
        self._tenant()
        subs = self.subscription_service.subscriptions
        for i in ids:
            sub = subs.get(i)
            if sub is not None and sub.session_id != self.session_id:
                raise _DENIED

    def _visible(self, refs: list[ua.ReferenceDescription], tenant: str) -> list:
        return [r for r in refs if self.iserver.owner(r.NodeId) in (None, tenant)]

    # ------------------------------------------------------------ services

    async def read(self, params):
        self._nodes(v.NodeId for v in params.NodesToRead)
        return await super().read(params)

    async def history_read(self, params):
        self._nodes(v.NodeId for v in params.NodesToRead)
        return await super().history_read(params)

    async def write(self, params):
        tenant = self._nodes(v.NodeId for v in params.NodesToWrite)
        return await self.iserver.write_hook(self, tenant, params, super().write)

    async def browse(self, params):
        tenant = self._nodes(d.NodeId for d in params.NodesToBrowse)
        results = await super().browse(params)
        for r in results:
            r.References = self._visible(r.References, tenant)
        return results

    async def translate_browsepaths_to_nodeids(self, params):
        tenant = self._nodes(p.StartingNode for p in params)
        results = await super().translate_browsepaths_to_nodeids(params)
        for r in results:
            r.Targets = [t for t in r.Targets
                         if self.iserver.owner(t.TargetId) in (None, tenant)]
            if not r.Targets and r.StatusCode.is_good():
                r.StatusCode = ua.StatusCode(ua.StatusCodes.BadNoMatch)
        return results

    async def call(self, params):
        self._nodes(n for m in params for n in (m.ObjectId, m.MethodId))
        return await super().call(params)

    async def register_nodes(self, nodes):
        self._nodes(nodes)
        return await super().register_nodes(nodes)

    async def create_monitored_items(self, params):
        self._subscriptions([params.SubscriptionId])
        self._nodes(i.ItemToMonitor.NodeId for i in params.ItemsToCreate)
        return await super().create_monitored_items(params)

    async def modify_monitored_items(self, params):
        self._subscriptions([params.SubscriptionId])
        return await super().modify_monitored_items(params)

    async def delete_monitored_items(self, params):
        self._subscriptions([params.SubscriptionId])
        return await super().delete_monitored_items(params)

    async def set_monitoring_mode(self, params):
        self._subscriptions([params.SubscriptionId])
        return await super().set_monitoring_mode(params)

    async def set_publishing_mode(self, params):
        self._subscriptions(params.SubscriptionIds)
        return await super().set_publishing_mode(params)

    def modify_subscription(self, params):
        self._subscriptions([params.SubscriptionId])
        return super().modify_subscription(params)

    async def delete_subscriptions(self, ids):
        self._subscriptions(ids)
        return await super().delete_subscriptions(ids)

    def republish(self, params):
        self._subscriptions([params.SubscriptionId])
        return super().republish(params)

    def publish(self, acks=None):
        self._tenant()  # a revoked token's subscriptions stop delivering
        own = self.subscription_service.subscriptions
        acks = [a for a in (acks or []) if getattr(own.get(a.SubscriptionId), "session_id",
                                                   None) == self.session_id]
        return super().publish(acks)

    async def transfer_subscriptions(self, params, callback):
        raise _DENIED
