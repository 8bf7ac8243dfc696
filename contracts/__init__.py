"""Event contracts: frozen, tagged msgspec Structs, one module per event family.

See ``contracts/VERSIONING.md`` for the rules that keep old events readable.
"""
