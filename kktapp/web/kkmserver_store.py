"""KKM Server's ``IdCommand`` registry: which command, which body, which device, which final answer.

The device jobs themselves are keyed in the journal (``kkms:<IdCommand>``, one live job per
key), which is what makes a repeat never run twice. This registry adds what the journal cannot
know: the command name and body (a repeat with another body is refused, and ``GetRezult``
rebuilds the answer from them), the device the first request was routed to (NumDevice 0 may
pick another register next time) and the final answer, returned unchanged to every repeat and
to ``GetRezult`` — also after a restart, since it lives in SQLite next to the journal
(``<journal>-kkmserver.sqlite3``), shared by every process of the service.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from decimal import Decimal

from kktapp.sqlitefiles import connect_wal, write_transaction
from kktapp.web.compat import dumps

log = logging.getLogger(__name__)

#: Seconds between deletions of records older than the journal's retention.
PRUNE_INTERVAL = 3600.0


@dataclass(frozen=True)
class Record:
    """One IdCommand: the first request's command, body fingerprint, body and device; the final answer."""

    id_command: str
    command: str
    fingerprint: str
    body: dict
    device: int
    answer: dict | None


class CommandStore:
    """The registry in one SQLite file; each method is its own short transaction."""

    def __init__(self, path: str, retention_days: float = 30) -> None:
        self.path = path
        self.retention = float(retention_days) * 86400
        self._local = threading.local()
        self._pruned = 0.0
        conn = self._conn()
        conn.execute(
            "CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, command TEXT NOT NULL,"
            " fingerprint TEXT NOT NULL, body TEXT NOT NULL, device INTEGER NOT NULL, answer TEXT,"
            " created REAL NOT NULL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS commands_created ON commands(created)")

    def _conn(self) -> sqlite3.Connection:
        pid = os.getpid()
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != pid:
            # WAL as every process's first command opens the file: connect_wal's retry, not a 500.
            conn = connect_wal(self.path)
            # The answer a client was given must survive a power cut like the journal's own.
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn, self._local.pid = conn, pid
        return conn

    def claim(self, id_command: str, command: str, fingerprint: str, body: dict, device: int) -> tuple[Record, bool]:
        """Register a new IdCommand, or return the one already there; ``(record, created)``."""
        conn = self._conn()
        now = time.time()
        with write_transaction(conn):
            row = conn.execute("SELECT id, command, fingerprint, body, device, answer FROM commands WHERE id=?",
                               (id_command,)).fetchone()
            if row is None:
                conn.execute("INSERT INTO commands (id, command, fingerprint, body, device, created)"
                             " VALUES (?, ?, ?, ?, ?, ?)",
                             (id_command, command, fingerprint, dumps(body), device, now))
        self._prune(now)
        if row is None:
            return Record(id_command, command, fingerprint, body, device, None), True
        return _record(row), False

    def get(self, id_command: str) -> Record | None:
        """The record of an IdCommand, or None."""
        row = self._conn().execute("SELECT id, command, fingerprint, body, device, answer FROM commands WHERE id=?",
                                   (id_command,)).fetchone()
        return _record(row) if row else None

    def store_answer(self, id_command: str, answer: dict) -> dict:
        """Keep the first final answer for repeats and GetRezult; returns the one kept."""
        self._conn().execute("UPDATE commands SET answer=? WHERE id=? AND answer IS NULL", (dumps(answer), id_command))
        kept = self.get(id_command)
        return kept.answer if kept is not None and kept.answer is not None else answer

    def _prune(self, now: float) -> None:
        if now - self._pruned < PRUNE_INTERVAL:
            return
        self._pruned = now
        deleted = self._conn().execute("DELETE FROM commands WHERE created < ?", (now - self.retention,)).rowcount
        if deleted:
            log.info("KKM Server: удалено %d записей IdCommand старше %.0f дн.", deleted, self.retention / 86400)

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _loads(text: str) -> dict:
    # Money stays exact: fractions come back as Decimal, as the request body was parsed.
    return json.loads(text, parse_float=Decimal)


def _record(row: tuple) -> Record:
    return Record(row[0], row[1], row[2], _loads(row[3]), int(row[4]), _loads(row[5]) if row[5] else None)


def store_path(journal_path: str) -> str:
    """``/var/lib/kkt/journal.sqlite3`` → ``/var/lib/kkt/journal-kkmserver.sqlite3``."""
    root, ext = os.path.splitext(journal_path)
    return f"{root}-kkmserver{ext or '.sqlite3'}"
