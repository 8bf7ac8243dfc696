"""Per-tenant access tokens: who a token is and what it may do.

The deployment's tokens are configuration events (kind ``tokens`` of each tenant, see
``contracts/config.py``): ``TokenView`` keeps them from the configuration view (KV
``tagus-config``) with a watch, so an issued token works and a revoked or expired one
stops within a second on every running service, as does a suspended tenant's.

Scopes: ``read`` (query API), ``write`` (intake), ``operate`` (tasks, approvals,
acknowledgements; implies read), ``admin`` (configuration and tokens; implies operate
and read).  ``write`` is its own: a site's Telegraf cannot read.

``TokenStore``/``TokenFile`` keep the same records in memory or in a YAML file, for tests
and single-process tools.  File format::

    tokens:
      - name: scada-push          # who holds it, for humans and logs
        tenant: ltown
        scopes: [write]           # write = intake endpoints, read = query API
        sha256: 9f86d0...         # sha256 of the token; the token itself is never stored

Tokens are 32 random bytes (url-safe base64, prefix ``tgs_``), so a plain sha256 is
enough (no dictionary to attack); comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from bus.storage import CONFIG_BUCKET
from contracts.base import validate_tenant
from contracts.errors import ForbiddenError, TenantConfigError

SCOPES = ("read", "write", "operate", "admin")
_IMPLIED = {"admin": {"admin", "operate", "read"}, "operate": {"operate", "read"},
            "read": {"read"}, "write": {"write"}}


def grants(scopes: tuple[str, ...] | list[str], scope: str) -> bool:
    return any(scope in _IMPLIED.get(s, ()) for s in scopes)


@dataclass(frozen=True)
class TokenRecord:
    name: str
    tenant: str
    scopes: tuple[str, ...]
    sha256: str


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "tgs_" + secrets.token_urlsafe(32)


class TokenStore:
    """Token hashes loaded from a file; ``authenticate`` answers which tenant a token is."""

    def __init__(self, records: list[TokenRecord]) -> None:
        self.records = list(records)

    @classmethod
    def load(cls, path: Path) -> TokenStore:
        if not Path(path).exists():
            return cls([])
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
            recs = [TokenRecord(name=str(r["name"]), tenant=validate_tenant(str(r["tenant"])),
                                scopes=tuple(r.get("scopes", ["read"])), sha256=str(r["sha256"]))
                    for r in doc.get("tokens", [])]
        except (yaml.YAMLError, KeyError, TypeError, ValueError) as e:
            raise TenantConfigError(f"token file {path} is invalid: {e}") from e
        for r in recs:
            bad = set(r.scopes) - set(SCOPES)
            if bad:
                raise TenantConfigError(f"token {r.name!r} in {path}: unknown scopes {sorted(bad)}")
        return cls(recs)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"tokens": [{"name": r.name, "tenant": r.tenant, "scopes": list(r.scopes),
                           "sha256": r.sha256} for r in self.records]}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(doc, sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)

    def issue(self, tenant: str, name: str, scopes: tuple[str, ...]) -> str:
        """Create a token, keep only its hash, return the token (shown once)."""
        validate_tenant(tenant)
        bad = set(scopes) - set(SCOPES)
        if bad:
            raise TenantConfigError(f"unknown scopes {sorted(bad)}; known: {list(SCOPES)}")
        token = new_token()
        self.records.append(TokenRecord(name, tenant, tuple(scopes), hash_token(token)))
        return token

    def revoke(self, tenant: str, name: str) -> int:
        """Remove every token of ``tenant`` named ``name``; returns how many were removed."""
        keep = [r for r in self.records if not (r.tenant == tenant and r.name == name)]
        removed = len(self.records) - len(keep)
        self.records = keep
        return removed

    def authenticate(self, token: str | None, scope: str) -> TokenRecord:
        """The record of ``token`` if it grants ``scope``; ForbiddenError otherwise."""
        if not token:
            raise ForbiddenError("missing token")
        digest = hash_token(token)
        for r in self.records:
            if hmac.compare_digest(r.sha256, digest):
                if not grants(r.scopes, scope):
                    raise ForbiddenError(f"token {r.name!r} lacks the {scope!r} scope")
                return r
        raise ForbiddenError("unknown token")


class TokenFile:
    """The token store of a running service, re-read whenever the file changes.

    One ``stat`` per authentication: a token issued or revoked with ``tagus token`` takes
    effect on the next request of every service that reads the same file.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._stamp: tuple[int, int, int] | None = None
        self._store = TokenStore([])

    def store(self) -> TokenStore:
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0, 0)
        if stamp != self._stamp:
            self._store, self._stamp = TokenStore.load(self.path), stamp
        return self._store

    def authenticate(self, token: str | None, scope: str) -> TokenRecord:
        return self.store().authenticate(token, scope)


class TokenView:
    """Every tenant's tokens from the configuration view, kept current by a KV watch.

    ``await view.start(js)`` loads what is there and keeps watching until ``close()``;
    ``authenticate`` is then a dictionary lookup (no I/O on the request path).
    """

    def __init__(self) -> None:
        self._by_hash: dict[str, tuple[TokenRecord, object, object]] = {}
        self._by_tenant: dict[str, set[str]] = {}
        self._suspended: set[str] = set()
        self._task = None
        self.loaded = None

    async def start(self, js) -> None:
        import asyncio

        self.loaded = asyncio.Event()
        self._js = js
        kv = await js.key_value(CONFIG_BUCKET)
        watcher = await kv.watchall()
        self._task = asyncio.create_task(self._follow(watcher))
        await asyncio.wait_for(self.loaded.wait(), 30)

    async def _follow(self, watcher) -> None:
        import asyncio

        import nats.errors
        import structlog

        from contracts.registry import decode

        while True:
            try:
                entry = await watcher.updates(timeout=60)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                await watcher.stop()
                raise
            except Exception as e:  # noqa: BLE001 - a broken watch is re-opened, not fatal
                structlog.get_logger("tagus.tokens").warning("token watch failed; re-opening",
                                                             error=repr(e))
                await asyncio.sleep(1)
                watcher = await (await self._js.key_value(CONFIG_BUCKET)).watchall()
                continue
            if entry is None:  # the initial values are in
                self.loaded.set()
                continue
            if entry.value:
                self.apply(decode("config", entry.value))

    def apply(self, event) -> None:
        """Take one configuration change into account (tokens and tenant kinds)."""
        from contracts.config import TenantDoc, TokensDoc

        if event.kind == "tenant":
            doc = TenantDoc.model_validate(event.document)
            (self._suspended.add if doc.suspended else self._suspended.discard)(event.tenant)
        elif event.kind == "tokens":
            for digest in self._by_tenant.pop(event.tenant, set()):
                self._by_hash.pop(digest, None)
            hashes = set()
            for t in TokensDoc.model_validate(event.document).tokens:
                record = TokenRecord(t.name, event.tenant, tuple(t.scopes), t.sha256)
                self._by_hash[t.sha256] = (record, t.expires_at, t.revoked_at)
                hashes.add(t.sha256)
            self._by_tenant[event.tenant] = hashes

    def authenticate(self, token: str | None, scope: str) -> TokenRecord:
        from datetime import UTC, datetime

        if not token:
            raise ForbiddenError("missing token")
        found = self._by_hash.get(hash_token(token))
        if found is None:
            raise ForbiddenError("unknown token")
        record, expires_at, revoked_at = found
        if revoked_at is not None:
            raise ForbiddenError(f"token {record.name!r} was revoked")
        if expires_at is not None and datetime.now(UTC) >= expires_at:
            raise ForbiddenError(f"token {record.name!r} expired at {expires_at:%Y-%m-%d %H:%M}Z")
        if record.tenant in self._suspended:
            raise ForbiddenError(f"tenant {record.tenant!r} is suspended")
        if not grants(record.scopes, scope):
            raise ForbiddenError(f"token {record.name!r} lacks the {scope!r} scope")
        return record

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except BaseException:  # noqa: BLE001 - cancelled on purpose
                pass
