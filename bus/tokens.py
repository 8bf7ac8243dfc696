"""Per-tenant access tokens, stored hashed in a YAML file until tenant management exists.

File format (``var/tokens.yaml`` by default)::

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

from contracts.base import validate_tenant
from contracts.errors import ForbiddenError, TenantConfigError

SCOPES = ("read", "write")


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
                if scope not in r.scopes:
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
