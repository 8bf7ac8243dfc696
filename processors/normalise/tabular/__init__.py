"""CSV/TXT and XLSX files -> SI readings, as the tenant's mapping says."""

from processors.normalise.rules import ParsedChunk, summarise
from processors.normalise.tabular.parser import MAX_LINE_CHARS, parse_tabular
from processors.normalise.tabular.records import UnparseableFile

__all__ = ["MAX_LINE_CHARS", "ParsedChunk", "UnparseableFile", "parse_tabular", "summarise"]
