"""Units Tagus understands and their SI equivalents (SI inside, conversion at the edges).

Units are read by pint, case-sensitively (``MW`` is not ``mW``, ``Ml/d`` is megalitres
and ``ml/d`` millilitres per day), with the spellings operators write: ``m3/h``,
``m³/h``, ``l/s``, ``Ml/d``, ``mH2O``, ``bar``, ``kWh``, ``°C``, ``%``, ``€/MWh``.
Every quantity is stored in one SI unit per dimension (``SI_UNITS``); temperatures in
degrees Celsius, prices per MWh in their currency.

The pint registry is built on first use (it reads pint's definitions file), never at
import.
"""

from __future__ import annotations

import difflib
import re
from functools import cache

# the names operators write, for help texts and "did you mean" suggestions
COMMON_UNITS = (
    "m3/s", "m3/h", "m3/d", "m³/h", "l/s", "l/min", "l/h", "Ml/d", "gpm",
    "m", "cm", "mm", "ft", "m3", "l", "Ml",
    "Pa", "kPa", "bar", "mbar", "psi", "mH2O",
    "W", "kW", "MW", "Wh", "kWh", "MWh", "J", "MJ",
    "degC", "°C", "K", "degF",
    "m/s", "km/h", "%", "1", "W/m2", "kWh/m2", "Hz", "rpm", "s", "min", "h",
    "EUR/MWh", "EUR/kWh", "€/kWh", "GBP/kWh", "£/kWh", "USD/MWh",
)

# the SI unit readings are stored in, per quantity: (stored name, pint spelling)
_TARGETS = (
    ("m3/s", "m**3/s"), ("m", "m"), ("m3", "m**3"), ("Pa", "Pa"), ("W", "W"), ("J", "J"),
    ("degC", "degC"), ("m/s", "m/s"), ("1", "dimensionless"), ("W/m2", "W/m**2"),
    ("J/m2", "J/m**2"), ("Hz", "Hz"), ("s", "s"),
    ("EUR/MWh", "EUR/MWh"), ("GBP/MWh", "GBP/MWh"), ("USD/MWh", "USD/MWh"),
)
_REFUSED = {"c"}  # pint reads it as the speed of light; an operator meant something else
_SPELLINGS = (  # operator spelling -> pint spelling, applied in order
    (re.compile(r"(?<=[A-Za-z])([23])(?=$|[/*·\s)])"), r"**\1"),  # m3/h -> m**3/h
    (re.compile(r"\brpm\b"), "(1/min)"),  # revolutions, not radians, per minute
    (re.compile("³"), "**3"), (re.compile("²"), "**2"),
    (re.compile("€"), "EUR"), (re.compile("£"), "GBP"), (re.compile(r"\$"), "USD"),
)
_EXTRA_DEFINITIONS = (
    "EUR = [eur]", "cent_EUR = 0.01 EUR = ct", "GBP = [gbp]", "penny_GBP = 0.01 GBP = p_GBP",
    "USD = [usd]",
    "gpm = gallon / minute",
    "mca = meter_H2O",  # metros de columna de agua
)


@cache
def _registry():
    from fractions import Fraction

    import pint

    # exact arithmetic: factors are the correctly rounded floats (l/s -> 0.001, not 0.0010..02)
    reg = pint.UnitRegistry(cache_folder=None, non_int_type=Fraction,
                            autoconvert_offset_to_baseunit=True)
    for line in _EXTRA_DEFINITIONS:
        reg.define(line)
    return reg


@cache
def _dimensionality(spelling: str):
    from fractions import Fraction

    return _registry().Quantity(Fraction(1), spelling).dimensionality


def _pint_spelling(unit: str) -> str:
    text = unit.strip()
    for pattern, repl in _SPELLINGS:
        text = pattern.sub(repl, text)
    return text


@cache
def to_si(unit: str) -> tuple[str, float, float] | None:
    """(SI unit, factor, offset) for ``unit``, so that si = value * factor + offset;
    None if ``unit`` is unknown or measures something Tagus does not store."""
    if (not isinstance(unit, str) or not unit.strip() or len(unit) > 64
            or unit.strip() in _REFUSED):
        return None
    from fractions import Fraction

    import pint

    reg = _registry()
    try:
        one = reg.Quantity(Fraction(1), _pint_spelling(unit))
        for si_name, si_spelling in _TARGETS:
            if one.dimensionality == _dimensionality(si_spelling):
                break
        else:
            return None
        zero = reg.Quantity(Fraction(0), _pint_spelling(unit)).to(si_spelling).magnitude
        factor = one.to(si_spelling).magnitude - zero
    except (pint.errors.PintError, AttributeError, TypeError, ValueError, AssertionError,
            KeyError, SyntaxError, IndexError, ZeroDivisionError):
        return None
    return si_name, float(factor), float(zero)


def known_units() -> list[str]:
    return list(COMMON_UNITS)


def closest_units(unit: str, n: int = 3) -> list[str]:
    """The known spellings closest to ``unit`` (case-insensitive matches first)."""
    same = [u for u in COMMON_UNITS if u.lower() == str(unit).strip().lower()]
    near = difflib.get_close_matches(str(unit).strip(), COMMON_UNITS, n=n, cutoff=0.4)
    return list(dict.fromkeys(same + near))[:n]


def unit_problem(unit: str) -> str | None:
    """Why ``unit`` cannot be used (with the closest known units), or None if it can."""
    if to_si(unit) is not None:
        return None
    close = closest_units(unit)
    hint = f"; closest known: {', '.join(close)}" if close else ""
    return (f"unknown unit {unit!r} (units are case-sensitive: MW is not mW){hint}; "
            f"e.g. {', '.join(COMMON_UNITS[:12])}")
