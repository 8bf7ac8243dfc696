"""IMAP responses as data: the FETCH items of a message and its MIME parts (pure).

``imaplib`` hands a FETCH answer over as a list of ``bytes`` and ``(text, literal)``
tuples; ``fetch_items`` turns it into ``{uid: {"BODYSTRUCTURE": [...], ...}}`` (atoms
and strings as ``bytes``, ``NIL`` as None, parenthesised lists as lists).  ``parts``
walks a BODYSTRUCTURE (RFC 3501 section 7.4.2) into the leaf parts with their section
numbers (``2``, ``3.1``), so a part can be fetched on its own, in slices, without the
rest of the message.
"""

from __future__ import annotations

import email.header
import email.utils
import itertools
import re
from dataclasses import dataclass
from typing import Any

_LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")
_SPECIAL = b" ()\"{"


class WireError(ValueError):
    """An answer that does not parse as IMAP."""


class _Literal(bytes):
    """A literal's bytes (never NIL, never an atom)."""


def _tokens(data: list) -> list:
    out: list = []
    for item in data:
        if isinstance(item, tuple):
            text, literal = item
            m = _LITERAL_AT_END.search(text.rstrip())
            if m is None:
                raise WireError(f"expected a literal marker at the end of {text[-40:]!r}")
            out += _scan(text.rstrip()[:m.start()])
            out.append(_Literal(literal))
        elif isinstance(item, bytes):
            out += _scan(item)
    return out


def _scan(text: bytes) -> list:
    out: list = []
    i, n = 0, len(text)
    while i < n:
        c = text[i:i + 1]
        if c in (b" ", b"\r", b"\n"):
            i += 1
        elif c in (b"(", b")"):
            out.append(c)
            i += 1
        elif c == b'"':
            j, buf = i + 1, bytearray()
            while j < n and text[j:j + 1] != b'"':
                if text[j:j + 1] == b"\\":
                    j += 1
                buf += text[j:j + 1]
                j += 1
            if j >= n:
                raise WireError(f"unterminated string in {text[i:i + 60]!r}")
            out.append(_Literal(buf))
            i = j + 1
        else:
            j = i
            while j < n and text[j:j + 1] not in _SPECIAL:
                if text[j:j + 1] == b"[":  # BODY[HEADER.FIELDS (FROM)]: one atom
                    close = text.find(b"]", j)
                    j = n if close < 0 else close
                j += 1
            atom = text[i:j]
            out.append(None if atom.upper() == b"NIL" else atom)
            i = j
    return out


def _nest(tokens: list) -> list:
    stack: list[list] = [[]]
    for t in tokens:
        if t == b"(" and not isinstance(t, _Literal):
            stack.append([])
        elif t == b")" and not isinstance(t, _Literal):
            if len(stack) == 1:
                raise WireError("unbalanced ')' in a FETCH answer")
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(bytes(t) if isinstance(t, _Literal) else t)
    if len(stack) != 1:
        raise WireError("unbalanced '(' in a FETCH answer")
    return stack[0]


def fetch_items(data: list) -> dict[int, dict[str, Any]]:
    """``{uid: {ITEM: value}}`` of a ``UID FETCH`` answer (item names upper-case;
    ``BODY[2]<0>`` stays as the server wrote it)."""
    flat = _nest(_tokens([d for d in data if d is not None]))
    out: dict[int, dict[str, Any]] = {}
    i = 0
    while i + 1 < len(flat):
        seq, items = flat[i], flat[i + 1]
        i += 2
        if not isinstance(items, list) or not isinstance(seq, bytes):
            raise WireError(f"expected 'n (items...)' in a FETCH answer, got {seq!r}")
        fields = {bytes(items[k]).decode("ascii", "replace").upper(): items[k + 1]
                  for k in range(0, len(items) - 1, 2)}
        uid = fields.get("UID")
        if uid is not None:
            out[int(uid)] = fields
    return out


@dataclass(frozen=True)
class Part:
    """A leaf MIME part: ``section`` for ``BODY.PEEK[section]``, ``size`` in encoded
    octets as the server counts them, ``filename`` decoded (None: not named)."""

    section: str
    mime_type: str
    encoding: str
    size: int
    filename: str | None
    disposition: str | None

    @property
    def is_attachment(self) -> bool:
        return self.filename is not None or self.disposition == "attachment"


def parts(structure: list) -> list[Part]:
    """The leaf parts of a BODYSTRUCTURE, in order (embedded messages walked into)."""
    out: list[Part] = []
    _walk(structure, "", out)
    return out


def _walk(body: list, prefix: str, out: list[Part]) -> None:
    if body and isinstance(body[0], list):  # multipart: the children, then the subtype
        children = list(itertools.takewhile(lambda b: isinstance(b, list), body))
        for i, child in enumerate(children, start=1):
            _walk(child, f"{prefix}.{i}" if prefix else str(i), out)
        return
    section = prefix or "1"
    mime = f"{_s(body[0])}/{_s(body[1])}".lower()
    params = _pairs(body[2])
    encoding = _s(body[5]).lower() or "7bit"
    size = int(body[6] or 0)
    # the index of body-fld-md5, the disposition follows it
    ext = 8 if mime.startswith("text/") else 10 if mime == "message/rfc822" else 7
    disposition, dparams = None, {}
    if len(body) > ext + 1 and isinstance(body[ext + 1], list) and body[ext + 1]:
        disposition = _s(body[ext + 1][0]).lower() or None
        dparams = _pairs(body[ext + 1][1]) if len(body[ext + 1]) > 1 else {}
    filename = _filename(dparams, "filename") or _filename(params, "name")
    inner = body[8] if mime == "message/rfc822" and len(body) > 8 else None
    if isinstance(inner, list) and inner and filename is None:
        # a forwarded message: its parts are n.1, n.2... (a single-part body is n.1)
        _walk(inner, section if isinstance(inner[0], list) else f"{section}.1", out)
        return
    out.append(Part(section, mime, encoding, size, filename, disposition))


def _s(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else ""


def _pairs(v: Any) -> dict[str, str]:
    if not isinstance(v, list):
        return {}
    return {_s(v[i]).lower(): _s(v[i + 1]) for i in range(0, len(v) - 1, 2)}


def _filename(params: dict[str, str], key: str) -> str | None:
    """A parameter's value, RFC 2231 (``key*``, ``key*0*``...) and RFC 2047 decoded, with
    any path dropped (a name, never a place)."""
    pieces = [(k, v) for k, v in params.items() if k == key or k.startswith(key + "*")]
    if not pieces:
        return None
    decoded = dict(email.utils.decode_params([("x", ""), *pieces])[1:])
    value = decoded.get(key)
    if value is None:
        return None
    text = email.utils.unquote(email.utils.collapse_rfc2231_value(value))
    try:
        text = str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        pass
    name = text.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name[:255] or None
