"""Numbers as a source writes them: decimal mark, thousands separator, missing markers.

``Numbers.column(cells)`` reads a column of cells (text, spreadsheet numbers, None) into
(float values, outcome codes: OK, IS_MISSING, IS_TEXT).  Pure.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import numpy as np

from contracts.mapping import SourceMapping
from processors.normalise.rules import IS_MISSING, IS_TEXT, OK

class Numbers:
    """Reads cells as floats in the file's notation (decimal mark, thousands separator)."""

    def __init__(self, m: SourceMapping) -> None:
        d, t = re.escape(m.decimal), m.thousands
        whole = r"\d+" if t is None else rf"(?:\d{{1,3}}(?:{re.escape(t)}\d{{3}})+|\d+)"
        num = rf"[+-]?(?:{whole}(?:{d}\d*)?|{d}\d+)(?:[eE][+-]?\d+)?"
        self._match = re.compile(num, re.ASCII).fullmatch
        self._match_all = re.compile(rf"(?:{num}\n)*{num}", re.ASCII).fullmatch
        self._decimal, self._thousands = m.decimal, t
        self._missing = frozenset(m.missing_values)
        # a missing-value marker that looks like a number ("-9999") needs the per-cell path
        self._fast = not any(self._match(x) for x in self._missing)

    def column(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        """(values, outcome codes) of a column of cells; a value is NaN unless its code is OK."""
        fast = self._column_of_plain_numbers(cells) if self._fast and cells else None
        return fast if fast is not None else self._column_cell_by_cell(cells)

    def _column_of_plain_numbers(self, cells: list) -> tuple[np.ndarray, np.ndarray] | None:
        """The common case in one regex pass: every cell is number text, nothing else
        (no blanks, markers, spaces or spreadsheet numbers); None otherwise."""
        try:
            text = "\n".join(cells)
        except TypeError:  # spreadsheet numbers or empty cells: not plain text
            return None
        if text.count("\n") != len(cells) - 1 or not self._match_all(text):
            return None
        if self._thousands:
            text = text.replace(self._thousands, "")
        if self._decimal != ".":
            text = text.replace(self._decimal, ".")
        values = np.fromiter(map(float, text.split("\n")), dtype=np.float64, count=len(cells))
        outcome = np.full(len(cells), OK, dtype=np.int8)
        outcome[~np.isfinite(values)] = IS_TEXT
        return values, outcome

    def _column_cell_by_cell(self, cells: list) -> tuple[np.ndarray, np.ndarray]:
        values: list[float] = []
        codes: list[int] = []
        match, markers = self._match, self._missing
        thousands, decimal = self._thousands, self._decimal
        nan = math.nan
        for cell in cells:
            kind = type(cell)
            if kind is str:
                text = cell.strip()
                if not text or text in markers:
                    values.append(nan)
                    codes.append(IS_MISSING)
                elif match(text) is None:
                    values.append(nan)
                    codes.append(IS_TEXT)
                else:
                    if thousands:
                        text = text.replace(thousands, "")
                    values.append(float(text.replace(decimal, ".")))
                    codes.append(OK)
            elif kind is float or kind is int:
                values.append(cell)
                codes.append(OK)
            else:
                values.append(nan)
                codes.append(IS_MISSING if cell is None else IS_TEXT)
        array, outcome = np.array(values, dtype=np.float64), np.array(codes, dtype=np.int8)
        outcome[(outcome == OK) & ~np.isfinite(array)] = IS_TEXT
        return array, outcome

    def one(self, cell: Any) -> float | None:
        values, codes = self.column([cell])
        return float(values[0]) if codes[0] == OK else None


def cell_text(cell: Any) -> str:
    """A cell as stripped text; spreadsheet numbers that are whole print without '.0'."""
    if isinstance(cell, str):
        return cell.strip()
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    return str(cell)


def stamp_text(stamp: tuple | None) -> str:
    """The timestamp cells of a row as one text (for rejection messages)."""
    return " ".join(cell_text(c) for c in stamp or ())


def is_blank(cells: Iterable[Any]) -> bool:
    for c in cells:
        if c is not None and (type(c) is not str or c.strip()):
            return False
    return True
