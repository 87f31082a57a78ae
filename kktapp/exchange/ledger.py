"""Which shifts of each register are closed and which are exported: exactly once, none lost.

The journal already holds every fiscalised document with its shift number (the device's own
answer), so the shift's transactions are read from there when its report block is written; this
module keeps only what the journal does not: the shifts seen, the Z reports with the device's
shift counters, the block being written and the shifts exported (in the exchange's own file,
:mod:`.db`).

A shift counts as closed when a Z report for it was seen (the owner's hook, or a done
``close_shift`` job), when a later shift of the register has documents, or when the device's
status snapshot says the shift is closed. So a crash between a Z report and the file write loses
nothing: after the restart the next scan finds the shift closed and not exported. A block is
written to a staging file, then recorded as *pending*, renamed into place and recorded as
*exported*; a pending block found after a crash counts as written unless its staging file is
still there (:mod:`.export` says why).

Reads of the journal's ``jobs`` table are plain SELECTs on a connection of this module's own:
the journal's interface has no "documents of a shift" query, and its schema stays its own.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..domain import FiscalResult, SettlementType
from ..journal import DONE, QUEUED, RECEIPT, SENDING, UNKNOWN, receipt_from_json
from .db import ExchangeDb
from .report import RETURN_TYPES, SALE_TYPES, CashDoc, SaleDoc

log = logging.getLogger(__name__)

#: Where POST /kkt receipts come from (kktapp.web.kkt1c.SOURCE; the web layer is above us).
SOURCE_1C = "1c"
#: Settlement types the device counts as income in its shift counters (tag 1054 signs 1 and 4,
#: kktapp.atol.model.INCOME_SIGNS); the rest count as outcome.
INCOME_TYPES = frozenset({
    SettlementType.SELL, SettlementType.SELL_CORRECTION, SettlementType.BUY_RETURN,
    SettlementType.BUY_RETURN_CORRECTION,
})
#: Journal job kinds that end up in a report block.
DOC_KINDS = (RECEIPT, "cash_in", "cash_out")
_UNFINISHED = (QUEUED, SENDING, UNKNOWN)


@dataclass
class ShiftDocs:
    """A shift's documents as the report needs them, and what was left out (kopecks)."""

    docs: list[SaleDoc | CashDoc] = field(default_factory=list)
    #: Left-out receipts (POST /kkt, purchases) by side, for the reconciliation with the device.
    left_out_income: int = 0
    left_out_outcome: int = 0
    #: FN totals of the receipts written, by side (the FN's own numbers, not the payloads').
    fn_sales: int = 0
    fn_returns: int = 0


def _result(row: sqlite3.Row) -> dict | None:
    if row["state"] != DONE or not row["result"]:
        return None
    res = json.loads(row["result"])
    # A receipt without an FD number formed nothing (test mode); a cash in/out has none at all:
    # 49/4F form no FN document (kktapp.atol.model.DocType.CASH_IN).
    if res.get("test_mode") or "shift_number" not in res or (
            row["kind"] == RECEIPT and not res.get("fiscal_document_number")):
        return None
    return res


class Ledger:
    """Shift bookkeeping of the exchange over the journal's documents."""

    def __init__(self, db: ExchangeDb, journal_path: str, *, include_1c: bool = False) -> None:
        self.db = db
        self.journal_path = os.path.abspath(journal_path)
        self.include_1c = include_1c
        self._local = threading.local()

    def _jobs(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None or getattr(self._local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.journal_path, timeout=30.0, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    def close(self) -> None:
        """Close this thread's journal connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
        self._local = threading.local()

    # ------------------------------------------------------------------ learning shifts

    def current_fn(self, device: int) -> str:
        """The register's FN as last seen in a document ("" before the first)."""
        row = self.db.conn().execute("SELECT fn FROM registers WHERE device=?", (device,)).fetchone()
        return row["fn"] if row else ""

    def record_z(self, device: int, fn: str, shift: int, z: dict[str, Any]) -> None:
        """A Z report closed ``shift`` (from the owner's hook): durable before anything else."""
        fn = fn or self.current_fn(device)
        with self.db.transaction() as conn:
            conn.execute("INSERT OR IGNORE INTO shifts (device, fn, shift) VALUES (?, ?, ?)", (device, fn, shift))
            conn.execute("UPDATE shifts SET closed=1, z=? WHERE device=? AND fn=? AND shift=?",
                         (json.dumps(z, sort_keys=True), device, fn, shift))

    def scan(self, device: int, snapshot: dict | None = None) -> None:
        """Learn the shifts and Z reports of the register's finished journal jobs not seen yet.

        The first scan of a register starts at the journal's end: shifts closed before the
        exchange was switched on are not sent to 1C again; the shift open now (by the status
        snapshot) is exported at its Z report. A document without an FN number (the device
        could not read it back) belongs to the register's FN as last seen.
        """
        conn = self.db.conn()
        row = conn.execute("SELECT seen_seq, fn FROM registers WHERE device=?", (device,)).fetchone()
        jobs = self._jobs()
        if row is None:
            top = jobs.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs WHERE device=?", (device,)).fetchone()[0]
            shift_now = (snapshot or {}).get("shift") or {}
            fn = str(((snapshot or {}).get("fn") or {}).get("fn_number") or "")
            with self.db.transaction() as tx:
                tx.execute("INSERT OR IGNORE INTO registers (device, seen_seq, fn) VALUES (?, ?, ?)", (device, top, fn))
                if shift_now.get("state") in ("open", "expired") and shift_now.get("number"):
                    tx.execute("INSERT OR IGNORE INTO shifts (device, fn, shift) VALUES (?, ?, ?)",
                               (device, fn, int(shift_now["number"])))
            return
        seen = watermark = row["seen_seq"]
        fn = row["fn"]
        blocked = False
        shifts: set[tuple[str, int]] = set()
        closed: dict[tuple[str, int], dict] = {}
        for job in jobs.execute("SELECT seq, kind, state, result FROM jobs WHERE device=? AND seq>? ORDER BY seq",
                                (device, seen)):
            if job["state"] in _UNFINISHED:
                blocked = True  # its outcome may still add a document: look at it again later
                continue
            if not blocked:
                watermark = job["seq"]
            res = _result(job)
            if res is None:
                continue
            fn = res.get("fn_number") or fn
            key = (fn, int(res["shift_number"]))
            shifts.add(key)
            if job["kind"] == "close_shift":
                closed[key] = {"result": res}
        if watermark == seen and not shifts:
            return
        with self.db.transaction() as tx:
            for key in shifts:
                tx.execute("INSERT OR IGNORE INTO shifts (device, fn, shift) VALUES (?, ?, ?)", (device, *key))
            for key, z in closed.items():
                tx.execute("UPDATE shifts SET closed=1, z=COALESCE(z, ?) WHERE device=? AND fn=? AND shift=?",
                           (json.dumps(z, sort_keys=True), device, *key))
            tx.execute("UPDATE registers SET seen_seq=?, fn=? WHERE device=?", (watermark, fn, device))

    def owed(self, device: int, snapshot: dict | None = None) -> list[tuple[str, int]]:
        """Closed shifts ``(fn, shift)`` of the register not exported yet, oldest first.

        Closed: a Z report was seen, a later shift of the same FN has documents, the status
        snapshot says so, or the shift belongs to an FN the register no longer uses.
        """
        conn = self.db.conn()
        current = self.current_fn(device)
        tops = {r[0]: r[1] for r in conn.execute("SELECT fn, MAX(shift) FROM shifts WHERE device=? GROUP BY fn",
                                                 (device,))}
        shift_now = (snapshot or {}).get("shift") or {}
        snap_number = int(shift_now.get("number") or 0)
        snap_closed = shift_now.get("state") == "closed"
        snap_fn = str(((snapshot or {}).get("fn") or {}).get("fn_number") or "")
        owed = []
        for row in conn.execute("SELECT fn, shift, closed FROM shifts WHERE device=? AND exported_at IS NULL",
                                (device,)):
            fn, shift = row["fn"], row["shift"]
            by_snapshot = snap_fn in ("", fn) and (snap_number > shift or (snap_closed and snap_number == shift))
            if row["closed"] or shift < tops[fn] or by_snapshot or (fn != current and bool(fn) and bool(current)):
                owed.append((fn, shift))
        return sorted(owed, key=lambda k: (k[0] == current, k[1]))

    def z_report(self, device: int, fn: str, shift: int) -> dict | None:
        """What the Z report hook recorded for a shift (document, device counters), if anything."""
        row = self.db.conn().execute(
            "SELECT z FROM shifts WHERE device=? AND fn=? AND shift=?", (device, fn, shift)
        ).fetchone()
        return json.loads(row["z"]) if row and row["z"] else None

    # ------------------------------------------------------------------ a shift's documents

    def shift_docs(self, device: int, fn: str, shift: int) -> ShiftDocs:
        """The shift's fiscalised receipts and cash operations in FN order."""
        out = ShiftDocs()
        rows = self._jobs().execute(
            "SELECT seq, kind, state, source, payload, result FROM jobs WHERE device=? AND state=? AND kind IN"
            f" ({', '.join('?' * len(DOC_KINDS))}) AND json_extract(result, '$.shift_number')=?"
            " AND COALESCE(json_extract(result, '$.fn_number'), '') IN (?, '')",
            (device, DONE, *DOC_KINDS, shift, fn),
        ).fetchall()
        found = []
        fd = 0
        for row in sorted(rows, key=lambda r: r["seq"]):
            res = _result(row)
            if res is not None:
                # In FN order; a cash operation without an FD number goes after the document the
                # owner formed before it (one device's jobs run in journal order).
                fd = int(res["fiscal_document_number"]) or fd
                found.append((fd, row, FiscalResult.from_dict(res)))
        for _, row, res in sorted(found, key=lambda x: (x[0], x[1]["seq"])):
            payload = json.loads(row["payload"])
            when = res.datetime.replace(tzinfo=None)
            if row["kind"] != RECEIPT:
                amount = int(payload.get("params", {}).get("amount", res.total))
                out.docs.append(CashDoc(when, amount if row["kind"] == "cash_in" else -amount))
                continue
            receipt = receipt_from_json(payload["receipt"])
            income = receipt.type in INCOME_TYPES
            written = receipt.type in SALE_TYPES | RETURN_TYPES
            if row["source"] == SOURCE_1C and not self.include_1c:
                written = False
            if not written:
                if income:
                    out.left_out_income += res.total
                else:
                    out.left_out_outcome += res.total
                continue
            extra = payload.get("extra") or {}
            out.docs.append(SaleDoc(
                when=when, number=res.receipt_number, receipt=receipt, codes=extra.get("codes") or (),
                coefficients=extra.get("coefficients") or (),
            ))
            if income:
                out.fn_sales += res.total
            else:
                out.fn_returns += res.total
        return out

    # ------------------------------------------------------------------ export records

    def last_txn(self, device: int) -> int:
        """The last transaction number written for the register."""
        row = self.db.conn().execute("SELECT last_txn FROM registers WHERE device=?", (device,)).fetchone()
        return int(row[0]) if row else 0

    def pending(self, device: int, fn: str, shift: int) -> dict | None:
        """The block recorded as being written (a crash came before it was recorded as exported)."""
        row = self.db.conn().execute(
            "SELECT pending FROM shifts WHERE device=? AND fn=? AND shift=?", (device, fn, shift)
        ).fetchone()
        return json.loads(row["pending"]) if row and row["pending"] else None

    def begin(self, device: int, fn: str, shift: int, pending: dict) -> None:
        """Durably: this block is about to be written to this file."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE shifts SET pending=? WHERE device=? AND fn=? AND shift=?",
                         (json.dumps(pending, sort_keys=True), device, fn, shift))

    def abandon(self, device: int, fn: str, shift: int) -> None:
        """Durably: the block recorded by :meth:`begin` never reached the file; write it afresh."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE shifts SET pending=NULL WHERE device=? AND fn=? AND shift=?", (device, fn, shift))

    def finish(self, device: int, fn: str, shift: int, export: dict, last_txn: int) -> None:
        """Durably: the shift is in its report file; it is never written again."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE shifts SET exported_at=?, export=?, pending=NULL WHERE device=? AND fn=? AND shift=?",
                         (time.time(), json.dumps(export, sort_keys=True, ensure_ascii=False), device, fn, shift))
            conn.execute("INSERT INTO registers (device, last_txn) VALUES (?, ?) ON CONFLICT(device) DO UPDATE"
                         " SET last_txn=MAX(last_txn, excluded.last_txn)", (device, last_txn))

    def exports(self, device: int, limit: int = 5) -> list[dict]:
        """The register's latest exported shifts with their reconciliation, newest first."""
        rows = self.db.conn().execute(
            "SELECT fn, shift, exported_at, export FROM shifts WHERE device=? AND exported_at IS NOT NULL"
            " ORDER BY exported_at DESC LIMIT ?", (device, limit),
        ).fetchall()
        return [{"fn": r["fn"], "shift": r["shift"], "exported_at": r["exported_at"], **json.loads(r["export"])}
                for r in rows]

    def exported(self, device: int, shift: int, fn: str | None = None) -> bool:
        """Whether the shift (of the register's current FN unless given) is recorded as exported."""
        row = self.db.conn().execute(
            "SELECT exported_at FROM shifts WHERE device=? AND fn=? AND shift=?",
            (device, self.current_fn(device) if fn is None else fn, shift),
        ).fetchone()
        return bool(row and row["exported_at"])
