"""What the device owner decides by: operations, job kinds, device codes, reasons and timing.

The lowest piece of :mod:`kktapp.owner`: constants only, imported by the service (which
operations a caller may submit, why a job waits) and by every owner module. The timing knobs
are read as ``policy.NAME`` at the moment of use, so a test (or an operator's site hook) that
changes them here changes them for every piece.
"""

from __future__ import annotations

import datetime as dt

from ..atol.errors import ErrorCode
from ..domain import SETTLEMENT_REPORT_TITLE
from ..errors import OutcomeUnknown
from ..journal import RECEIPT
from ..shtrih import errors as shtrih

#: Seconds between attempts to become the owner of a device.
ELECTION_INTERVAL = 0.5
#: Seconds the idle worker waits for a wake-up before polling the journal again, when jobs
#: queued by other processes do not wake it (no wake-up channel between processes here).
POLL_INTERVAL = 0.025
#: The same when they do: the poll only catches a lost wake-up or a change made by hand (an
#: operator's decision on a held queue), and 64 idle registers polling every 25 ms cost a
#: tenth of a core.
WOKEN_POLL_INTERVAL = 0.25
#: Reconnect back-off bounds, seconds.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 3.0
#: Seconds between checks while the queue holds for paper or a failing recovery step.
HOLD_RETRY = 1.0
#: Seconds between looks at the device while a job's outcome waits for the operator (the device
#: could not tell whether its document exists): the look is cheap, but nothing is expected to
#: change by itself.
UNDECIDED_RECHECK = 60.0
#: Quiet seconds after a job before the status snapshot gets the job's document (from the
#: owner's memory, no device read): a client sending receipt after receipt should not wait for
#: a snapshot write between them.
AFTER_JOB_REFRESH = 0.1
#: Longest time a device that is never idle goes without a full status read (seconds). The full
#: read (about seven tasks, 0.2 s of a real device) runs when the service's status_refresh is
#: due and the queue is empty; between back-to-back jobs the snapshot is updated from what the
#: owner already knows, and only once in this long are the FN and printer read anyway.
BUSY_FULL_REFRESH = 300.0
#: The owner re-reads the shift from the device when, by its estimate of the device clock, the
#: shift is this close to its 24 hours: the device decides, and the estimate comes from document
#: times rounded to the minute.
SHIFT_EXPIRY_MARGIN = dt.timedelta(minutes=5)
#: Seconds between checks that the lock file is still in place.
LOCK_CHECK_INTERVAL = 5.0
#: Seconds between journal prunes.
PRUNE_INTERVAL = 3600.0
#: Sends of one fiscal document after which recovery, finding it still unformed, fails it
#: instead of sending it again: a document that breaks the exchange every time (a firmware
#: fault, a value the device chokes on) must not hold the register's queue for ever. Failing
#: is safe: recovery has just read the FN and cancelled the open receipt, so the document
#: certainly does not exist.
MAX_SEND_ATTEMPTS = 5
#: Seconds between log reminders while a device stays unreachable.
DOWN_REMINDER = 300.0

# Device codes the shift policy and recovery act on, of both protocol families (ATOL, Shtrih-M;
# their tables do not collide on these codes).
#: "Shift exceeded 24 h" from the device and from the FN.
SHIFT_EXPIRED_CODES = frozenset({ErrorCode.SHIFT_EXPIRED, ErrorCode.FN_SHIFT_EXPIRED, *shtrih.SHIFT_EXPIRED_CODES})
#: Printer trouble. When the document was fiscalised anyway, its paper copy is owed.
PRINTER_CODES = frozenset({
    ErrorCode.NO_PAPER, ErrorCode.NO_PRINTER, ErrorCode.PRINTER_MECHANICAL, ErrorCode.HEAD_OVERHEAT,
    *shtrih.PRINTER_CODES,
})
#: "Shift closed": the owner's memory said open (stale after something it cannot see, such as
#: the FN closing the shift): open it and retry once.
SHIFT_CLOSED_CODES = frozenset({ErrorCode.SHIFT_CLOSED, shtrih.ErrorCode.SHIFT_CLOSED})
#: "A receipt is open": a stale receipt the owner did not know about; it is cancelled and the job
#: retried once.
RECEIPT_OPEN_CODES = frozenset({
    ErrorCode.RECEIPT_OPEN, ErrorCode.SALE_RECEIPT_OPEN, ErrorCode.RETURN_RECEIPT_OPEN,
    ErrorCode.ANNUL_RECEIPT_OPEN, shtrih.ErrorCode.RECEIPT_OPEN,
})

#: Jobs that form a fiscal document: they get ``fd_before`` and recovery.
FISCAL_KINDS = frozenset({RECEIPT, "open_shift", "close_shift", "settlement_report", "cash_in", "cash_out"})
#: Jobs that need an open, fresh shift first.
SHIFT_KINDS = frozenset({RECEIPT, "cash_in", "cash_out"})
#: Every operation a caller may submit, besides receipts.
OPERATIONS = frozenset({
    "status", "open_shift", "close_shift", "x_report", "settlement_report", "cash_in", "cash_out", "print_text",
    "reprint_last", "cancel_receipt", "reset_summary", "tech_reset", "open_drawer", "registration",
})

#: Russian names of job kinds for log lines and pages (one language per line).
KIND_NAMES = {
    RECEIPT: "чек", "status": "чтение состояния", "open_shift": "открытие смены",
    "close_shift": "Z-отчёт (закрытие смены)", "x_report": "X-отчёт", "settlement_report": SETTLEMENT_REPORT_TITLE,
    "cash_in": "внесение наличных",
    "cash_out": "выплата наличных", "print_text": "печать текста", "reprint_last": "повтор печати последнего документа",
    "cancel_receipt": "отмена открытого чека", "reset_summary": "обнуление счётчиков",
    "tech_reset": "технологическое обнуление",
}


def kind_name(kind: str) -> str:
    """The Russian name of a job kind (the kind itself if unknown)."""
    return KIND_NAMES.get(kind, kind)


class Reasons:
    """Russian explanations of why a job waits or its outcome is not known yet."""

    INTERRUPTED = OutcomeUnknown.message
    CRASHED = "работа сервиса прервалась во время отправки документа в ККТ; сервис проверит ФН и завершит его сам"
    REPRINT = (
        "чек пробит, но не напечатан (нет бумаги или ошибка принтера): "
        "копия будет напечатана, когда принтер будет готов"
    )
    NO_COPY = (
        "документ оформлен в ККТ, но не напечатан (нет бумаги или ошибка принтера). Копию сервис сам не "
        "печатает: команда повтора печати для этой ККТ не подтверждена и может напечатать не тот документ. "
        "Данные документа — в ответе; если нужна бумажная копия, напечатайте её на ККТ вручную"
    )
    LINK_DOWN = "нет связи с ККТ: документ в очереди и будет отправлен, когда связь восстановится"
    HELD = "очередь ККТ ждёт выяснения результата предыдущего документа"
    NO_OWNER = "нет свежих данных о ККТ"
    CHECK_FAILED = "не удалось проверить ФН после сбоя; сервис повторит проверку"
