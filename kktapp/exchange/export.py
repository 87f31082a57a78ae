"""Closed shifts → report files: one block per shift, exactly once, reconciled with the Z report.

For each register, every closed shift not yet exported (:mod:`.ledger`) becomes a block
(:mod:`.report`) appended to the register's report file or replacing a loaded one. The block is
recorded as pending before the file is written and as exported after the rename; a pending block
found already in the file after a crash is only recorded, never written twice.
"""

from __future__ import annotations

import logging
import os
import time

from ..domain import FiscalResult, format_rub
from .ledger import Ledger, ShiftDocs
from .report import Block, build_block, header_present, merged_content, write_atomically
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
        """Write one closed shift to the register's report file, exactly once."""
        device, path = register.number, register.report_file
        old = _read(path)
        pending = self.ledger.pending(device, fn, shift)
        if pending is not None and old is not None and header_present(old, device, shift):
            # Written before a crash, not yet recorded: record it, never write it twice.
            log.warning("ККТ %d: смена %d уже в %s (запись прервалась после файла); отмечаем выгруженной",
                        device, shift, path)
            self.ledger.finish(device, fn, shift, pending["export"], pending["last_txn"])
            return
        docs = self.ledger.shift_docs(device, fn, shift)
        z = self.ledger.z_report(device, fn, shift) or {}
        closed_at = FiscalResult.from_dict(z["result"]).datetime.replace(tzinfo=None) if z.get("result") else None
        block = build_block(kkm=device, shift=shift, docs=docs.docs, first_txn=self.ledger.last_txn(device),
                            fallback_code=self.settings.fallback_code, closed_at=closed_at)
        problems = reconcile(block, docs, z.get("counters"))
        export = {"file": path, "totals": block.totals.to_dict(), "mismatch": problems, "counters": z.get("counters")}
        self.ledger.begin(device, fn, shift, {"export": export, "last_txn": block.last_txn})
        content, how = merged_content(old, block)
        if _read(path) != old:
            return  # 1C touched the file meanwhile (loaded it, marked it): next round reads it again
        write_atomically(path, content)
        self.ledger.finish(device, fn, shift, export, block.last_txn)
        _log_export(register, shift, block, how)
        key = f"report:{register.number}"
        if problems:
            text = "; ".join(problems)
            log.error("ККТ %d: сверка смены %d не сошлась: %s", device, shift, text)
            self.status.problem(key, f"Смена {shift}: сверка с Z-отчётом не сошлась: {text}")
        else:
            t = block.totals
            self.status.ok(key, f"Смена {shift} выгружена в {os.path.basename(path)} "
                                f"({time.strftime('%d.%m.%Y %H:%M')}): чеков {t.receipts}, продажи "
                                f"{format_rub(t.sales)} ₽, возвраты {format_rub(t.returns)} ₽; сверка с Z-отчётом "
                                "сошлась")


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


def _log_export(register: Register, shift: int, block: Block, how: str) -> None:
    t = block.totals
    verb = {"created": "создан", "appended": "дописан", "replaced": "перезаписан"}[how]
    log.info("ККТ %d: смена %d выгружена, файл %s %s: чеков %d, продажи %s, возвраты %s, внесения %s, выплаты %s",
             register.number, shift, register.report_file, verb, t.receipts, format_rub(t.sales),
             format_rub(t.returns), format_rub(t.cash_in), format_rub(t.cash_out))


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None
