"""Recovery of uncertain outcomes: was the document formed or not? The FN decides.

Exactly-once rests on three rules:

1. Before a fiscal document goes out, the FN's last document number is stored with the job
   (``fd_before``, state ``sending``) durably (:meth:`Recovery.fd_before` gives it).
2. If the answer is lost (link error, crash, power cut), the job becomes ``unknown`` and the
   device's queue holds. After reconnecting, the job's own document after that number means it
   was fiscalised: it is recorded as done with the device's own data (and reprinted if its paper
   copy is owed). A receipt's document is found by the driver's ``receipt_since`` where it has
   one (its type, sign and total must be the receipt's: a shift report that the receipt's own
   open formed is not it), otherwise any larger last number counts. With no document an open
   receipt is cancelled and the job runs again. Nothing here comes from memory: a new process
   decides as the one that sent the job. When the device cannot tell (OutcomeUnknown), the job
   stays ``unknown`` with the device's explanation for the operator and is never sent again.
3. ``failed`` is recorded only when the device certainly did not fiscalise the document.

A device error answer is settled the same way (:meth:`Recovery.after_device_error`): the FN is
read, a document that exists anyway is recorded, and a few known refusals (shift over 24 h or
closed, a stale open receipt) are cured and the job retried once.
"""

from __future__ import annotations

import datetime as dt
import logging

from ..device import LastDocument
from ..domain import FiscalResult, format_rub
from ..errors import DeviceError, GaveUp, LinkError, NotThisReceipt, OutcomeUnknown
from ..journal import DONE, FAILED, RECEIPT, SENDING, Job, document_total, receipt_from_json
from . import policy
from .outcome import Outcomes, prints, prints_owed_copy
from .policy import (
    FISCAL_KINDS,
    PRINTER_CODES,
    RECEIPT_OPEN_CODES,
    SHIFT_CLOSED_CODES,
    SHIFT_EXPIRED_CODES,
    SHIFT_KINDS,
    Reasons,
    kind_name,
)
from .seat import Seat
from .shift import ShiftPolicy
from .status import StatusPublisher

log = logging.getLogger(__package__)


class Recovery:
    """Settles what holds a device's queue and what a device error left uncertain."""

    def __init__(self, seat: Seat, outcomes: Outcomes, shift: ShiftPolicy, status: StatusPublisher) -> None:
        self.seat = seat
        self.outcomes = outcomes
        self.shift = shift
        self.status = status

    def counted(self, job: Job) -> bool:
        """True for a job whose document the FN may not number (cash in/out: Shtrih-M's and
        ATOL's): its "before" is the driver's own counter (Shtrih-M its document number, ATOL
        the cash in the drawer), and only that counter settles it."""
        return job.kind in getattr(self.seat.driver, "counted_kinds", ())

    def before(self, job: Job) -> int:
        """What the job's outcome is later judged against: the FN's last document number, or
        the driver's document counter for a counted job."""
        if self.counted(job):
            # A receipt another program left open refuses cash in/out too: annulled here, as
            # before any document, when the owner does not know the FN's state.
            self.fd_before()
            return self.seat.device().document_counter()  # type: ignore[attr-defined]
        return self.fd_before()

    def formed_since(self, job: Job, before: int) -> FiscalResult | None:
        """The result of the counted job's document formed since ``before``; None when none was.
        OutcomeUnknown when the counter cannot tell (the driver says why)."""
        amount = int(job.payload.get("params", {}).get("amount", 0))
        return self.seat.device().counted_result(before, amount, kind=job.kind)  # type: ignore[attr-defined]

    def formed(self, job: Job, before: int, last: LastDocument) -> FiscalResult | None:
        """The job's document formed after FD ``before`` as the FN tells it (``last`` is its last
        document); None when there is none. A receipt is looked for by the driver's
        ``receipt_since`` where it has one; OutcomeUnknown when the device cannot tell."""
        if last.fd_number <= before:
            return None
        find = getattr(self.seat.driver, "receipt_since", None)
        if job.kind == RECEIPT and find is not None:
            return find(before, receipt_from_json(job.payload["receipt"]))
        return self.result_from_device(job, last)

    def undecided(self, job: Job, exc: OutcomeUnknown) -> None:
        """The device cannot tell whether the job's document exists: the job stays unknown with
        the reason for the operator, and the queue holds; it is never sent again on a guess."""
        if job.reason != exc.message:
            self.outcomes.mark_unknown(job, exc.message, exc)
            log.error("ККТ %d: %s %s: результат нельзя установить по ККТ, нужно решение оператора",
                      self.seat.number, kind_name(job.kind), job.key or job.id)

    def fd_before(self) -> int:
        """The FN's last document number before the job's document: remembered, else read.

        Reading it costs three tasks in two round trips; while the owner holds the link the
        number only changes by the documents it forms itself, whose numbers it keeps.
        """
        state = self.seat.state
        if state.fd_number is not None:
            return state.fd_number
        driver = self.seat.device()
        last = driver.last_document()
        if last.receipt_open:
            # Nothing of ours is in flight (the queue would hold), so a receipt left
            # open is stale (another program, a crash before sending): annul it.
            log.warning("ККТ %d: на ККТ открыт чужой чек; отменяем его", self.seat.number)
            driver.cancel_receipt()
        state.fd_number = last.fd_number
        return last.fd_number

    def settle(self) -> bool:
        """Settle what holds the queue; True when there was something (the loop re-checks)."""
        if self.seat.settled:
            return False
        # The journal must show the last job as it ended, not still "sending".
        self.seat.write_unwritten()
        pending = self.seat.journal.unsettled(self.seat.number)
        if not pending:
            self.check_hand_settled()
            self.seat.settled = True
            return False
        job = pending[0]
        if job.state == DONE and job.reprint:
            self._reprint(job)
        elif job.kind not in FISCAL_KINDS:
            # A non-fiscal operation was cut off by a crash: report it, do not repeat it.
            self.seat.journal.finish(job, FAILED, error=LinkError().to_dict(), unsettled_only=True)
            self.seat.notify(job.id, job)
        else:
            self._recover(job)
        return True

    def _recover(self, job: Job) -> None:
        seat = self.seat
        driver = seat.device()
        # Never settle from memory: the FN alone says whether the document exists.
        seat.state.forget()
        if job.state == SENDING:
            # Found in flight: the process that sent it died.
            self.outcomes.mark_unknown(job, Reasons.CRASHED, None)
        if job.fd_before is None:
            # Cannot happen (mark_sending always stores it for fiscal jobs); never guess.
            log.error("ККТ %d: %s без номера ФД до отправки; нужна проверка оператором", seat.number, job.id)
            seat.sleep(policy.HOLD_RETRY * 5)
            return
        try:
            if self.counted(job):
                if self._settle_counted(job, job.fd_before):
                    return
                last = None
            else:
                last = driver.last_document()
                result = self.formed(job, job.fd_before, last)
                if result is not None:
                    status = driver.status()
                    owed = prints(job) and (not result.printed or not status.paper_present or status.printer_error)
                    log.info("ККТ %d: %s %s был пробит до сбоя (ФД %d)",
                             seat.number, kind_name(job.kind), job.key or job.id,
                             result.fiscal_document_number)
                    self.outcomes.record_fiscalised(job, result, owed)
                    return
            if last is not None and last.receipt_open:
                driver.cancel_receipt()
        except DeviceError as exc:
            log.warning("ККТ %d: проверка ФН не удалась: %s", seat.number, exc.message)
            seat.journal.set_reason(job, f"{Reasons.CHECK_FAILED} ({exc.message})")
            seat.notify(job.id, job)
            seat.sleep(policy.HOLD_RETRY)
            return
        except OutcomeUnknown as exc:
            self.undecided(job, exc)
            seat.sleep(policy.UNDECIDED_RECHECK)
            return
        if job.attempts >= policy.MAX_SEND_ATTEMPTS:
            # Certainly not fiscalised, and every send ended the same way: stop retrying it.
            exc = GaveUp(job.attempts)
            seat.journal.finish(job, FAILED, error=exc.to_dict(), reason=exc.message, unsettled_only=True)
            seat.notify(job.id, job)
            log.error("ККТ %d: %s %s снят с очереди после %d попыток: документ не пробит (номер %d не изменился)",
                      seat.number, job.kind, job.key or job.id, job.attempts, job.fd_before)
            return
        # Certainly not fiscalised: back to the head of the queue, the loop sends it again.
        log.info("ККТ %d: %s %s не был пробит; отправляем снова", seat.number, kind_name(job.kind), job.key or job.id)
        seat.journal.requeue(job)
        seat.notify(job.id, job)

    def _settle_counted(self, job: Job, before: int, *, owed: bool = False) -> bool:
        """Record a counted job whose document exists; True when it did (DeviceError and
        OutcomeUnknown pass up). ``owed``: the device said its paper copy failed."""
        result = self.formed_since(job, before)
        if result is None:
            return False
        log.info("ККТ %d: %s %s был выполнен до сбоя", self.seat.number, kind_name(job.kind), job.key or job.id)
        self.outcomes.record_fiscalised(job, result, owed)
        return True

    def check_hand_settled(self) -> None:
        """Read from the FN the documents operators named for receipts they settled by hand.

        The operator gives the FD number (and maybe the fiscal sign); the FN also knows the
        receipt's number in its shift and the shift, which 1C takes for "printed" only when not 0
        (kktapp.web.kkt1c). The document must be this receipt's (the driver's
        ``receipt_document``: type, settlement sign, total); then the result is the FN's, with
        ``settled_by_hand`` kept and ``fn_checked`` true. Otherwise the operator's result stays,
        ``fn_checked`` false and ``fn_note`` say why, and the log says it as an error: the
        operator may have typed another document's number. Either way the check is done once;
        a lost link leaves it due for the next connection.
        """
        seat = self.seat
        due = seat.journal.fn_checks_due(seat.number)
        if not due:
            return
        read = getattr(seat.device(), "receipt_document", None)
        for job in due:
            result = dict(job.result or {})
            mark = dict(result.get("settled_by_hand") or {})
            fd = int(mark.get("fiscal_document_number") or result.get("fiscal_document_number") or 0)
            note = ""
            if read is None:
                note = "ККТ этой модели не читает документы ФН: номер чека и смены не сверены"
            else:
                try:
                    found = read(fd, receipt_from_json(job.payload["receipt"]))
                except OutcomeUnknown as exc:
                    note = exc.message
                except DeviceError as exc:
                    note = NotThisReceipt.unreadable(fd, f"ошибка {exc.code}: {exc.message}").message
                else:
                    result = found.to_dict()
            mark["fn_checked"] = not note
            if note:
                mark["fn_note"] = note
            result["settled_by_hand"] = mark
            if not seat.journal.record_fn_check(job, result):
                continue
            seat.notify(job.id, job)
            if note:
                log.error("ККТ %d: чек %s, отмеченный оператором как пробитый (ФД %d), не сверен с ФН: %s; "
                          "проверьте номер ФД", seat.number, job.key or job.id, fd, note)
            else:
                log.info("ККТ %d: чек %s, отмеченный оператором как пробитый, сверен с ФН: ФД %d, чек %d, смена %d,"
                         " ФП %s", seat.number, job.key or job.id, fd, result.get("receipt_number", 0),
                         result.get("shift_number", 0), result.get("fiscal_sign", ""))

    def result_from_device(self, job: Job, last: LastDocument) -> FiscalResult:
        """The fiscal result of the job's document as the FN tells it."""
        result = last.result
        if result is None:
            # The driver could not read the document back; record what is certain.
            shift = self.seat.device().shift_status()
            result = FiscalResult(
                fiscal_document_number=last.fd_number, fiscal_sign="", receipt_number=0,
                shift_number=shift.number, datetime=dt.datetime.now().replace(microsecond=0),
                total=document_total(job),
            )
        elif job.kind == RECEIPT:
            expected = receipt_from_json(job.payload["receipt"]).total
            if result.total != expected:
                log.error("ККТ %d: последний ФД %d на %s ₽, а чек %s на %s ₽", self.seat.number,
                          last.fd_number, format_rub(result.total), job.key or job.id, format_rub(expected))
        return result

    def after_device_error(self, job: Job, exc: DeviceError, fd_before: int, *, retry_allowed: bool) -> bool:
        """Settle a device error answer; True means "run the job again now"."""
        seat = self.seat
        driver = seat.device()
        # The device disagreed with what the owner expected: from here on only device reads count.
        seat.state.forget()
        cancelled = False
        try:
            if self.counted(job):
                # One command, no receipt to cancel: done exactly when the counter moved.
                if self._settle_counted(job, fd_before, owed=exc.code in PRINTER_CODES and prints(job)):
                    return False
                # Not done. A stale receipt opened behind the owner's back refuses cash in/out
                # as it refuses a receipt: read the FN so that it is annulled and the job retried.
                last = driver.last_document() if exc.code in RECEIPT_OPEN_CODES else None
            else:
                last = driver.last_document()
                result = self.formed(job, fd_before, last)
                if result is not None:
                    # Fiscalised although the device complained (paper ran out while printing).
                    owed = exc.code in PRINTER_CODES and prints(job)
                    self.outcomes.record_fiscalised(job, result, owed)
                    return False
            if last is not None and last.receipt_open:
                driver.cancel_receipt()
                cancelled = True
        except LinkError as link:
            self.outcomes.mark_unknown(job, Reasons.INTERRUPTED, link)
            raise
        except OutcomeUnknown as unknown:
            self.undecided(job, unknown)
            return False
        if retry_allowed and exc.code in SHIFT_EXPIRED_CODES and job.kind in SHIFT_KINDS:
            # The device's clock says the shift is over 24 h although the owner thought it open
            # (the clocks differ, or the device clock was moved): Z report now, the next attempt
            # opens a new shift and fiscalises.
            log.info("ККТ %d: смена превысила 24 часа (код %d), закрываем её", seat.number, exc.code)
            seat.journal.requeue(job)
            try:
                self.shift.close(driver)
            except DeviceError as z_exc:
                log.warning("ККТ %d: Z-отчёт не снят: %s", seat.number, z_exc.message)
                self.outcomes.fail(job, exc)
                return False
            return True
        if retry_allowed and exc.code in SHIFT_CLOSED_CODES and job.kind in SHIFT_KINDS:
            # The owner's memory said the shift was open; the device says closed. The next attempt
            # reads the shift (memory was just dropped) and opens it.
            log.info("ККТ %d: смена закрыта (код %d), открываем её и повторяем", seat.number, exc.code)
            seat.journal.requeue(job)
            return True
        if retry_allowed and cancelled and exc.code in RECEIPT_OPEN_CODES:
            # A stale receipt stood in the way (ours, had it opened, would have been cancelled by
            # the driver before this): it is annulled now, so the job may go once more.
            log.warning("ККТ %d: на ККТ был открыт чужой чек; он отменён, повторяем", seat.number)
            seat.journal.requeue(job)
            return True
        self.outcomes.fail(job, exc)
        return False

    def _reprint(self, job: Job) -> None:
        """Print the owed copy once the printer is ready; until then the queue holds. A driver
        whose copy command is not trusted (a copy owed since before this service knew that):
        the operator is told instead, and the queue moves on."""
        seat = self.seat
        driver = seat.device()
        if not prints_owed_copy(driver):
            result = dict(job.result or {}, printed=False)
            seat.journal.finish(job, DONE, result=result, reprint=False, reason=Reasons.NO_COPY)
            log.warning("ККТ %d: копия документа %s не будет напечатана сервисом: %s", seat.number,
                        job.key or job.id, Reasons.NO_COPY)
            seat.notify(job.id, job)
            return
        status = driver.status()
        if status.paper_present and not status.printer_error:
            try:
                driver.reprint_last()
            except DeviceError as exc:
                log.warning("ККТ %d: копия чека не напечатана: %s", seat.number, exc.message)
            else:
                result = dict(job.result or {})
                result["printed"] = True
                seat.journal.reprinted(job, result)
                log.info("ККТ %d: напечатана копия документа %s", seat.number, job.key or job.id)
                seat.notify(job.id, job)
                self.status.refresh()
                return
        if self.status.refresh_due():
            self.status.refresh()
        seat.sleep(policy.HOLD_RETRY)
