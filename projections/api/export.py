"""CSV exports that never pin a database connection to a slow client.

``spool_csv`` runs the query to the end into a spooled buffer (memory up to
``export_memory_bytes``, then a temporary file) while the request holds its database
session; the connection goes back to the pool before the first byte is sent.  A
failure while querying therefore still answers a JSON error, never a 200.

``SpooledCsv`` then sends the buffer at the client's pace, with ``Content-Length``.

The body, and how a client knows it is complete::

    ts,value
    2024-03-01T00:00:00Z,0.41
    ...
    # end: 1440 rows

The last line ``# end: N rows`` is written only when every row was read; ``N`` counts
the data lines (header and this line excluded).  A raw export cut by ``limit`` says so:
``# end: N rows (limit N reached: ...)``.  If sending fails midway, the connection is
closed before ``Content-Length`` bytes were sent, so HTTP clients report an incomplete
transfer (curl: "transfer closed with N bytes remaining", exit 18), and a partial file
lacks the end line.  Readers that do not want it: ``pandas.read_csv(url, comment="#")``.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Iterator

from starlette.responses import Response

from projections.api import queries

HEADER = b"ts,value\n"
CHUNK_BYTES = 64 * 1024
PAGE_ROWS = 10_000


class Spool:
    """A finished export: its bytes (header to end line), their size and row count."""

    def __init__(self, memory_bytes: int) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=memory_bytes, mode="w+b")
        self.size = 0
        self.rows = 0

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(0)
        while chunk := self.file.read(CHUNK_BYTES):
            yield chunk

    def close(self) -> None:
        self.file.close()


async def spool_csv(conn, tenant: str, q: queries.RangeQuery, memory_bytes: int) -> Spool:
    """The whole export of ``q`` in a ``Spool`` (closed again if the query fails)."""
    spool = Spool(memory_bytes)
    cut = False
    try:
        spool.write(HEADER)
        async for page in queries.readings_pages(conn, tenant, q, PAGE_ROWS):
            if q.bucket is None and spool.rows + len(page) > q.limit:
                page, cut = page[:q.limit - spool.rows], True
            spool.write(queries.csv_lines(page).encode())
            spool.rows += len(page)
        note = (f" (limit {q.limit} reached: later rows left out; narrow the range or "
                "raise limit)") if cut else ""
        spool.write(f"# end: {spool.rows} rows{note}\n".encode())
    except BaseException:
        spool.close()
        raise
    return spool


class SpooledCsv(Response):
    """Sends a ``Spool`` with ``Content-Length``; closes it and calls ``on_close`` at the
    end, whether the client read it all, went away or stalled past ``stall_timeout_s``
    (then the connection is dropped mid-body: an incomplete transfer)."""

    media_type = "text/csv; charset=utf-8"

    def __init__(self, spool: Spool, filename: str, on_close: Callable[[], None],
                 stall_timeout_s: float) -> None:
        self.spool, self.on_close, self.stall_timeout_s = spool, on_close, stall_timeout_s
        self.status_code = 200
        self.background = None
        self.init_headers({"Content-Disposition": f'attachment; filename="{filename}"',
                           "Content-Length": str(spool.size)})

    async def __call__(self, scope, receive, send) -> None:
        try:
            await send({"type": "http.response.start", "status": self.status_code,
                        "headers": self.raw_headers})
            for chunk in self.spool.chunks():
                async with asyncio.timeout(self.stall_timeout_s):
                    await send({"type": "http.response.body", "body": chunk,
                                "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.spool.close()
            self.on_close()
