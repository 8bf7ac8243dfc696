"""Trained models as content-addressed bytes.

An artefact is a JSON manifest (sorted keys, no NaN) compressed with zlib behind a magic
line; gradient-boosted trees travel inside it in LightGBM's text format.  Nothing in it
is executable: loading parses JSON and LightGBM text, never a pickle, so bytes from
elsewhere cannot run code.  ``load`` also checks the SHA-256 the caller looked the
bytes up by, so only Tagus's own recorded artefacts are used.

The same manifest always gives the same bytes (and hash).
"""

from __future__ import annotations

import hashlib
import json
import platform
import zlib
from typing import Any

MAGIC = b"TAGUS-FORECAST-MODEL/1\n"
FORMAT = "tagus.forecast.model/1"
LIBRARIES = ("numpy", "pandas", "lightgbm", "sktime", "statsmodels", "scikit-learn",
             "holidays", "pvlib")


class ArtefactError(ValueError):
    """Bytes that are not a Tagus forecast model, or not the one asked for."""


def content_hash(data: bytes) -> str:
    """SHA-256 of the bytes, lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def dump(manifest: dict[str, Any]) -> bytes:
    """Serialise a manifest deterministically (same manifest, same bytes)."""
    text = json.dumps({**manifest, "format": FORMAT}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)
    return MAGIC + zlib.compress(text.encode("utf-8"), 6)


def load(data: bytes, sha256: str | None = None) -> dict[str, Any]:
    """The manifest in ``data``; with ``sha256``, only if the bytes hash to it."""
    if sha256 is not None and content_hash(data) != sha256.lower():
        raise ArtefactError(f"artefact hash mismatch: expected {sha256}, found {content_hash(data)}")
    if not data.startswith(MAGIC):
        raise ArtefactError(f"not a Tagus forecast model: expected header {MAGIC!r}, "
                            f"found {data[:len(MAGIC)]!r}")
    try:
        manifest = json.loads(zlib.decompress(data[len(MAGIC):]).decode("utf-8"))
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtefactError(f"corrupt forecast model: {e}") from e
    if manifest.get("format") != FORMAT:
        raise ArtefactError(f"expected format {FORMAT}, found {manifest.get('format')!r}")
    return manifest


def library_versions() -> dict[str, str]:
    """Versions of Python and the libraries a model depends on ("absent" if not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out
