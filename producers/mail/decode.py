"""Content-Transfer-Encoding undone slice by slice (pure): an attachment is fetched in
slices of its encoded text and written out decoded, never held whole."""

from __future__ import annotations

import binascii

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_B64_OR_PAD = bytes(c for c in range(256) if c not in _B64 + b"=")
IDENTITY = ("7bit", "8bit", "binary")


class UnsupportedEncoding(ValueError):
    """A Content-Transfer-Encoding this decoder does not know (e.g. x-uuencode)."""


class Decoder:
    """``feed(encoded) -> decoded`` for each slice in order, then ``finish()``."""

    def __init__(self, encoding: str) -> None:
        encoding = encoding.lower()
        if encoding not in (*IDENTITY, "base64", "quoted-printable"):
            raise UnsupportedEncoding(f"Content-Transfer-Encoding {encoding!r}; known: "
                                      f"base64, quoted-printable, {', '.join(IDENTITY)}")
        self.encoding = encoding
        self._rest = b""

    def feed(self, data: bytes) -> bytes:
        if self.encoding == "base64":
            text = self._rest + data.translate(None, _NOT_B64_OR_PAD)
            end = text.find(b"=")
            if end >= 0:  # padding ends the data: what follows is not base64 (RFC 2045)
                text = text[:end]
                self.encoding, self._rest = "base64-ended", b""
                return _b64_tail(text)
            cut = len(text) - len(text) % 4
            self._rest = text[cut:]
            return binascii.a2b_base64(text[:cut]) if cut else b""
        if self.encoding == "base64-ended":
            return b""
        if self.encoding == "quoted-printable":
            text = self._rest + data
            cut = text.rfind(b"\n") + 1  # soft breaks ('=' CRLF) stay within a line
            self._rest = text[cut:]
            return binascii.a2b_qp(text[:cut]) if cut else b""
        return data

    def finish(self) -> bytes:
        rest, self._rest = self._rest, b""
        if self.encoding == "base64" and rest:
            return _b64_tail(rest)
        if self.encoding == "quoted-printable" and rest:
            return binascii.a2b_qp(rest)
        return b""


def decoded_estimate(encoding: str, size: int) -> int:
    """The decoded size of a part the server announces as ``size`` encoded octets, as
    common encoders write it: base64 in lines of 64 characters or more (48 bytes per 66
    octets with CRLF; 76-character lines give a little more), quoted-printable at least
    a third (each byte at most ``=XX``), identity as is; 0 for an unknown encoding.  A
    part estimated over a limit is refused without being read; the exact limit is
    checked while reading (``ImapSession.download``)."""
    encoding = encoding.lower()
    if encoding == "base64":
        return size * 48 // 66
    if encoding == "quoted-printable":
        return size // 3
    return size if encoding in IDENTITY else 0


def _b64_tail(text: bytes) -> bytes:
    """The last characters of base64 data, padded (2 or 3 left: an unpadded end)."""
    if len(text) % 4 == 1:
        raise binascii.Error("base64 data ends with a single character")
    return binascii.a2b_base64(text + b"=" * (-len(text) % 4)) if text else b""
