"""Records of a CSV/TXT or XLSX file: (1-based row, cells, complete), lazily.

CSV is decoded and split incrementally: memory is bounded by one line (``limit``
characters) and one block, never by the file size.  XLSX is read whole (calamine).
Whole-file problems raise ``UnparseableFile``.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
from collections.abc import Iterator
from typing import Any, BinaryIO

from python_calamine import CalamineError, CalamineWorkbook

from contracts.errors import ContractError
from contracts.mapping import SourceMapping
from processors.normalise.numbers import cell_text, is_blank

_BLOCK = 1 << 16

Record = tuple[int, list, bool]  # (1-based row in the file, cells, complete)


class UnparseableFile(ContractError):
    """The file as a whole cannot be read with its mapping; the message says what was expected."""


class Lines:
    """Decoded text lines of a byte stream, counted, none longer than ``limit`` characters."""

    def __init__(self, head: bytes, stream: BinaryIO, encoding: str, limit: int) -> None:
        self._head, self._stream, self._encoding, self._limit = head, stream, encoding, limit
        self.count = 0
        self.unterminated = False

    def __iter__(self) -> Iterator[str]:
        codec = "utf-8-sig" if codecs.lookup(self._encoding).name == "utf-8" else self._encoding
        decoder = codecs.getincrementaldecoder(codec)(errors="strict")
        buf, block = "", self._head
        while True:
            final = not block
            try:
                buf += decoder.decode(block, final)
            except UnicodeDecodeError as exc:
                bad = exc.object[exc.start:exc.start + 4]
                guess = ("UTF-16 text (it starts with a UTF-16 byte-order mark)"
                         if self._head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
                         else "a binary file, or text in another encoding")
                line = self.count + 1 + exc.object[:exc.start].count(b"\n")
                raise UnparseableFile(
                    f"line {line}: bytes {bad!r} are not valid "
                    f"{self._encoding} (mapping says encoding {self._encoding!r}): {guess}?"
                ) from None
            start = 0
            while (end := buf.find("\n", start)) >= 0:
                yield self._checked(buf[start:end + 1])
                start = end + 1
            buf = buf[start:]
            if len(buf) > self._limit:
                self._checked(buf)
            if final:
                break
            block = self._stream.read(_BLOCK) or b""
        if buf:
            self.unterminated = True
            yield self._checked(buf)

    def _checked(self, line: str) -> str:
        self.count += 1
        if len(line) > self._limit:
            raise UnparseableFile(f"line {self.count} is longer than {self._limit} characters: "
                                  f"expected delimited text lines (a binary file?)")
        if "\x00" in line:
            raise UnparseableFile(f"line {self.count} contains NUL characters: a binary file, or "
                                  f"UTF-16 text (mapping says encoding {self._encoding!r})?")
        return line


def csv_records(head: bytes, stream: BinaryIO, m: SourceMapping, limit: int) -> Iterator[Record]:
    lines = Lines(head, stream, m.encoding, limit)
    reader = csv.reader(lines, delimiter=m.delimiter, quotechar=m.quotechar)
    start = 1
    try:
        for cells in reader:
            yield start, cells, not (lines.unterminated and m.require_final_newline)
            start = lines.count + 1
    except csv.Error as exc:
        why = ("a bare carriage return inside a field: expected LF or CRLF line ends (old Mac "
               "file?)" if "new-line character" in str(exc) else str(exc))
        raise UnparseableFile(f"line {lines.count}: {why} (delimiter {m.delimiter!r}, "
                              f"quote {m.quotechar!r})") from None


def book_records(data: bytes, m: SourceMapping) -> Iterator[Record]:
    """Rows of the mapped sheet, numbered as the spreadsheet numbers them (1-based)."""
    book = _calamine(CalamineWorkbook.from_filelike, io.BytesIO(data))
    names = book.sheet_names
    if isinstance(m.sheet, str) and m.sheet not in names:
        raise UnparseableFile(f"mapping asks for sheet {m.sheet!r}, workbook has {names}")
    if not isinstance(m.sheet, str) and (m.sheet or 0) >= len(names):
        raise UnparseableFile(f"mapping asks for sheet index {m.sheet or 0}, workbook has {names}")
    sheet = (_calamine(book.get_sheet_by_name, m.sheet) if isinstance(m.sheet, str)
             else _calamine(book.get_sheet_by_index, m.sheet or 0))
    rows = _calamine(sheet.to_python, skip_empty_area=False)
    for i, cells in enumerate(rows):
        yield i + 1, cells, True


def _calamine(call: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return call(*args, **kwargs)
    except (CalamineError, ValueError, IndexError, OSError) as exc:
        found = " ".join(str(exc).split())
        raise UnparseableFile(f"cannot read the workbook ({found}): expected a complete "
                              f"xlsx/xls/ods file (truncated upload?)") from None


def split_header(records: Iterator[Record], m: SourceMapping
                  ) -> tuple[list[str], Iterator[Record]]:
    it = iter(records)
    if m.header_row is None:
        for rec in it:
            if not is_blank(rec[1]):
                return [str(i) for i in range(len(rec[1]))], itertools.chain([rec], it)
        raise UnparseableFile("file has no rows: expected data rows")
    for row, cells, _ in it:
        if row - 1 >= m.header_row:
            break
    else:
        raise UnparseableFile(f"file ends before its header: expected column names on row "
                              f"{m.header_row + 1}")
    header = [cell_text(c) for c in cells]
    if header:
        header[0] = header[0].lstrip("\ufeff")
    for _ in itertools.islice(it, m.skip_rows):
        pass
    return header, it


# ---------------------------------------------------------------- the parser
