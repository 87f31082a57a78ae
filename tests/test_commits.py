"""Group commit (kktapp/commits.py): changes queued together share one commit, and each keeps its own fate."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest
from fakes import in_threads

from kktapp.commits import GroupCommit
from kktapp.sqlitefiles import connect_wal


@pytest.fixture()
def db(tmp_path):
    path = str(tmp_path / "t.sqlite3")
    conn = connect_wal(path)
    conn.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INTEGER)")
    conn.close()
    local = threading.local()

    def connection() -> sqlite3.Connection:
        if not hasattr(local, "conn"):
            local.conn = connect_wal(path)
        return local.conn

    return path, connection


def rows(path: str) -> dict[str, int]:
    conn = sqlite3.connect(path)
    try:
        return dict(conn.execute("SELECT k, v FROM t").fetchall())
    finally:
        conn.close()


def insert(key: str, value: int):
    def change(conn: sqlite3.Connection) -> int:
        return conn.execute("INSERT INTO t (k, v) VALUES (?, ?)", (key, value)).lastrowid

    return change


def queued_while_locked(commits: GroupCommit, lock: threading.Lock, connection, changes) -> list[object]:
    """Run each change in its own thread while ``lock`` is held, then release it: one group."""
    outcomes: list[object] = [None] * len(changes)

    def call(i: int) -> None:
        try:
            outcomes[i] = commits.run(lock, connection, changes[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcomes[i] = exc

    with lock:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(len(changes))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while commits.queued < len(changes):
            assert time.monotonic() < deadline, "the changes did not queue"
            time.sleep(0.001)
    for t in threads:
        t.join(10)
    return outcomes


def test_changes_queued_together_share_one_commit_and_a_failing_one_is_undone_alone(db):
    path, connection = db
    commits, lock = GroupCommit(), threading.Lock()
    duplicate = insert("a", 99)  # same key as the first: the PRIMARY KEY refuses it
    outcomes = queued_while_locked(commits, lock, connection, [insert("a", 1), duplicate, insert("c", 3)])
    assert commits.commits == 1 and commits.changes == 3
    errors = [o for o in outcomes if isinstance(o, Exception)]
    # Whichever of the two "a" inserts ran first in the group stands; the other alone fails.
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.IntegrityError)
    assert set(rows(path)) == {"a", "c"} and rows(path)["c"] == 3


def test_a_change_that_raises_its_own_error_leaves_the_others_committed(db):
    path, connection = db

    def refuse(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (k, v) VALUES ('x', 0)")
        raise LookupError("refused after writing")  # e.g. a queue limit found inside the change

    commits, lock = GroupCommit(), threading.Lock()
    outcomes = queued_while_locked(commits, lock, connection, [insert("a", 1), refuse, insert("b", 2)])
    assert isinstance(outcomes[1], LookupError)
    assert rows(path) == {"a": 1, "b": 2}  # the refused change's own row is undone


def test_a_failed_commit_fails_every_change_of_the_group_and_leaves_nothing(db):
    path, connection = db

    class CommitFails:
        """A connection whose COMMIT fails (a full disk, an I/O error)."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *args):
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk I/O error")
            return self.conn.execute(sql, *args)

        @property
        def in_transaction(self) -> bool:
            return self.conn.in_transaction

    commits, lock = GroupCommit(), threading.Lock()
    outcomes = queued_while_locked(commits, lock, lambda: CommitFails(connection()),
                                   [insert("a", 1), insert("b", 2)])
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    assert rows(path) == {} and commits.commits == 0
    # The queue goes on: the next change commits.
    assert commits.run(lock, connection, insert("c", 3)) is not None
    assert rows(path) == {"c": 3}


def test_a_connection_that_cannot_be_opened_fails_the_group_and_leaves_nothing_queued(db):
    path, connection = db
    commits, lock = GroupCommit(), threading.Lock()

    calls: list[int] = []

    def unopenable_once() -> sqlite3.Connection:
        # Whoever commits the group first cannot open the file; later attempts could.
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("unable to open database file")
        return connection()

    outcomes = queued_while_locked(commits, lock, unopenable_once, [insert("a", 1), insert("b", 2)])
    assert all(isinstance(o, sqlite3.OperationalError) for o in outcomes)
    # Nothing of the failed group runs later with someone else's commit.
    assert commits.queued == 0
    commits.run(lock, connection, insert("c", 3))
    assert rows(path) == {"c": 3}


def test_alone_a_change_returns_its_value_and_its_exception(db):
    path, connection = db
    commits, lock = GroupCommit(), threading.Lock()
    assert commits.run(lock, connection, lambda conn: conn.execute("INSERT INTO t VALUES ('a', 1)").rowcount) == 1
    with pytest.raises(sqlite3.IntegrityError):
        commits.run(lock, connection, insert("a", 2))
    assert rows(path) == {"a": 1} and commits.commits == 1 and commits.changes == 1


def test_many_threads_every_change_lands(db):
    path, connection = db
    commits, lock = GroupCommit(), threading.Lock()

    def writer(n: int) -> None:
        for i in range(40):
            commits.run(lock, connection, insert(f"{n}-{i}", i))

    assert not in_threads(writer, 12)
    assert len(rows(path)) == 12 * 40 == commits.changes
