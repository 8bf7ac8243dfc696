"""The wire formats of the push doors, shared by the adapters and the normalise processor.

The intake adapters check a body cheaply before storing it (and answer 400 at once);
the normalise processor parses the stored bytes later.  Both read the same rules here.

- Line protocol timestamps: ``precision`` as InfluxDB v2 (ns, us, ms, s) or v1
  (n, u, ms, s, m, h) spells it.
- JSON push: an object with a ``readings`` list and/or a ``series`` list.
"""

from __future__ import annotations

import msgspec

from contracts.errors import ContractError

_PRECISION_ALIASES = {"ns": "ns", "n": "ns", "us": "us", "u": "us", "µs": "us", "ms": "ms",
                      "s": "s", "m": "m", "h": "h"}
PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                "m": 60_000_000_000, "h": 3_600_000_000_000}


def normalise_precision(precision: str | None, *, default: str = "ns") -> str:
    """Canonical precision (ns, us, ms, s, m, h); ContractError if unknown."""
    if precision is None or precision == "":
        precision = default
    try:
        return _PRECISION_ALIASES[precision]
    except KeyError:
        raise ContractError(
            f"precision must be one of ns, us, ms, s (v1: n, u, ms, s, m, h); got {precision!r}"
        ) from None


class PushBody(msgspec.Struct):
    """The envelope of a JSON push body; items stay raw until the processor reads them."""

    readings: list[msgspec.Raw] | None = None
    series: list[msgspec.Raw] | None = None


_body_decoder = msgspec.json.Decoder(PushBody)


def decode_push_body(body: bytes) -> PushBody:
    """The envelope; ContractError if ``body`` is not a JSON push body."""
    try:
        doc = _body_decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"expected a JSON object with a 'readings' or 'series' list: {e}") \
            from None
    if doc.readings is None and doc.series is None:
        raise ContractError("expected a JSON object with a 'readings' or 'series' list; "
                            "found neither")
    return doc


def check_push_shape(body: bytes) -> int:
    """Number of items in a JSON push body; ContractError if it is not one.

    Cheap: checks the JSON syntax and the envelope, not the items.
    """
    doc = decode_push_body(body)
    return len(doc.readings or ()) + len(doc.series or ())
