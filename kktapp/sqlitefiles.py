"""Opening the service's SQLite files (journal, exchange, login throttle) the one way they are opened.

WAL, a busy timeout, and the switch to WAL retried: SQLite answers "database is locked" at once,
without waiting for the busy timeout, when several connections switch a new file to WAL at the
same moment (a lock upgrade that could deadlock is refused rather than waited for). That is the
first requests of a fresh install arriving together, or two workers starting at once; it was a
500 on a receipt. Once the file is in WAL the pragma is a plain read and never waits.
"""

from __future__ import annotations

import sqlite3
import time

#: Seconds a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT = 30.0
#: Pause between attempts to switch a file to WAL while another connection does the same.
_WAL_RETRY = 0.01


def connect_wal(path: str, *, timeout: float = BUSY_TIMEOUT) -> sqlite3.Connection:
    """An autocommit connection (any thread may use it) to ``path`` in WAL mode."""
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
