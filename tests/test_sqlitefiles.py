"""The service's SQLite files opened together on a fresh install (kktapp/sqlitefiles.py).

Several connections switching a new file to WAL at once get "database is locked" from SQLite
immediately, busy timeout or not; a loaded test run met it as a 500 on the first logins of four
clients at once (the login throttle's file). Every connection must open.
"""

from __future__ import annotations

import sqlite3
import threading

import pytest

from kktapp.sqlitefiles import connect_wal

ROUNDS = 100
THREADS = 8


def _open_together(path: str) -> list[BaseException]:
    errors: list[BaseException] = []
    barrier = threading.Barrier(THREADS)

    def one() -> None:
        barrier.wait()
        try:
            conn = connect_wal(path, timeout=10)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("COMMIT")
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return errors


def test_many_connections_switch_a_new_file_to_wal_at_once(tmp_path):
    for n in range(ROUNDS):
        path = str(tmp_path / f"fresh-{n}.sqlite3")
        assert _open_together(path) == []
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == THREADS
        finally:
            conn.close()


def test_other_errors_are_not_retried(tmp_path):
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        connect_wal(str(tmp_path / "missing-dir" / "x.sqlite3"), timeout=5)
