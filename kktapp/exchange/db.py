"""The exchange's own SQLite file beside the journal: catalogue, Z reports, exported shifts, status.

A separate file (``<journal>.exchange.sqlite3``) rather than tables in the journal: the journal's
schema and versioning stay the journal's business, and the exchange can be switched off or its
file removed (the catalogue reloads from the next full goods export) without touching receipts.
Like the journal: WAL so every process reads while one writes, ``synchronous=FULL`` because
"this shift is exported" must survive a power cut, one connection per thread and process.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from ..sqlitefiles import connect_wal, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS goods (
    store       TEXT NOT NULL,
    code        TEXT NOT NULL,
    name        TEXT NOT NULL,
    short_name  TEXT NOT NULL DEFAULT '',
    barcode     TEXT NOT NULL DEFAULT '',
    price       INTEGER NOT NULL DEFAULT 0,          -- kopecks
    weighted    INTEGER NOT NULL DEFAULT 0,
    is_group    INTEGER NOT NULL DEFAULT 0,
    parent      TEXT NOT NULL DEFAULT '',
    article     TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (store, code)
);
CREATE INDEX IF NOT EXISTS goods_barcode ON goods(store, barcode) WHERE barcode != '';
CREATE TABLE IF NOT EXISTS barcodes (
    store       TEXT NOT NULL,
    barcode     TEXT NOT NULL,
    code        TEXT NOT NULL,
    name        TEXT NOT NULL DEFAULT '',
    price       INTEGER NOT NULL DEFAULT 0,          -- kopecks; 0 = goods price × coefficient
    coefficient TEXT NOT NULL DEFAULT '1',
    PRIMARY KEY (store, barcode)
);
CREATE TABLE IF NOT EXISTS loads (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    store       TEXT NOT NULL,
    path        TEXT NOT NULL,
    command     TEXT NOT NULL,
    goods       INTEGER NOT NULL,
    barcodes    INTEGER NOT NULL,
    loaded_at   REAL NOT NULL
);
-- The goods file each store's catalogue last took in, by content: the same file is never
-- applied twice (a file whose line 2 cannot be marked "@" is seen again at every poll).
CREATE TABLE IF NOT EXISTS applied (
    store       TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    summary     TEXT NOT NULL,                       -- what the load did, for the status page
    applied_at  REAL NOT NULL
);
-- Shifts of each register the exchange knows of; a shift is exported once (exported_at set).
-- Shift numbers start again at 1 with a new FN, so the FN number is part of the key.
CREATE TABLE IF NOT EXISTS shifts (
    device      INTEGER NOT NULL,
    fn          TEXT NOT NULL,
    shift       INTEGER NOT NULL,
    closed      INTEGER NOT NULL DEFAULT 0,          -- a Z report closed it
    z           TEXT,                                -- JSON: the Z report's document and counters
    pending     TEXT,                                -- JSON: the block being written (crash check)
    exported_at REAL,
    export      TEXT,                                -- JSON: file, block totals, reconciliation
    PRIMARY KEY (device, fn, shift)
);
-- Per register: the highest journal seq below which every job is finished and seen, its FN
-- as last seen, and the last transaction number written to its report file (transaction
-- numbers keep increasing).
CREATE TABLE IF NOT EXISTS registers (
    device      INTEGER PRIMARY KEY,
    seen_seq    INTEGER NOT NULL DEFAULT 0,
    fn          TEXT NOT NULL DEFAULT '',
    last_txn    INTEGER NOT NULL DEFAULT 0
);
-- What the status page shows: problems and the last successful steps, by key.
CREATE TABLE IF NOT EXISTS status (
    key         TEXT PRIMARY KEY,
    level       TEXT NOT NULL,                       -- "ok", "warn" or "error"
    message     TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
"""


def exchange_path(journal_path: str) -> str:
    """The exchange's SQLite file for a journal file."""
    return f"{journal_path}.exchange.sqlite3"


class ExchangeDb:
    """Per-thread connections to the exchange's SQLite file (created on first use)."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # executescript commits on its own; CREATE ... IF NOT EXISTS makes it safe in every process.
        self.conn().executescript(_SCHEMA)

    def conn(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own)."""
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = connect_wal(self.path)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed or none (IMMEDIATE: writers queue)."""
        with write_transaction(self.conn()) as conn:
            yield conn

    def close(self) -> None:
        """Close every connection this process opened."""
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()
