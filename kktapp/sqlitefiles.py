"""The service's SQLite files (journal, exchange, login throttle, the compat segments, the KKM Server
command registry): the one way they are opened, a write transaction, a column added to a table.

A new file is created 0640 before SQLite opens it (files.py: they hold buyers' data). WAL, a busy
timeout, and the switch to WAL retried: SQLite answers "database is locked" at once,
without waiting for the busy timeout, when several connections switch a new file to WAL at the
same moment (a lock upgrade that could deadlock is refused rather than waited for). That is the
first requests of a fresh install arriving together, or two workers starting at once; it was a
500 on a receipt. Once the file is in WAL the pragma is a plain read and never waits.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

from .files import create_private_file

#: Seconds a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT = 30.0
#: Pause between attempts to switch a file to WAL while another connection does the same.
_WAL_RETRY = 0.01


def connect_wal(path: str, *, timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """An autocommit connection (any thread may use it) to ``path`` in WAL mode; a new file is
    created private (FILE_MODE, see :mod:`.files`), and SQLite gives its -wal and -shm that mode."""
    if path and path != ":memory:":
        try:
            create_private_file(path)
        except OSError:
            pass  # a missing directory, say: SQLite's own error says it below
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        deadline = time.monotonic() + timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                return conn
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            time.sleep(_WAL_RETRY)
    except BaseException:
        conn.close()
        raise


def add_column(conn: sqlite3.Connection, table: str, definition: str) -> None:
    """``ALTER TABLE table ADD COLUMN definition`` unless the column exists (steps may rerun).

    Check and change are two statements: run it inside a write transaction (``BEGIN IMMEDIATE``)
    when another process may open the same file at the same moment, or both may find the column
    missing and the second ALTER fails ("duplicate column name").
    """
    name = definition.split()[0]
    if name not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {definition}")


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` on an autocommit connection, rolled back on any exception.

    IMMEDIATE: the write lock is taken at the start, so what the body reads cannot be changed by
    another process before it writes. The body may ``COMMIT`` itself before it raises (what it
    wrote then stands) or returns.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        if conn.in_transaction:
            conn.execute("COMMIT")
    except BaseException:
        # A COMMIT that failed (a full disk) leaves the transaction open: undo it as well.
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
