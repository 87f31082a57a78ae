"""Group commit: the write transactions of one process's threads share one SQLite commit.

Every durable change to the journal (``synchronous=FULL``) is a WAL write and an ``fdatasync``,
and SQLite lets one writer in at a time, so a process's writers take turns on one lock. With
64 registers each receipt's three changes queued behind everyone else's commits: a change waited
20 ms on average (p90 67 ms) for its turn, and each of those waits lay between two receipts of
a register (measured with the lock's waits timed during ``bench/bench_efficiency.py``).

Here a writer puts its change in the process's queue and takes the write lock; whoever gets the
lock runs every change queued by then in one transaction, each inside its own ``SAVEPOINT`` (a
change that raises is undone alone and its exception goes back to its own caller), commits once
and hands every caller its result. A caller returns only after the commit that holds its change,
as it did with a transaction of its own: what is on disk when, and in which order, is unchanged;
only the number of commits is smaller. Alone, a change runs without the savepoint.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

T = TypeVar("T")

#: A change: SQL statements on the connection it is given, inside a transaction it must not end.
Change = Callable[[sqlite3.Connection], T]


class _Queued(Generic[T]):
    """One caller's change and, once its group has committed (or failed), what it returns."""

    __slots__ = ("change", "settled", "value", "error")

    def __init__(self, change: Change[T]) -> None:
        self.change = change
        self.settled = False
        self.value: Any = None
        self.error: BaseException | None = None

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value


class GroupCommit:
    """One process's queue of durable changes to one SQLite file (see the module docstring).

    A change must not call back into anything that writes through the same queue: it runs
    while the write lock is held.
    """

    def __init__(self) -> None:
        self._queue: list[_Queued[Any]] = []
        self._queue_lock = threading.Lock()
        #: Commits made and changes they carried (the ratio is the average group).
        self.commits = 0
        self.changes = 0

    @property
    def queued(self) -> int:
        """Changes waiting for a commit now."""
        return len(self._queue)

    def run(self, lock: AbstractContextManager[Any], connection: Callable[[], sqlite3.Connection],
            change: Change[T]) -> T:
        """Run ``change`` in a committed transaction (its own or a group's); its return value or exception.

        ``lock`` is the process's write lock; ``connection`` gives this thread's connection,
        used when this thread commits the group.
        """
        item: _Queued[T] = _Queued(change)
        with self._queue_lock:
            self._queue.append(item)
        with lock:
            if not item.settled:
                # Ours is still queued, so no one has committed it: commit it and whatever
                # queued up behind the previous commit.
                with self._queue_lock:
                    group, self._queue = self._queue, []
                self._commit(connection, group)
        return item.outcome()

    def _commit(self, connection: Callable[[], sqlite3.Connection], group: list[_Queued[Any]]) -> None:
        conn: sqlite3.Connection | None = None
        try:
            # Inside: a connection that cannot be opened fails the group taken off the queue,
            # rather than leaving its callers with neither a result nor an error.
            conn = connection()
            conn.execute("BEGIN IMMEDIATE")
            if len(group) == 1:
                group[0].value = group[0].change(conn)
            else:
                for item in group:
                    self._apply(conn, item)
            conn.execute("COMMIT")
        except BaseException as exc:
            # Nothing of the group reached the disk: every caller gets the failure (a change
            # that had already failed keeps its own exception). An interrupt of this thread is
            # this thread's: the others get an error of their own.
            shared = exc if isinstance(exc, Exception) else sqlite3.OperationalError("journal write interrupted")
            for item in group:
                if item.error is None:
                    item.error = shared
            try:
                if conn is not None and conn.in_transaction:
                    conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is broken as well; SQLite undoes an unfinished transaction
            if shared is not exc:
                raise
        else:
            self.commits += 1
            self.changes += len(group)
        finally:
            for item in group:
                item.settled = True

    @staticmethod
    def _apply(conn: sqlite3.Connection, item: _Queued[Any]) -> None:
        conn.execute("SAVEPOINT change")
        try:
            item.value = item.change(conn)
        except Exception as exc:  # noqa: BLE001 - the change's own failure goes back to its caller
            conn.execute("ROLLBACK TO change")
            item.error = exc
        conn.execute("RELEASE change")
