"""Closed shifts → report files: one block per shift, exactly once, reconciled with the Z report.

For each register, every closed shift not yet exported (:mod:`.ledger`) becomes a block
(:mod:`.report`) appended to the register's report file or replacing a loaded one. The block is
staged beside the file, recorded as pending, renamed into place and recorded as exported; a
pending block whose staged file is gone after a crash was renamed into place and is only
recorded, never written twice, even when 1C has loaded and deleted the file since
(:meth:`ShiftExporter.export`).
"""

from __future__ import annotations

import logging
import os
import time

from ..domain import FiscalResult, format_rub
from .ledger import Ledger, ShiftDocs
from .report import (
    Block,
    BlockTotals,
    build_block,
    header_present,
    merged_content,
    publish,
    staging_path,
    write_staged,
)
from .settings import ExchangeSettings, Register
from .status import StatusBoard, os_error_text

log = logging.getLogger(__name__)


class ShiftExporter:
    """Writes the registers' closed shifts to their report files."""

    def __init__(self, settings: ExchangeSettings, ledger: Ledger, status: StatusBoard) -> None:
        self.settings = settings
        self.ledger = ledger
        self.status = status

    def run(self, register: Register, snapshot: dict | None) -> None:
        """Learn new shifts from the journal and export every closed one; file errors are shown, retried."""
        self.ledger.scan(register.number, snapshot)
        for fn, shift in self.ledger.owed(register.number, snapshot):
            try:
                self.export(register, fn, shift)
            except OSError as exc:
                self.status.problem(f"report:{register.number}", f"Отчёт о смене {shift} кассы {register.number} "
                                    f"не записан в {register.report_file}: {os_error_text(exc, writing=True)}. "
                                    "Сервис повторит запись.")
                return

    def export(self, register: Register, fn: str, shift: int) -> None:
        """Write one closed shift to the register's report file, exactly once.

        The block goes to a staging file beside the report file (on disk), then the ledger
        records it as pending with that file's name, then the staging file is renamed over the
        report file, then the shift is recorded as exported. A crash can leave a pending block,
        and the report file alone cannot say whether the block reached 1C: the seed's 1C loads
        the file and deletes it, so a block that was written may be gone. The staging file
        decides: only the rename removes it once the block is pending (an abandoned block is
        un-recorded before its staging file is deleted), so a staging file still there means 1C
        never saw the block and it is written afresh; no staging file means the rename happened
        and the block is recorded as written, never sent twice. Only someone deleting the
        staging file by hand in that window could lose the shift.
        """
        device, path = register.number, register.report_file
        pending = self.ledger.pending(device, fn, shift)
        if pending is not None and self._recover(register, fn, shift, pending):
            return
        old = _read(path)
        docs = self.ledger.shift_docs(device, fn, shift)
        z = self.ledger.z_report(device, fn, shift) or {}
        closed_at = FiscalResult.from_dict(z["result"]).datetime.replace(tzinfo=None) if z.get("result") else None
        block = build_block(kkm=device, shift=shift, docs=docs.docs, first_txn=self.ledger.last_txn(device),
                            fallback_code=self.settings.fallback_code, closed_at=closed_at)
        problems = reconcile(block, docs, z.get("counters"))
        export = {"file": path, "totals": block.totals.to_dict(), "mismatch": problems, "counters": z.get("counters")}
        content, how = merged_content(old, block)
        staged = staging_path(path)
        write_staged(staged, content)
        self.ledger.begin(device, fn, shift, {"export": export, "last_txn": block.last_txn, "staged": staged})
        if _read(path) != old:
            # 1C touched the file meanwhile (loaded it, marked it): next round reads it again.
            self.ledger.abandon(device, fn, shift)
            _remove(staged)
            return
        publish(staged, path)
        self.ledger.finish(device, fn, shift, export, block.last_txn)
        _log_export(register, shift, block.totals, how)
        self._show(register, shift, export)

    def _recover(self, register: Register, fn: str, shift: int, pending: dict) -> bool:
        """A block recorded as pending by a run that did not finish: True when it is in the file."""
        device, path = register.number, register.report_file
        staged = pending.get("staged")
        if staged is None:
            # Recorded by a kkt that wrote without a staging file: only the file itself can tell.
            old = _read(path)
            if old is None or not header_present(old, device, shift):
                return False
        elif os.path.exists(staged):
            # Never renamed into place: nobody saw it. Un-record first, so that a crash here
            # cannot leave a pending block without its staging file (which reads as "written").
            self.ledger.abandon(device, fn, shift)
            _remove(staged)
            return False
        log.warning("ККТ %d: смена %d уже записана в %s (запись прервалась после файла); отмечаем выгруженной",
                    device, shift, path)
        self.ledger.finish(device, fn, shift, pending["export"], pending["last_txn"])
        self._show(register, shift, pending["export"])
        return True

    def _show(self, register: Register, shift: int, export: dict) -> None:
        """The register's report status after a shift is exported: its totals, or the mismatch."""
        key = f"report:{register.number}"
        problems = export["mismatch"]
        if problems:
            text = "; ".join(problems)
            log.error("ККТ %d: сверка смены %d не сошлась: %s", register.number, shift, text)
            self.status.problem(key, f"Смена {shift}: сверка с Z-отчётом не сошлась: {text}")
            return
        t = export["totals"]
        self.status.ok(key, f"Смена {shift} выгружена в {os.path.basename(register.report_file)} "
                            f"({time.strftime('%d.%m.%Y %H:%M')}): чеков {t['receipts']}, продажи "
                            f"{format_rub(t['sales'])} ₽, возвраты {format_rub(t['returns'])} ₽; сверка с "
                            "Z-отчётом сошлась")


def reconcile(block: Block, docs: ShiftDocs, counters: dict | None) -> list[str]:
    """Differences between the block and what the FN and the Z report's counters say (Russian)."""
    t = block.totals
    problems = []
    if (t.sales, t.returns) != (docs.fn_sales, docs.fn_returns):
        problems.append(f"в файле продажи {format_rub(t.sales)}, возвраты {format_rub(t.returns)}; по ФН "
                        f"{format_rub(docs.fn_sales)} и {format_rub(docs.fn_returns)}")
    if counters:
        sales = int(counters["income"]) - docs.left_out_income
        returns = int(counters["outcome"]) - docs.left_out_outcome
        if (t.sales, t.returns) != (sales, returns):
            problems.append(f"в файле продажи {format_rub(t.sales)}, возвраты {format_rub(t.returns)}; "
                            f"по сменным итогам ККТ (без чеков, не идущих в файл) {format_rub(sales)} и "
                            f"{format_rub(returns)}")
    return problems


def _log_export(register: Register, shift: int, t: BlockTotals, how: str) -> None:
    verb = {"created": "создан", "appended": "дописан", "replaced": "перезаписан"}[how]
    log.info("ККТ %d: смена %d выгружена, файл %s %s: чеков %d, продажи %s, возвраты %s, внесения %s, выплаты %s",
             register.number, shift, register.report_file, verb, t.receipts, format_rub(t.sales),
             format_rub(t.returns), format_rub(t.cash_in), format_rub(t.cash_out))


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
