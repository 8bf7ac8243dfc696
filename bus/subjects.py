"""Subject names, built in one place.

    tagus.<family>.<tenant>.<name>        e.g. tagus.readings.acme.normalised

An event type may name a field as its last token instead (``__subject_key__``):
``config.changed`` goes to ``tagus.config.<tenant>.<kind>``.  A tag's name may carry a version (``readings.normalised.v2``): its dots become dashes in
the last token (``tagus.readings.acme.normalised-v2``), so every subject keeps four
tokens.  The tenant is always the third token, so per-tenant permissions
(``tagus.*.acme.>``) and replay filters (``tagus.readings.acme.>``) are plain
subject wildcards.  The stream of a family is ``stream_name(family)``.
"""

from __future__ import annotations

from contracts.base import Event, event_type, validate_tenant
from contracts.errors import ContractError

ROOT = "tagus"


def _split(tag: str) -> tuple[str, str]:
    family, _, name = tag.partition(".")
    return family, name.replace(".", "-")


def subject_for(event: Event) -> str:
    family, name = _split(event_type(event))
    key = getattr(type(event), "__subject_key__", None)
    if key:  # e.g. config.changed: one subject per tenant and kind
        name = getattr(event, key)
    return f"{ROOT}.{family}.{event.tenant}.{name}"


def family_subjects(family: str) -> str:
    """Every subject of a family's stream."""
    return f"{ROOT}.{family}.>"


def subject(family: str, tenant: str = "*", name: str = "*") -> str:
    """A subject (or a filter, with ``*``) from its parts."""
    return f"{ROOT}.{family}.{tenant}.{name}"


def tenant_subjects(family: str, tenant: str) -> str:
    return f"{ROOT}.{family}.{validate_tenant(tenant)}.>"


def event_subjects(event_cls: type[Event], tenant: str = "*") -> str:
    """Subjects carrying one event type (for all tenants by default)."""
    family, name = _split(event_type(event_cls))
    if getattr(event_cls, "__subject_key__", None):
        name = "*"
    return f"{ROOT}.{family}.{tenant}.{name}"


_STREAMS = {"task": "TASKS"}  # a family whose stream reads better in the plural


def stream_name(family: str) -> str:
    return _STREAMS.get(family, family.upper().replace("-", "_"))


def tenant_of_subject(subject: str) -> str | None:
    """The tenant token of a Tagus subject, or None if the subject is not one of ours."""
    parts = subject.split(".")
    return parts[2] if len(parts) >= 4 and parts[0] == ROOT else None


def parse_subject(subject: str) -> tuple[str, str, str]:
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != ROOT:
        raise ContractError(f"expected subject {ROOT}.<family>.<tenant>.<name>, got {subject!r}")
    return parts[1], parts[2], parts[3]
