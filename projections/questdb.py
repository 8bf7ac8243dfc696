"""Small QuestDB helpers over its HTTP endpoint: run a fixed statement, wait for WAL.

For the project's own statements (DDL, counts, health).  Values supplied by users go
through the query API's bound parameters, never through string formatting here.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

from contracts.errors import TransientError

_TRANSIENT_CODES = (
    "SocketError", "CouldNotResolveAddr", "ConnectTimeout", "ServerInternalError",
    "FailoverRetry",
)


@dataclass(frozen=True)
class QuestDB:
    """Where QuestDB is.  ``auth`` = (user, password) for an external server, or None."""

    http_url: str
    auth: tuple[str, str] | None = None

    @property
    def ilp_conf(self) -> str:
        host = urllib.parse.urlparse(self.http_url)
        conf = f"http::addr={host.hostname}:{host.port};"
        if self.auth:
            conf += f"username={self.auth[0]};password={self.auth[1]};"
        return conf

    def exec(self, sql: str, timeout: float = 30.0) -> dict:
        """Run one statement; return QuestDB's JSON answer.  Failures raise TransientError."""
        url = f"{self.http_url}/exec?" + urllib.parse.urlencode({"query": sql})
        req = urllib.request.Request(url)
        if self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:
            body = e.read().decode(errors="replace")[:500]
            raise TransientError(f"QuestDB rejected `{sql[:160]}`: HTTP {e.code} {body}") from e
        except (urllib.error.URLError, OSError) as e:
            raise TransientError(f"QuestDB at {self.http_url} unreachable: {e}") from e

    def write_frame(self, table: str, df, *, symbols: list[str], at: str = "ts") -> None:
        """Write a DataFrame through the questdb client's dataframe path (ILP over HTTP).

        ``flush`` returns once QuestDB accepted the rows; they become visible to SQL when
        the WAL is applied (``wait_for_wal``).  Unreachable server -> TransientError;
        a data error is re-raised as is (the runner isolates the event that causes it).
        """
        from questdb import QuestDBError, Sender

        if df.empty:
            return
        try:
            # one flush per write (default auto-flush every 75k rows = many WAL commits)
            with Sender.from_conf(self.ilp_conf + "auto_flush_rows=500000;") as sender:
                sender.dataframe(df, table_name=table, symbols=symbols, at=at)
                sender.flush()
        except QuestDBError as e:
            if e.code.name in _TRANSIENT_CODES:
                raise TransientError(f"QuestDB unreachable writing {table}: {e}") from e
            raise

    def rows(self, sql: str) -> list[list]:
        return self.exec(sql)["dataset"]

    def wal_pending(self, table: str | None = None) -> dict[str, tuple[int, int, bool]]:
        """{table: (writerTxn, sequencerTxn, suspended)} for WAL tables not yet applied."""
        out = {}
        for name, suspended, writer, seq in self.rows(
            "select name, suspended, writerTxn, sequencerTxn from wal_tables()"
        ):
            if (table is None or name == table) and (writer != seq or suspended):
                out[name] = (writer, seq, suspended)
        return out

    def wait_for_wal(self, table: str | None = None, timeout_s: float = 60.0) -> None:
        """Block until every committed row of ``table`` (or all tables) is visible to SQL."""
        deadline = time.monotonic() + timeout_s
        while True:
            pending = self.wal_pending(table)
            suspended = [t for t, (_, _, s) in pending.items() if s]
            if suspended:
                raise TransientError(f"QuestDB WAL suspended for {suspended}: see its log, "
                                     "then `ALTER TABLE t RESUME WAL`")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TransientError(f"QuestDB WAL not applied within {timeout_s}s: {pending}")
            time.sleep(0.05)


class TableWriter:
    """A projection's sink for one table: create it explicitly, then write event frames.

    ``frame(events) -> DataFrame`` turns a batch into rows; ``symbols`` names the
    SYMBOL columns; ``ddl`` creates the table (with its DEDUP keys) if it is missing.
    """

    def __init__(self, db: QuestDB, table: str, ddl: str, frame, symbols: list[str]) -> None:
        self.db, self.table, self.ddl = db, table, ddl
        self.frame, self.symbols = frame, symbols

    def prepare(self) -> None:
        self.db.exec(self.ddl)

    def write(self, events) -> None:
        self.db.write_frame(self.table, self.frame(events), symbols=self.symbols)
