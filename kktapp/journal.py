"""Durable journal of device jobs: the memory that makes fiscalisation exactly-once.

Every job (receipts and operations) is written here *before* the device is touched, and every
state change that recovery depends on is committed with ``synchronous=FULL`` so it survives a
``kill -9`` and a power loss:

``queued`` → ``sending`` (with ``fd_before``, the FN's last document number read just before the
receipt went out) → ``done`` | ``failed``; or → ``unknown`` when the link broke mid-document,
until the device owner settles it by comparing the FN's last document number with
``fd_before``.

SQLite in WAL mode lets many processes (mod_wsgi, gunicorn workers) share one file: readers never
wait for the writer. Writers of one process queue on a per-process lock (:attr:`Journal._write_lock`)
before they ask SQLite for its write lock: SQLite's busy handler makes a waiting writer sleep and
retry, so with sixteen device owners and dozens of HTTP threads an unlucky one kept losing for
seconds; with the lock only one writer per process ever waits in the busy handler (against the
other processes). The durable changes queued behind that lock are committed together
(:mod:`kktapp.commits`): whoever gets the lock commits every change queued by then in one
transaction, so dozens of registers do not wait for each other's commits one by one.

Write transactions per receipt, each needed for exactly-once (all ``synchronous=FULL``):
``accept`` (the request exists before the device is touched; the key answers repeats),
``mark_sending`` (``fd_before`` on disk before the document goes out: recovery compares with
it), ``finish`` (the answer given to the caller survives; a repeat returns it; when the next
job is already queued, it goes in that job's ``mark_sending`` transaction: :class:`Finish`).
``accept`` also checks the key and the queue limit inside its transaction and builds the new
Job from what it inserted; the other writes, given the Job rather than its id, bring the object
up to date, so the owner hands its waiters the answer without a read. Status snapshots
are not per receipt: the owner writes one when its refresh is due or the queue went idle, with
``synchronous=NORMAL``. All SQL lives in this module behind the
narrow :class:`Journal` interface, so a PostgreSQL backend for several hosts can follow.

Also here: the JSON form of :class:`~kktapp.domain.Receipt` stored as a job's payload
(:func:`receipt_to_json` / :func:`receipt_from_json`, an exact round trip) and the per-device
status snapshots every process reads for the status page without touching the device.

Schema version and upgrades
---------------------------
The file carries its schema version in SQLite's ``PRAGMA user_version``. ``_SCHEMA`` is the
schema of release 0.1.0 (version 2) and is never edited again; every later change is one step
function appended to ``_STEPS``, which upgrades the version before it by one::

    def _step_receipt_listing(conn: sqlite3.Connection) -> None:
        # index for the operator's receipt list
        conn.execute("CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at)")

    _STEPS = (..., _step_receipt_listing)   # version = 2 + its position (1-based)

A step runs once per journal, inside the upgrade's write transaction, with plain
``conn.execute`` calls (no ``executescript``: it would commit half an upgrade). Write it so a
rerun is harmless: ``CREATE ... IF NOT EXISTS`` and :func:`add_column`. Two steps added on
parallel branches are both kept, in merge order: the number is the position, not a name.

When a process opens a journal older than :data:`SCHEMA_VERSION` it takes the write lock
(``BEGIN IMMEDIATE``; the other processes wait), copies the file with SQLite's backup API to
``<journal>.schema-vN.bak`` if it holds any job, runs the missing steps, sets the new version and
records it in ``schema_history``, all in one transaction: a crash leaves the old journal intact.
A journal newer than this code is refused (:class:`SchemaError`): downgrading means restoring the
backup taken before the upgrade. Files and directories the journal creates are 0640 / 0750:
they hold buyers' e-mails and phones and the cashier's INN.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

from .commits import GroupCommit
from .domain import (
    Correction,
    FiscalResult,
    Payment,
    PaymentMethod,
    PaymentType,
    Position,
    Receipt,
    SettlementType,
    TaxationSystem,
    TextLine,
    VatRate,
)
from .errors import Conflict, ResultCode
from .files import create_private_file, make_private_dirs
from .sqlitefiles import BUSY_TIMEOUT, add_column, connect_wal, write_transaction

log = logging.getLogger(__name__)
_T = TypeVar("_T")

QUEUED = "queued"
SENDING = "sending"
DONE = "done"
FAILED = "failed"
UNKNOWN = "unknown"
STATES = (QUEUED, SENDING, DONE, FAILED, UNKNOWN)
FINISHED = (DONE, FAILED)

RECEIPT = "receipt"

# Release 0.1.0's schema, version 2. Frozen: changes are steps in _STEPS (module docstring).
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- FIFO order of the device queues
    id          TEXT NOT NULL UNIQUE,
    device      INTEGER NOT NULL,
    kind        TEXT NOT NULL,                      -- "receipt" or an operation name
    key         TEXT,                               -- idempotency key, unique per kind
    fingerprint TEXT NOT NULL,
    source      TEXT NOT NULL DEFAULT '',
    payload     TEXT NOT NULL,
    state       TEXT NOT NULL,
    result      TEXT,
    error       TEXT,
    reason      TEXT NOT NULL DEFAULT '',
    fd_before   INTEGER,
    attempts    INTEGER NOT NULL DEFAULT 0,
    reprint     INTEGER NOT NULL DEFAULT 0,         -- fiscalised but its paper copy is still owed
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);
-- A key names one live document. Failed attempts (certainly not fiscalised) step aside so the
-- caller may try the same key again; everything else keeps the key taken.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live_key ON jobs(kind, key)
    WHERE key IS NOT NULL AND state != 'failed';
CREATE INDEX IF NOT EXISTS jobs_key ON jobs(kind, key);
CREATE INDEX IF NOT EXISTS jobs_queue ON jobs(device, state, seq);
CREATE INDEX IF NOT EXISTS jobs_updated ON jobs(updated_at);
-- The owner asks "what holds my queue?" many times a second: keep it an index lookup.
CREATE INDEX IF NOT EXISTS jobs_owed ON jobs(device) WHERE reprint=1;
CREATE INDEX IF NOT EXISTS jobs_unsettled ON jobs(device) WHERE state IN ('sending', 'unknown');
CREATE TABLE IF NOT EXISTS snapshots (
    device      INTEGER PRIMARY KEY,
    data        TEXT NOT NULL,
    updated_at  REAL NOT NULL
);
"""
#: user_version of ``_SCHEMA``; 0 is a new file (or one older than versioning: same tables).
BASE_VERSION = 2


class SchemaError(RuntimeError):
    """The journal cannot be used by this code (written by a newer version)."""


def _step_schema_history(conn: sqlite3.Connection) -> None:
    """Version 3: a row per upgrade, so an operator sees which release changed the journal when."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_history ("
        " version INTEGER NOT NULL, from_version INTEGER NOT NULL,"
        " app_version TEXT NOT NULL, applied_at REAL NOT NULL)"
    )


def _step_operator(conn: sqlite3.Connection) -> None:
    """Version 4: the operator's receipt list (kind, seq) and the archive of pruned receipts'
    counts, so the metrics' counters never go down when old receipts are pruned."""
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_kind_seq ON jobs(kind, seq)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS receipt_archive ("
        " device INTEGER NOT NULL, result TEXT NOT NULL, n INTEGER NOT NULL,"
        " duration_sum REAL NOT NULL, buckets TEXT NOT NULL, PRIMARY KEY (device, result))"
    )


def _step_lean_updates(conn: sqlite3.Connection) -> None:
    """Version 5: no index on updated_at. Every state change rewrote it (two to three per
    receipt) for the hourly prune alone, which may as well read the table once an hour."""
    conn.execute("DROP INDEX IF EXISTS jobs_updated")


def _step_fn_check(conn: sqlite3.Connection) -> None:
    """Version 6: ``fn_check`` marks a receipt an operator settled as fiscalised, until its owner
    has read that document from the FN (:meth:`Journal.fn_checks_due`); the partial index keeps
    the owner's question an index lookup however long the journal."""
    add_column(conn, "jobs", "fn_check INTEGER NOT NULL DEFAULT 0")
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_fn_check ON jobs(device) WHERE fn_check=1")


#: Upgrade steps after the base schema: ``_STEPS[i]`` turns version BASE_VERSION + i into + i + 1.
_STEPS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _step_schema_history,
    _step_operator,
    _step_lean_updates,
    _step_fn_check,
)
#: The version this code writes and reads.
SCHEMA_VERSION = BASE_VERSION + len(_STEPS)


def _statements(script: str) -> list[str]:
    """Split an SQL script into statements (sqlite3.complete_statement knows comments and quotes)."""
    result, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            result.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement: {buf.strip()[:60]}")
    return result


def schema_version(conn: sqlite3.Connection) -> int:
    """The schema version a journal file carries."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def upgrade(conn: sqlite3.Connection, path: str, now: float) -> int:
    """Bring the journal at ``conn`` to SCHEMA_VERSION (see the module docstring); returns the old version.

    ``conn`` must be in autocommit mode (isolation_level None), as the journal's connections are.
    """
    if schema_version(conn) == SCHEMA_VERSION:
        return SCHEMA_VERSION  # the common case, without taking the write lock
    with write_transaction(conn):
        old = schema_version(conn)  # again, under the lock: another process may have upgraded
        if old > SCHEMA_VERSION:
            raise SchemaError(
                f"журнал {path} записан более новой версией сервиса (схема {old}, эта версия знает"
                f" схемы до {SCHEMA_VERSION}): обновите код сервиса или восстановите резервную копию"
                " журнала, сделанную до обновления"
            )
        if old < SCHEMA_VERSION:
            has_jobs = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='jobs'"
            ).fetchone() and conn.execute("SELECT 1 FROM jobs LIMIT 1").fetchone()
            if has_jobs:
                _backup_before_upgrade(path, old)
            if old <= BASE_VERSION:
                for statement in _statements(_SCHEMA):
                    conn.execute(statement)
            for step in _STEPS[max(old, BASE_VERSION) - BASE_VERSION:]:
                step(conn)
            from . import __version__

            conn.execute(
                "INSERT INTO schema_history (version, from_version, app_version, applied_at) VALUES (?, ?, ?, ?)",
                (SCHEMA_VERSION, old, __version__, now),
            )
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            if has_jobs:
                log.info("журнал %s обновлён: схема %d → %d", path, old, SCHEMA_VERSION)
    return old


def _backup_before_upgrade(path: str, old: int) -> None:
    """The whole journal as it was, next to it, before the first step touches it.

    Read through a second connection: the upgrading one holds the write lock, and SQLite's
    backup from a connection inside its own write transaction waits forever. WAL lets the
    reader in and shows it the last commit, which is the old version.
    """
    target = f"{path}.schema-v{old}.bak"
    if os.path.exists(target):
        target = f"{target}.{int(time.time())}"
    create_private_file(target)
    source = sqlite3.connect(path, timeout=BUSY_TIMEOUT)
    dest = sqlite3.connect(target)
    try:
        source.backup(dest)
        dest.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
    finally:
        dest.close()
        source.close()
    log.info("журнал %s: копия до обновления схемы %d — %s", path, old, target)


_COLUMNS = (
    "seq, id, device, kind, key, fingerprint, source, payload, state, result, error, reason, "
    "fd_before, attempts, reprint, created_at, updated_at"
)
#: Under one key: the live job first, then the latest failed attempt (bound to FAILED).
_KEY_ORDER = "ORDER BY state=?, seq DESC"
_FIND_BY_KEY = f"SELECT {_COLUMNS} FROM jobs WHERE kind=? AND key=? {_KEY_ORDER} LIMIT 1"


class QueueLimit(Exception):
    """A device's queue is full: the new document was not stored."""

    def __init__(self, waiting: int) -> None:
        super().__init__(waiting)
        self.waiting = waiting


def _ident(job: Job | str) -> str:
    return job if isinstance(job, str) else job.id


def _mirror(job: Job | str, now: float, **fields: object) -> None:
    """Give the caller's Job object the row's new values (nothing to do for a bare id)."""
    if isinstance(job, str):
        return
    for name, value in fields.items():
        setattr(job, name, value)
    job.updated_at = _ts(now)


def _ts(value: float) -> dt.datetime:
    """A journal timestamp as an aware datetime in the server's zone (what ``astimezone()`` gives)."""
    zone = _quarter_zone(int(value // _ZONE_STEP))
    if zone is None:
        return dt.datetime.fromtimestamp(value).astimezone()
    return dt.datetime.fromtimestamp(value, zone)


#: Zones change their UTC offset (DST, a new law) at whole quarter-hours of UTC: transitions fall
#: on local times like 02:00 or 03:30, and the offsets in use are multiples of 15 minutes.
_ZONE_STEP = 900


@functools.lru_cache(maxsize=8)
def _quarter_zone(quarter: int) -> dt.tzinfo | None:
    """The server's zone throughout this quarter-hour of UTC; None when its offset changes inside it.

    The journal turns some six timestamps per receipt into datetimes; asking the C library for
    the zone each time cost 11 µs a call under load (bench/profile_owner.py --clients 4). Like
    the C library's own, this cache does not see the zone changed under a running process.
    """
    start = quarter * _ZONE_STEP
    first = dt.datetime.fromtimestamp(start).astimezone().tzinfo
    last = dt.datetime.fromtimestamp(start + _ZONE_STEP - 1).astimezone().tzinfo
    return first if first == last else None


def _dumps(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


#: SQL condition of a row the owner may still change: not finished (see :meth:`Journal.settle_by_hand`).
_UNFINISHED = "state NOT IN ('done', 'failed')"
#: ... or a done row owing its paper copy, which only its owner changes.
_UNFINISHED_OR_OWED = f"({_UNFINISHED} OR reprint=1)"


@dataclass(frozen=True)
class Finish:
    """A job's final state (done or failed) with its result or error, as :meth:`Journal.finish`
    writes it: alone, or in the transaction of the next job's :meth:`Journal.mark_sending`."""

    job: Job | str
    state: str
    result: dict | None = None
    error: dict | None = None
    reason: str = ""
    reprint: bool = False
    #: Recovery's verdict on an unknown job: written only while the row is not finished, since an
    #: operator may have settled it by hand while the owner read the FN (only one result lands).
    unsettled_only: bool = False

    def __post_init__(self) -> None:
        if self.state not in FINISHED:
            raise ValueError(f"not a final state: {self.state}")

    def statement(self, now: float) -> tuple[str, tuple]:
        """The UPDATE that writes it (SQL and arguments)."""
        return (
            "UPDATE jobs SET state=?, result=?, error=?, reason=?, reprint=?, updated_at=? WHERE id=?"
            + (f" AND {_UNFINISHED}" if self.unsettled_only else ""),
            (
                self.state,
                _dumps(self.result) if self.result is not None else None,
                _dumps(self.error) if self.error is not None else None,
                self.reason,
                int(self.reprint),
                now,
                _ident(self.job),
            ),
        )

    def mirror(self, now: float) -> None:
        """Give the caller's Job the row's new values once written."""
        _mirror(self.job, now, state=self.state, result=self.result, error=self.error, reason=self.reason,
                reprint=bool(self.reprint))


@dataclass
class Job:
    """One device job as the journal knows it; what callers get from the service.

    ``result``: for receipts and fiscal operations :meth:`FiscalResult.to_dict`, otherwise
    operation-specific JSON. ``error``: ``{"code", "message", "step"?}``. ``reason``: Russian
    text saying why the outcome is unknown or why the job waits.
    """

    id: str
    device: int
    kind: str
    key: str | None
    state: str
    result: dict | None
    error: dict | None
    reason: str
    created_at: dt.datetime
    updated_at: dt.datetime
    # What the device owner needs; not part of the caller-facing dict.
    payload: dict = field(default_factory=dict, repr=False)
    fingerprint: str = field(default="", repr=False)
    source: str = field(default="", repr=False)
    fd_before: int | None = field(default=None, repr=False)
    attempts: int = field(default=0, repr=False)
    reprint: bool = field(default=False, repr=False)
    seq: int = field(default=0, repr=False)

    @property
    def finished(self) -> bool:
        """Done or failed: the answer will not change any more."""
        return self.state in FINISHED

    def fiscal_result(self) -> FiscalResult | None:
        """The fiscal document of a done receipt or fiscal operation, else None."""
        if self.state != DONE or not self.result or "fiscal_document_number" not in self.result:
            return None
        return FiscalResult.from_dict(self.result)

    def to_dict(self) -> dict:
        """JSON-ready form for the API and the status page."""
        return {
            "id": self.id,
            "device": self.device,
            "kind": self.kind,
            "key": self.key,
            "state": self.state,
            "result": self.result,
            "error": self.error,
            "reason": self.reason,
            "created_at": self.created_at.isoformat(timespec="seconds"),
            "updated_at": self.updated_at.isoformat(timespec="seconds"),
        }


def document_total(job: Job) -> int:
    """The money of a job's document in kopecks: a receipt's total, a cash in/out's amount, else 0."""
    if job.kind == RECEIPT:
        return receipt_from_json(job.payload["receipt"]).total
    if job.kind in ("cash_in", "cash_out"):
        return int(job.payload.get("params", {}).get("amount", 0))
    return 0


class Journal:
    """SQLite journal of jobs and device snapshots, shared by threads and processes.

    Connections are per thread and per process (a connection must not cross a fork), opened on
    first use. Methods are the whole interface the service uses; nothing else runs SQL.
    """

    def __init__(self, path: str, *, retention_days: float = 30, clock: Callable[[], float] = time.time) -> None:
        self.path = os.path.abspath(path)
        self.retention_days = retention_days
        #: Wall clock for timestamps (tests move it to check retention).
        self.clock = clock
        # The file itself is created 0640 by connect_wal when _init_schema first opens it.
        make_private_dirs(os.path.dirname(self.path))
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        #: Serialises this process's write transactions (see the module docstring).
        self._write_lock = threading.Lock()
        self._commits = GroupCommit()
        self._pid = os.getpid()
        self._init_schema()

    # ------------------------------------------------------------------ connections

    def _connect(self, durable: bool) -> sqlite3.Connection:
        conn = connect_wal(self.path)
        # FULL: a committed state change (accepted job, fd_before, done) must survive a power
        # loss, or recovery would compare against a number that never reached the disk.
        # Snapshots are a cache, NORMAL is enough for them.
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.row_factory = sqlite3.Row
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _forked(self) -> None:
        """In a forked child, drop what belongs to the parent: its connections are not ours to
        use or to close, and its locks and queue may have been held by threads that do not
        exist here. Called before a lock or a connection is taken."""
        if os.getpid() != self._pid:
            self._all_lock = threading.Lock()
            self._write_lock = threading.Lock()
            self._commits = GroupCommit()
            self._local = threading.local()
            self._all = []
            self._pid = os.getpid()

    def _conn(self, durable: bool = True) -> sqlite3.Connection:
        self._forked()
        name = "durable" if durable else "cache"
        conn = getattr(self._local, name, None)
        if conn is None:
            conn = self._connect(durable)
            setattr(self._local, name, conn)
        return conn

    def _init_schema(self) -> None:
        upgrade(self._conn(), self.path, self.clock())

    def close(self) -> None:
        """Close every connection this process opened (call when no thread uses the journal)."""
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:  # best effort on shutdown
                pass
        self._local = threading.local()

    def _durably(self, change: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``change`` in the process's next group commit (FULL); its result once on disk."""
        # Before the lock and the queue are read: a forked child must not use the parent's.
        self._forked()
        return self._commits.run(self._write_lock, self._conn, change)

    def _write(self, sql: str, args: tuple, *, durable: bool = True) -> int:
        """One write statement, committed (durable: in the process's next group) before it returns."""
        if durable:
            return self._durably(lambda conn: conn.execute(sql, args).rowcount)
        conn = self._conn(durable)
        with self._write_lock:
            return conn.execute(sql, args).rowcount

    def _one(self, sql: str, args: tuple) -> Job | None:
        row = self._conn().execute(sql, args).fetchone()
        return self._job(row) if row else None

    @staticmethod
    def _job(row: sqlite3.Row) -> Job:
        return Job(
            id=row["id"],
            device=row["device"],
            kind=row["kind"],
            key=row["key"],
            state=row["state"],
            result=json.loads(row["result"]) if row["result"] else None,
            error=json.loads(row["error"]) if row["error"] else None,
            reason=row["reason"],
            created_at=_ts(row["created_at"]),
            updated_at=_ts(row["updated_at"]),
            payload=json.loads(row["payload"]),
            fingerprint=row["fingerprint"],
            source=row["source"],
            fd_before=row["fd_before"],
            attempts=row["attempts"],
            reprint=bool(row["reprint"]),
            seq=row["seq"],
        )

    # ------------------------------------------------------------------ jobs

    def accept(
        self,
        *,
        device: int,
        kind: str,
        key: str | None,
        fingerprint: str,
        payload: dict,
        source: str = "",
        job_id: str | None = None,
        queue_limit: int | None = None,
    ) -> tuple[Job, bool]:
        """Store a new queued job, or return the live one with the same key.

        Returns ``(job, created)``. A key already used for a different document (another
        fingerprint or device) raises :class:`~kktapp.errors.Conflict`. A key whose only jobs
        failed is free again: a failed job was certainly not fiscalised. ``job_id``: the new
        job's id when the caller picked it (to listen for it before it exists). ``queue_limit``:
        a new document (a key never seen, or none) is refused with :class:`QueueLimit` when the
        device already has that many queued; a repeat is always answered.
        """
        now = self.clock()
        job_id = job_id or str(uuid.uuid4())
        seq, existing = self._durably(
            lambda conn: self._accept(conn, now, job_id, device, kind, key, fingerprint, payload, source, queue_limit)
        )
        if existing is not None:
            if existing.fingerprint != fingerprint or existing.device != device:
                raise Conflict()
            return existing, False
        # Built here rather than read back: the row is exactly what was just inserted.
        when = _ts(now)
        job = Job(
            id=job_id, device=device, kind=kind, key=key, state=QUEUED, result=None, error=None, reason="",
            created_at=when, updated_at=when, payload=payload, fingerprint=fingerprint, source=source, seq=seq,
        )
        return job, True

    def _accept(
        self, conn: sqlite3.Connection, now: float, job_id: str, device: int, kind: str, key: str | None,
        fingerprint: str, payload: dict, source: str, queue_limit: int | None,
    ) -> tuple[int, Job | None]:
        """The change of :meth:`accept`, inside a write transaction: (new seq, None) or (0, the
        live job with the key). The transaction holds SQLite's write lock from its start
        (IMMEDIATE), so check-then-insert is atomic across processes."""
        known = False
        if key is not None:
            # find_by_key's order: the live job first, else the latest failed attempt.
            row = conn.execute(_FIND_BY_KEY, (kind, key, FAILED)).fetchone()
            if row is not None and row["state"] != FAILED:
                return 0, self._job(row)
            known = row is not None
        if queue_limit is not None and not known:
            waiting = conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE device=? AND state=?", (device, QUEUED)
            ).fetchone()[0]
            if waiting >= queue_limit:
                raise QueueLimit(waiting)
        seq = conn.execute(
            "INSERT INTO jobs (id, device, kind, key, fingerprint, source, payload, state, reason,"
            " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, '', ?, ?)",
            (job_id, device, kind, key, fingerprint, source, _dumps(payload), QUEUED, now, now),
        ).lastrowid
        return int(seq or 0), None

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        return self._one(f"SELECT {_COLUMNS} FROM jobs WHERE id=?", (job_id,))

    def find_by_key(self, kind: str, key: str) -> Job | None:
        """The live job for a key, else its latest failed attempt, else None."""
        return self._one(_FIND_BY_KEY, (kind, key, FAILED))

    def find_by_keys(self, kind: str, keys: Sequence[str]) -> dict[str, Job]:
        """:meth:`find_by_key` of several keys in one read: {key: job} for those that have one."""
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE kind=? AND key IN ({','.join('?' * len(keys))}) {_KEY_ORDER}",
            (kind, *keys, FAILED),
        ).fetchall()
        found: dict[str, Job] = {}
        for row in rows:
            if row["key"] not in found:  # the first of a key is find_by_key's
                found[row["key"]] = self._job(row)
        return found

    def state_of(self, job_id: str) -> str | None:
        """Only the state of a job (None if there is none): what a polling waiter needs to know."""
        row = self._conn().execute("SELECT state FROM jobs WHERE id=?", (job_id,)).fetchone()
        return row[0] if row else None

    def find_receipt(self, device: int, fd_number: int | None = None) -> Job | None:
        """The done receipt of a device with this fiscal document number (None: the latest one)."""
        if fd_number is None:
            sql, args = "", (device, RECEIPT, DONE)
        else:
            sql, args = " AND json_extract(result, '$.fiscal_document_number')=?", (device, RECEIPT, DONE, fd_number)
        return self._one(
            f"SELECT {_COLUMNS} FROM jobs WHERE device=? AND kind=? AND state=?{sql} ORDER BY seq DESC LIMIT 1", args
        )

    def next_queued(self, device: int) -> Job | None:
        """The oldest queued job of a device (its FIFO head)."""
        return self._one(
            f"SELECT {_COLUMNS} FROM jobs WHERE device=? AND state=? ORDER BY seq LIMIT 1", (device, QUEUED)
        )

    def queued(self, device: int) -> list[Job]:
        """All queued jobs of a device in FIFO order."""
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE device=? AND state=? ORDER BY seq", (device, QUEUED)
        ).fetchall()
        return [self._job(r) for r in rows]

    def mark_sending(self, job: Job | str, fd_before: int | None, *, finished: Finish | None = None) -> bool:
        """The job goes to the device now; ``fd_before`` is the FN's last document number.

        FULL and before the first byte of the document: after a crash or a lost answer, recovery
        decides "fiscalised or not" by comparing the FN with this number. False when the job is
        already finished (an operator cancelled it after the owner picked it): send nothing.
        A Job (rather than an id) is updated to match the row.

        ``finished``: the previous job's final row, committed in the same transaction (one FULL
        commit instead of two between documents; both are on disk before this one is sent).
        """
        now = self.clock()
        mark = ("UPDATE jobs SET state=?, fd_before=?, attempts=attempts+1, reason='', error=NULL, updated_at=?"
                " WHERE id=? AND state NOT IN (?, ?)", (SENDING, fd_before, now, _ident(job), DONE, FAILED))

        def change(conn: sqlite3.Connection) -> int:
            if finished is not None and conn.execute(*finished.statement(now)).rowcount != 1:
                lost.append(finished)
            return conn.execute(*mark).rowcount

        lost: list[Finish] = []
        sent = self._durably(change) == 1
        if finished is not None:
            if lost:
                self._lost(finished.job)
            else:
                finished.mirror(now)
        if sent and not isinstance(job, str):
            _mirror(job, now, state=SENDING, fd_before=fd_before, attempts=job.attempts + 1, reason="", error=None)
        return sent

    def finish(
        self,
        job: Job | str,
        state: str,
        *,
        result: dict | None = None,
        error: dict | None = None,
        reason: str = "",
        reprint: bool = False,
        unsettled_only: bool = False,
    ) -> None:
        """Record the final state (done or failed) with its result or error.

        FULL: the caller is answered from this row, and a repeat with the same key must get the
        same answer after a power cut; a failed row frees the key for a new attempt. And it must
        be on disk before the owner forms its next document (a shift report needs no journal
        write first): a row lost in ``sending`` would otherwise be settled with that document.
        """
        self.write_finish(Finish(job, state, result=result, error=error, reason=reason, reprint=reprint,
                                 unsettled_only=unsettled_only))

    def write_finish(self, finished: Finish) -> None:
        """:meth:`finish` for a final row built beforehand (see :meth:`mark_sending`)."""
        now = self.clock()
        if self._durably(lambda conn: conn.execute(*finished.statement(now)).rowcount) == 1:
            finished.mirror(now)
        else:
            self._lost(finished.job)

    def _lost(self, job: Job | str) -> None:
        """The owner's change did not land: the row was finished meanwhile (an operator settled
        it by hand). The caller's Job gets the row as it is, so its waiters hear the real answer."""
        row = self.get(_ident(job))
        log.warning("журнал: задание %s уже завершено (%s), результат владельца ККТ не записан",
                    _ident(job), row.state if row else "удалено")
        if row is not None and not isinstance(job, str):
            for name in ("state", "result", "error", "reason", "reprint", "updated_at"):
                setattr(job, name, getattr(row, name))

    def mark_unknown(self, job: Job | str, reason: str, error: dict | None = None) -> None:
        """The outcome is unknown until the device owner settles it; the queue holds.

        FULL: the reason is what the operator and the caller see while the queue holds (recovery
        itself would also settle the row left in ``sending``).
        """
        now = self.clock()
        if self._write(
            f"UPDATE jobs SET state=?, reason=?, error=?, updated_at=? WHERE id=? AND {_UNFINISHED}",
            (UNKNOWN, reason, _dumps(error) if error is not None else None, now, _ident(job)),
        ) == 1:
            _mirror(job, now, state=UNKNOWN, reason=reason, error=error)
        else:
            self._lost(job)

    def requeue(self, job: Job | str) -> None:
        """Back to the queue: the device certainly did not fiscalise it; it keeps its place.

        FULL before the owner forms any other document (Z report, new shift): a crash after that
        must not find this job in ``sending`` and mistake the new document for it.
        """
        now = self.clock()
        # Never back to the queue once settled by hand: "fiscalised" would be fiscalised twice.
        if self._write(
            "UPDATE jobs SET state=?, fd_before=NULL, reason='', error=NULL, updated_at=?"
            f" WHERE id=? AND {_UNFINISHED}",
            (QUEUED, now, _ident(job)),
        ) == 1:
            _mirror(job, now, state=QUEUED, fd_before=None, reason="", error=None)
        else:
            self._lost(job)

    def set_reason(self, job: Job | str, reason: str) -> None:
        """Update the Russian explanation of a held job without changing its state."""
        now = self.clock()
        if self._write(f"UPDATE jobs SET reason=?, updated_at=? WHERE id=? AND {_UNFINISHED_OR_OWED}",
                       (reason, now, _ident(job))) == 1:
            _mirror(job, now, reason=reason)
        else:
            self._lost(job)

    def reprinted(self, job: Job | str, result: dict | None) -> None:
        """The owed paper copy is printed: clear the flag and store the updated result."""
        now = self.clock()
        self._write(
            "UPDATE jobs SET reprint=0, reason='', result=?, updated_at=? WHERE id=?",
            (_dumps(result) if result is not None else None, now, _ident(job)),
        )
        _mirror(job, now, reprint=False, reason="", result=result)

    def unsettled(self, device: int | None = None) -> list[Job]:
        """Jobs that hold their device's queue: outcome unknown, in flight, or a copy owed."""
        # Literal states: the partial indexes above only serve queries that name them.
        where = "" if device is None else " AND device=?"
        args: tuple = () if device is None else (device,)
        sql = (
            f"SELECT {_COLUMNS} FROM jobs WHERE state IN ('sending', 'unknown'){where} UNION ALL "
            f"SELECT {_COLUMNS} FROM jobs WHERE reprint=1 AND state NOT IN ('sending', 'unknown'){where}"
        )
        # Sorted here: ORDER BY seq would make SQLite walk the whole table in rowid order.
        rows = sorted(self._conn().execute(sql, args + args).fetchall(), key=lambda r: r["seq"])
        return [self._job(r) for r in rows]

    def failed_with_code(self, device: int, code: int, since: float) -> list[Job]:
        """Failed jobs of a device whose error has this code, updated after ``since`` (oldest first)."""
        # The error column is canonical JSON (sorted keys), so the code is its first member.
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE device=? AND state=? AND updated_at>=? AND error LIKE ? ORDER BY seq",
            (device, FAILED, since, f'{{"code":{int(code)},%'),
        ).fetchall()
        return [self._job(r) for r in rows]

    def queue_counts(self, device: int) -> dict[str, int]:
        """Number of queued, sending and unknown jobs of a device."""
        counts = {QUEUED: 0, SENDING: 0, UNKNOWN: 0}
        rows = self._conn().execute(
            "SELECT state, COUNT(*) FROM jobs WHERE device=? AND state IN (?, ?, ?) GROUP BY state",
            (device, QUEUED, SENDING, UNKNOWN),
        ).fetchall()
        for state, n in rows:
            counts[state] = n
        return counts

    def prune(self, days: float | None = None) -> int:
        """Delete finished jobs older than ``days`` (default: the retention); returns the count.

        Unsettled jobs and owed copies are never pruned.
        """
        days = self.retention_days if days is None else days
        cutoff = self.clock() - days * 86400
        where = "state IN ('done', 'failed') AND reprint=0 AND updated_at < ?"
        conn = self._conn()
        with self._write_lock, write_transaction(conn):
            # The receipt counters must not go down when old rows go (Prometheus counters).
            _archive_receipt_counts(conn, where, (cutoff,))
            n = conn.execute(f"DELETE FROM jobs WHERE {where}", (cutoff,)).rowcount
        if n:
            log.info("журнал: удалено %d записей старше %s дн.", n, days)
        return n

    # ------------------------------------------------------------------ snapshots

    def save_snapshot(self, device: int, data: dict) -> None:
        """Store the device's latest status for every process to read (a cache: NORMAL)."""
        self._write(
            "INSERT INTO snapshots (device, data, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT(device) DO UPDATE SET data=excluded.data, updated_at=excluded.updated_at",
            (device, _dumps(data), self.clock()),
            durable=False,
        )

    def link_down(self, device: int) -> bool:
        """The device's snapshot says its link is down (without decoding the whole snapshot)."""
        row = self._conn(durable=False).execute(
            "SELECT json_extract(data, '$.link') FROM snapshots WHERE device=?", (device,)
        ).fetchone()
        return row is not None and row[0] == "down"

    def load_snapshot(self, device: int) -> tuple[dict, dt.datetime] | None:
        """The stored status of a device and when it was taken, or None."""
        row = self._conn(durable=False).execute(
            "SELECT data, updated_at FROM snapshots WHERE device=?", (device,)
        ).fetchone()
        if row is None:
            return None
        return json.loads(row[0]), _ts(row[1])

    # ------------------------------------------------------------------ operator: list, cancel, counts

    def list_jobs(
        self,
        *,
        kind: str = RECEIPT,
        states: tuple[str, ...] = (),
        device: int | None = None,
        text: str = "",
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Job], int]:
        """Jobs of one kind, newest first, and how many match in all (for paging).

        ``text`` is a substring of the key (DocNumber, API key, tr_id) or of the payload (item
        names, contact); ``since``/``until`` bound the acceptance time (epoch seconds).
        """
        where = ["kind=?"]
        args: list = [kind]
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args.extend(states)
        if device is not None:
            where.append("device=?")
            args.append(int(device))
        if text:
            # SQLite's LIKE folds ASCII case only; item names and DocNumbers are Cyrillic.
            escaped = text.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
            where.append("(kkt_fold(key) LIKE ? ESCAPE '\\' OR kkt_fold(payload) LIKE ? ESCAPE '\\' OR id=?)")
            args.extend((pattern, pattern, text))
        if since is not None:
            where.append("created_at >= ?")
            args.append(float(since))
        if until is not None:
            where.append("created_at < ?")
            args.append(float(until))
        sql_where = " AND ".join(where)
        conn = self._conn()
        conn.create_function("kkt_fold", 1, lambda v: v.casefold() if isinstance(v, str) else v, deterministic=True)
        total = conn.execute(f"SELECT COUNT(*) FROM jobs WHERE {sql_where}", args).fetchone()[0]
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE {sql_where} ORDER BY seq DESC LIMIT ? OFFSET ?",
            (*args, int(limit), int(offset)),
        ).fetchall()
        return [self._job(r) for r in rows], int(total)

    def cancel(self, job_id: str, error: dict) -> tuple[bool, Job | None]:
        """Finish a still-queued job as failed with ``error``; ``(False, job)`` if it was not queued.

        One conditional UPDATE, so it cannot overtake the owner: the owner's
        :meth:`mark_sending` only moves unfinished jobs, and this only moves queued ones. A
        failed job frees its key. FULL: a cancelled receipt must not come back after a power cut.
        """
        n = self._write(
            "UPDATE jobs SET state=?, error=?, reason='', updated_at=? WHERE id=? AND state=?",
            (FAILED, _dumps(error), self.clock(), job_id, QUEUED),
        )
        return n == 1, self.get(job_id)

    def settle_by_hand(self, job_id: str, *, result: dict | None = None, error: dict | None = None,
                       reason: str = "", fn_check: bool = False) -> tuple[bool, Job | None]:
        """An operator's verdict on a job whose outcome is unknown: done with ``result``, else
        failed with ``error`` (which frees its key); ``(False, job)`` when it is not unknown any more.
        ``fn_check``: the device's owner is to read the document the operator named from the FN
        (:meth:`fn_checks_due`, :meth:`record_fn_check`).

        One conditional UPDATE (compare-and-set on ``unknown``): the owner may be settling the
        same job from the FN at this moment, and its writes skip a finished row in turn
        (:class:`Finish`, :meth:`requeue`, :meth:`mark_unknown`), so only one result lands.
        FULL: the caller is answered from this row.
        """
        state = DONE if result is not None else FAILED
        n = self._write(
            "UPDATE jobs SET state=?, result=?, error=?, reason=?, reprint=0, fn_check=?, updated_at=?"
            " WHERE id=? AND state=?",
            (state, _dumps(result) if result is not None else None, _dumps(error) if error is not None else None,
             reason, int(fn_check and result is not None), self.clock(), job_id, UNKNOWN),
        )
        return n == 1, self.get(job_id)

    def fn_checks_due(self, device: int) -> list[Job]:
        """Receipts of a device settled by hand as fiscalised whose document the owner has not
        yet read from the FN, oldest first."""
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE fn_check=1 AND device=? ORDER BY seq", (device,)
        ).fetchall()
        return [self._job(r) for r in rows]

    def record_fn_check(self, job: Job, result: dict) -> bool:
        """The owner's reading of a hand-settled receipt's document: its result becomes
        ``result`` and the check is done. FULL: 1C reads the receipt's number from this row.
        False when the row changed meanwhile (pruned; nothing else touches a finished row)."""
        now = self.clock()
        n = self._write("UPDATE jobs SET result=?, fn_check=0, updated_at=? WHERE id=? AND fn_check=1 AND state=?",
                        (_dumps(result), now, job.id, DONE))
        if n == 1:
            _mirror(job, now, result=result)
        return n == 1

    def waiting(self, device: int) -> list[Job]:
        """Receipts not finished yet (queued, sending, unknown) or owing a copy, oldest first."""
        rows = self._conn().execute(
            f"SELECT {_COLUMNS} FROM jobs WHERE device=? AND kind=? AND (state IN (?, ?, ?) OR reprint=1)"
            " ORDER BY seq",
            (device, RECEIPT, QUEUED, SENDING, UNKNOWN),
        ).fetchall()
        return [self._job(r) for r in rows]

    def receipt_counts(self) -> list[dict]:
        """Finished receipts per device and result (done, failed, cancelled) since the journal began.

        Each row: ``device``, ``result``, ``count``, and for done receipts the seconds from
        acceptance to the final answer as ``duration_sum`` and ``buckets`` (counts per
        :data:`DURATION_BUCKETS` bound, not cumulative). Pruned rows are counted from the
        archive, so the numbers never go down.
        """
        merged: dict[tuple[int, str], dict] = {}
        for row in _receipt_aggregates(self._conn(), "state IN ('done', 'failed')", ()):
            _merge_counts(merged, row)
        for device, result, n, dsum, buckets in self._conn().execute(
            "SELECT device, result, n, duration_sum, buckets FROM receipt_archive"
        ).fetchall():
            _merge_counts(merged, (device, result, n, dsum, json.loads(buckets)))
        return [
            {"device": d, "result": r, "count": v["count"], "duration_sum": v["duration_sum"], "buckets": v["buckets"]}
            for (d, r), v in sorted(merged.items())
        ]


# ---------------------------------------------------------------------- operator schema and counters
# Apart from _SCHEMA on purpose: an index for the operator's list and the archive of pruned
# receipt counts, both idempotent, for a versioned migration scheme to take over as one step.

#: Upper bounds (seconds) of the acceptance-to-answer histogram of done receipts.
DURATION_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)
CANCELLED_CODE = ResultCode.CANCELLED

def _receipt_aggregates(conn: sqlite3.Connection, where: str, args: tuple) -> list[tuple]:
    """(device, result, count, duration sum, bucket counts) of finished receipts matching ``where``."""
    duration = "(updated_at - created_at)"
    # One CASE per row picks the bucket (short-circuit), grouped: cheaper than a SUM per bucket.
    bucket = "CASE " + " ".join(
        f"WHEN {duration} <= {bound!r} THEN {i}" for i, bound in enumerate(DURATION_BUCKETS)
    ) + f" ELSE {len(DURATION_BUCKETS)} END"
    # Grouped by state and (for failed rows only) the error code; mapped to done/failed/cancelled below.
    rows = conn.execute(
        f"SELECT device, state, CASE WHEN state='failed' THEN json_extract(error, '$.code') END AS code, "
        f"CASE WHEN state='done' THEN {bucket} END AS bucket, COUNT(*), "
        f"SUM(CASE WHEN state='done' THEN {duration} ELSE 0 END) "
        f"FROM jobs WHERE kind='{RECEIPT}' AND {where} GROUP BY device, state, code, bucket",
        args,
    ).fetchall()
    merged: dict[tuple[int, str], list] = {}
    for device, state, code, index, n, dsum in rows:
        res = "done" if state == DONE else ("cancelled" if code == CANCELLED_CODE else "failed")
        entry = merged.setdefault((device, res), [0, 0.0, [0] * len(DURATION_BUCKETS)])
        entry[0] += n
        entry[1] += dsum or 0.0
        if index is not None and index < len(DURATION_BUCKETS):
            entry[2][index] += n
    return [(d, r, v[0], v[1], v[2]) for (d, r), v in merged.items()]


def _merge_counts(merged: dict[tuple[int, str], dict], row: tuple) -> None:
    device, result, n, dsum, buckets = row
    entry = merged.setdefault(
        (device, result), {"count": 0, "duration_sum": 0.0, "buckets": [0] * len(DURATION_BUCKETS)}
    )
    entry["count"] += n
    entry["duration_sum"] += dsum
    entry["buckets"] = [a + b for a, b in zip(entry["buckets"], buckets, strict=True)]


def _archive_receipt_counts(conn: sqlite3.Connection, where: str, args: tuple) -> None:
    """Inside prune's transaction: add the counts of the rows about to go to the archive."""
    merged: dict[tuple[int, str], dict] = {}
    for row in _receipt_aggregates(conn, where, args):
        _merge_counts(merged, row)
    if not merged:
        return
    for device, result, n, dsum, buckets in conn.execute(
        "SELECT device, result, n, duration_sum, buckets FROM receipt_archive"
    ).fetchall():
        if (device, result) in merged:
            _merge_counts(merged, (device, result, n, dsum, json.loads(buckets)))
    for (device, result), v in merged.items():
        conn.execute(
            "INSERT OR REPLACE INTO receipt_archive (device, result, n, duration_sum, buckets) VALUES (?, ?, ?, ?, ?)",
            (device, result, v["count"], v["duration_sum"], json.dumps(v["buckets"])),
        )


# ---------------------------------------------------------------------- receipt JSON


def _line_to_json(line: TextLine) -> dict:
    return {
        "text": line.text, "bold": line.bold, "italic": line.italic, "inverse": line.inverse,
        "underline": line.underline, "double_width": line.double_width,
        "double_height": line.double_height, "align": line.align,
    }


def text_line_from_json(data: dict) -> TextLine:
    """A :class:`TextLine` from its JSON form (unknown keys are an error)."""
    return TextLine(**data)


def receipt_to_json(receipt: Receipt) -> dict:
    """JSON form of a receipt for the journal: money in kopecks, quantities as strings."""
    data = {
        "type": receipt.type.value,
        "positions": [
            {
                "name": p.name, "price": p.price, "quantity": str(p.quantity), "amount": p.amount,
                "vat": p.vat.value, "payment_method": int(p.payment_method), "payment_object": p.payment_object,
                "unit": p.unit, "department": p.department, "discount": p.discount,
            }
            for p in receipt.positions
        ],
        "payments": [{"type": p.type.value, "amount": p.amount} for p in receipt.payments],
        "taxation": int(receipt.taxation) if receipt.taxation is not None else None,
        "customer_contact": receipt.customer_contact,
        "electronic_only": receipt.electronic_only,
        "cashier_name": receipt.cashier_name,
        "cashier_inn": receipt.cashier_inn,
        "header": [_line_to_json(t) for t in receipt.header],
        "footer": [_line_to_json(t) for t in receipt.footer],
        "correction": (
            {
                "by_order": receipt.correction.by_order,
                "date": receipt.correction.date.isoformat(),
                "order_number": receipt.correction.order_number,
            }
            if receipt.correction is not None
            else None
        ),
        "test_mode": receipt.test_mode,
    }
    # Keys added later only when set: a payload is also fingerprinted (service.submit_receipt
    # without a contract's fingerprint), and older receipts keep theirs.
    if receipt.settlement_place:
        data["settlement_place"] = receipt.settlement_place
    if receipt.internet:
        data["internet"] = True
    return data


_E = TypeVar("_E", bound=enum.Enum)


def _member_of(kind: type[_E]) -> Callable[[object], _E]:
    """``kind(value)`` through a table: an Enum call costs microseconds, and a 10-position
    receipt read back from the journal makes two dozen of them. Values not in the table take
    the Enum's own way (its aliases, its errors)."""
    table = {member.value: member for member in kind}

    def member(value: object) -> _E:
        found = table.get(value)
        return found if found is not None else kind(value)

    return member


_settlement_type = _member_of(SettlementType)
_vat_rate = _member_of(VatRate)
_payment_method = _member_of(PaymentMethod)
_payment_type = _member_of(PaymentType)
_taxation = _member_of(TaxationSystem)


def receipt_from_json(data: dict) -> Receipt:
    """Inverse of :func:`receipt_to_json`: ``receipt_from_json(receipt_to_json(r)) == r``."""
    corr = data.get("correction")
    return Receipt(
        type=_settlement_type(data["type"]),
        positions=tuple(
            Position(
                name=p["name"], price=int(p["price"]), quantity=Decimal(p["quantity"]), amount=int(p["amount"]),
                vat=_vat_rate(p["vat"]), payment_method=_payment_method(p["payment_method"]),
                payment_object=int(p["payment_object"]), unit=int(p["unit"]), department=int(p["department"]),
                discount=int(p["discount"]),
            )
            for p in data["positions"]
        ),
        payments=tuple(Payment(_payment_type(p["type"]), int(p["amount"])) for p in data["payments"]),
        taxation=_taxation(data["taxation"]) if data.get("taxation") is not None else None,
        customer_contact=data.get("customer_contact", ""),
        electronic_only=bool(data.get("electronic_only", False)),
        cashier_name=data.get("cashier_name", ""),
        cashier_inn=data.get("cashier_inn", ""),
        header=tuple(text_line_from_json(t) for t in data.get("header", ())),
        footer=tuple(text_line_from_json(t) for t in data.get("footer", ())),
        correction=(
            Correction(
                by_order=bool(corr["by_order"]),
                date=dt.date.fromisoformat(corr["date"]),
                order_number=corr.get("order_number", ""),
            )
            if corr
            else None
        ),
        test_mode=bool(data.get("test_mode", False)),
        settlement_place=data.get("settlement_place", ""),
        internet=bool(data.get("internet", False)),
    )
