"""Which chain rules an event triggers, and the task request each makes (pure).

A rule (``contracts.config.ChainRule``) fires when the event's tag is its ``on`` and the
event matches ``where``: each key is an event field compared with the value (a list means
any of), except ``bound_role`` for readings: one of the batch's sensors is bound with
that role in the tenant's assets.  ``automatic_only`` fires only while the tenant's mode
for that capability is automatic.  A debounced rule gives every event of one window the
same task id, so the window requests one task.
"""

from __future__ import annotations

from typing import Any

from contracts.base import Event, derive_id, event_type
from contracts.config import AssetsDoc, ChainRule, TenantDoc


def matches(rule: ChainRule, event: Event, assets: AssetsDoc | None,
            tenant: TenantDoc | None) -> bool:
    if not rule.enabled or rule.on != event_type(event):
        return False
    if rule.automatic_only and (tenant is None or tenant.mode(rule.automatic_only) != "automatic"):
        return False
    for key, wanted in rule.where.items():
        if key == "bound_role":
            sensors = {s.sensor_id for s in getattr(event, "series", ())}
            bound = {b.sensor for b in (assets.bindings if assets else ()) if b.role == wanted}
            if not sensors & bound:
                return False
            continue
        have = getattr(event, key, None)
        if isinstance(wanted, list) and have not in wanted or \
                not isinstance(wanted, list) and have != wanted:
            return False
    return True


def params_for(rule: ChainRule, event: Event) -> dict[str, Any]:
    """The rule's params, ``"{field}"`` values taken from the event; plus ``cause``."""
    out: dict[str, Any] = {"cause": event.event_id, "cause_type": event_type(event)}
    for key, value in rule.params.items():
        if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
            value = getattr(event, value[1:-1], None)
        out[key] = value
    return out


def task_id_for(rule: ChainRule, event: Event) -> str:
    """Deterministic: one task per event, or per debounce window of event time."""
    if rule.debounce_s > 0:
        window = int(event.occurred_at.timestamp() // rule.debounce_s)
        return derive_id("chain", event.tenant, rule.name, "window", window)
    return derive_id("chain", event.tenant, rule.name, event.event_id)
