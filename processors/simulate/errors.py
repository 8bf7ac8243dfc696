"""Typed errors of the digital twin."""

from __future__ import annotations

from contracts.errors import TagusError, TenantConfigError


class NetworkInputError(TenantConfigError):
    """An EPANET network (.inp) or a scenario on it is invalid: unreadable file, unknown
    pump or tank, a schedule of the wrong length, a level outside the tank."""


class SimulationError(TagusError):
    """EPANET failed on a network it had accepted (e.g. hydraulic equations unsolvable)."""
