"""The one-pass numeric column reader gives exactly what the per-cell reader gives."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.normalise.numbers import Numbers as _Numbers
from contracts.mapping import SourceMapping

MAPPING = SourceMapping.from_yaml(b"""
format: csv
delimiter: ";"
decimal: ","
thousands: "."
timestamp: {column: t, format: iso, timezone: UTC}
missing_values: ["#N/A", "-"]
sensors: {a: {id: a, unit: m}}
""")

number = st.builds(lambda i, f: f"{i},{f}", st.integers(-10**6, 10**6), st.integers(0, 999))
cell = st.one_of(number, number, number, st.sampled_from(
    ["", " 1,5", "#N/A", "-", "1.234,5", "12.34", "1e400", "abc", "3,", ",5", "1\n2"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(cell, min_size=1, max_size=30))
def test_fast_path_equals_cell_by_cell(cells):
    numbers = _Numbers(MAPPING)
    fast_v, fast_c = numbers.column(cells)
    slow_v, slow_c = numbers._column_cell_by_cell(cells)
    assert np.array_equal(fast_c, slow_c)
    assert np.array_equal(fast_v, slow_v, equal_nan=True)


def test_plain_numbers_take_the_fast_path():
    numbers = _Numbers(MAPPING)
    assert numbers._column_of_plain_numbers(["1,5", "1.234,25", "-3"]) is not None
    assert numbers._column_of_plain_numbers(["1,5", "#N/A"]) is None
