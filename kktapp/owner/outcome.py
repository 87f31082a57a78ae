"""Recording a job's outcome: the journal row, the waiters' wake-up and the log line.

Shared by the worker (answers it just got) and recovery (answers it settled from the FN).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from ..domain import FiscalResult
from ..errors import KKTError
from ..journal import DONE, FAILED, RECEIPT, Finish, Job
from .policy import Reasons, kind_name
from .seat import Seat

log = logging.getLogger(__package__)


def prints(job: Job) -> bool:
    """Whether the job's document is printed at all (electronic-only receipts are not)."""
    if job.kind == RECEIPT:
        return not job.payload["receipt"].get("electronic_only", False)
    return True


def prints_owed_copy(driver: object) -> bool:
    """Whether the owner prints a copy owed after paper ran out by itself (``reprint_last``), or
    the driver's command for it is not to be trusted unattended (ATOL: model.REPRINT_OWED_COPY)."""
    return bool(getattr(driver, "prints_owed_copy", True))


class Outcomes:
    """Writes what became of a job; every final or held state goes through here.

    ``done`` and ``fail`` run only for the job the worker is executing, which it took from a
    settled queue: after them nothing holds the queue unless a copy is owed (``seat.settled``).
    """

    def __init__(self, seat: Seat) -> None:
        self.seat = seat

    def copy_owed(self, job: Job, printed: bool) -> tuple[bool, str]:
        """(copy owed, reason) of a document formed with its paper ``printed`` or not: the owner
        prints the copy later (the queue holds until it has), or, with a driver whose copy
        command is not trusted, the operator is told and nothing holds."""
        if printed or not prints(job):
            return False, ""
        if prints_owed_copy(self.seat.driver):
            return True, Reasons.REPRINT
        return False, Reasons.NO_COPY

    def shift_closed(self, result: FiscalResult) -> None:
        """Every Z report, whatever triggered it, goes to the service's observers (the 1C exchange).

        Before the close_shift job is finished: an observer that also watches the journal must
        find the Z report's own data (the shift counters, read now) recorded first.
        """
        self.seat.host.shift_closed(self.seat.number, result, self.seat.driver)

    def done(self, job: Job, result: Any) -> None:
        """The device answered: the result is the caller's answer (its row and its waiters'
        wake-up at the latest with the next document's ``sending``, see :meth:`Seat.finish`)."""
        number = self.seat.number
        if isinstance(result, FiscalResult):
            owed, reason = self.copy_owed(job, result.printed)
            if job.kind == "close_shift":
                self.shift_closed(result)
            self.seat.finish(Finish(job, DONE, result=result.to_dict(), reprint=owed, reason=reason))
            self.seat.settled = not owed
            log.info(
                "ККТ %d: %s %s: ФД %d, ФП %s, смена %d",
                number, kind_name(job.kind), job.key or job.id, result.fiscal_document_number, result.fiscal_sign,
                result.shift_number,
            )
        else:
            self.seat.finish(Finish(job, DONE, result=result if isinstance(result, dict) else {}))
            self.seat.settled = True
            log.info("ККТ %d: %s %s выполнено", number, kind_name(job.kind), job.key or job.id)

    def record_fiscalised(self, job: Job, result: FiscalResult, owed: bool) -> None:
        """Recovery found the job's document in the FN: done with the FN's data."""
        result = dataclasses.replace(result, printed=not owed)
        owed, reason = self.copy_owed(job, result.printed)
        self.seat.write_unwritten()
        if job.kind == "close_shift":
            self.shift_closed(result)
        # Only onto an unsettled row: an operator may have settled it by hand meanwhile.
        self.seat.journal.finish(job, DONE, result=result.to_dict(), reprint=owed, reason=reason,
                                 unsettled_only=True)
        self.seat.notify(job.id, job)

    def fail(self, job: Job, exc: KKTError) -> None:
        """Certainly not fiscalised: failed with the device's (or our) error."""
        # Any device error: the owner's memory of the device is not to be trusted.
        self.seat.state.forget()
        self.seat.write_unwritten()
        self.seat.journal.finish(job, FAILED, error=exc.to_dict())
        self.seat.settled = True
        log.warning("ККТ %d: %s %s: ошибка %d %s",
                    self.seat.number, kind_name(job.kind), job.key or job.id, exc.code, exc.message)

    def mark_unknown(self, job: Job, reason: str, exc: KKTError | None) -> None:
        """The answer was lost mid-document: the queue holds until recovery settles it."""
        self.seat.state.forget()
        self.seat.settled = False
        self.seat.write_unwritten()
        self.seat.journal.mark_unknown(job, reason, exc.to_dict() if exc is not None else None)
        self.seat.notify(job.id, job)
        log.warning("ККТ %d: %s %s: результат неизвестен (%s)", self.seat.number, kind_name(job.kind),
                    job.key or job.id, exc.message if exc is not None else reason)

    def skip_cancelled(self, job: Job) -> None:
        """An operator cancelled it between next_queued and mark_sending: nothing was sent."""
        log.info("ККТ %d: %s %s отменён оператором, в ККТ не отправлен",
                 self.seat.number, kind_name(job.kind), job.key or job.id)
