"""Units Tagus understands and their SI equivalents (SI inside, conversion at the edges)."""

from __future__ import annotations

# unit as reported (lower-cased) -> (SI unit, factor, offset): si = value * factor + offset
_UNITS: dict[str, tuple[str, float, float]] = {
    # volumetric flow
    "m3/s": ("m3/s", 1.0, 0.0), "m³/s": ("m3/s", 1.0, 0.0),
    "m3/h": ("m3/s", 1 / 3600, 0.0), "m³/h": ("m3/s", 1 / 3600, 0.0),
    "m3/d": ("m3/s", 1 / 86400, 0.0), "l/s": ("m3/s", 1e-3, 0.0),
    "l/min": ("m3/s", 1e-3 / 60, 0.0), "ml/d": ("m3/s", 1e3 / 86400, 0.0),
    "gpm": ("m3/s", 6.309019640e-5, 0.0),
    # length: levels, heads, rainfall depth
    "m": ("m", 1.0, 0.0), "cm": ("m", 1e-2, 0.0), "mm": ("m", 1e-3, 0.0),
    "ft": ("m", 0.3048, 0.0),
    # pressure
    "pa": ("Pa", 1.0, 0.0), "kpa": ("Pa", 1e3, 0.0), "bar": ("Pa", 1e5, 0.0),
    "mbar": ("Pa", 1e2, 0.0), "psi": ("Pa", 6894.757293168, 0.0),
    # power, energy
    "w": ("W", 1.0, 0.0), "kw": ("W", 1e3, 0.0), "mw": ("W", 1e6, 0.0),
    "j": ("J", 1.0, 0.0), "kwh": ("J", 3.6e6, 0.0), "mwh": ("J", 3.6e9, 0.0),
    # temperature (degree Celsius is the SI-derived unit operators read)
    "degc": ("degC", 1.0, 0.0), "°c": ("degC", 1.0, 0.0), "c": ("degC", 1.0, 0.0),
    "k": ("degC", 1.0, -273.15), "degf": ("degC", 5 / 9, -32 * 5 / 9),
    # speed, ratios
    "m/s": ("m/s", 1.0, 0.0), "km/h": ("m/s", 1 / 3.6, 0.0),
    "%": ("1", 1e-2, 0.0), "1": ("1", 1.0, 0.0),
    # prices
    "eur/mwh": ("EUR/MWh", 1.0, 0.0), "eur/kwh": ("EUR/MWh", 1e3, 0.0),
}


def known_units() -> list[str]:
    return sorted(_UNITS)


def to_si(unit: str) -> tuple[str, float, float] | None:
    """(SI unit, factor, offset) for ``unit``, or None if it is not known."""
    return _UNITS.get(unit.strip().lower())
