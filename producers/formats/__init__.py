"""Parsers that turn a utility's files into readings, driven by a ``SourceMapping``."""
