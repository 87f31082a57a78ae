"""The FIFO worker of a device whose link this process holds.

It connects, settles what holds the queue (:mod:`.recovery`), then executes queued jobs one by
one in journal order: ``sending`` with ``fd_before`` on disk before the first byte of a fiscal
document, then ``done``, ``failed`` or ``unknown``. A lost link ends in :class:`LinkError`, which
the loop answers by reconnecting with back-off; while there is no link, non-fiscal operations
fail at once and fiscal jobs stay queued.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

from ..device import to_json
from ..domain import FiscalResult, Receipt, TextLine
from ..errors import DeviceError, KKTError, LinkError, NotSent, TestShiftClosed
from ..journal import FAILED, RECEIPT, Job, receipt_from_json
from . import policy
from .election import DeviceLock
from .outcome import Outcomes
from .policy import FISCAL_KINDS, SHIFT_KINDS, Reasons, kind_name
from .recovery import Recovery
from .seat import Seat
from .shift import ShiftPolicy
from .status import StatusPublisher

log = logging.getLogger(__package__)


class Worker:
    """Executes one device's queue while this process owns the link."""

    def __init__(self, seat: Seat, lock: DeviceLock, outcomes: Outcomes, shift: ShiftPolicy,
                 recovery: Recovery, status: StatusPublisher) -> None:
        self.seat = seat
        self.lock = lock
        self.outcomes = outcomes
        self.shift = shift
        self.recovery = recovery
        self.status = status
        #: The queue went empty since the last job: check the link before the next document.
        self._was_idle = False
        self._last_prune = 0.0
        self._last_auto_close_check = 0.0

    # ------------------------------------------------------------------ the loop

    def serve(self) -> None:
        """Run until asked to stop (LostLock and bugs propagate to the election)."""
        try:
            self._serve()
        finally:
            # Stopping, or a failure on its way to the election: the last job's row goes first.
            try:
                self.seat.write_unwritten()
            finally:
                # If the journal refused it, recovery settles the job from the FN (the next
                # owner, here or in another process); written after the link is given up, it
                # could overwrite what that recovery found.
                self.seat.unwritten = None

    def _serve(self) -> None:
        seat, status = self.seat, self.status
        backoff = policy.RECONNECT_MIN
        while not seat.stopping.is_set():
            if seat.driver is None:
                seat.write_unwritten()  # before the device is touched again
                try:
                    self._connect()
                except Exception as exc:  # noqa: BLE001 - any failure means "no link yet"
                    status.link_down(exc)
                    self.disconnect()
                    self._fail_waiting_operations(exc)
                    seat.stopping.wait(backoff)
                    backoff = min(backoff * 2, policy.RECONNECT_MAX)
                    continue
                backoff = policy.RECONNECT_MIN
            try:
                if self.recovery.settle():
                    # The status page should show the settled document soon (memory is empty
                    # after recovery, so this becomes a full read once the queue is idle).
                    status.dirty_at = time.monotonic()
                    continue
                job = seat.journal.next_queued(seat.number)
                if job is not None:
                    self._execute(job)
                    status.dirty_at = time.monotonic()
                    if time.monotonic() - status.last_refresh >= seat.host.status_refresh:
                        # Busy: the next job may be waiting; no device read here.
                        status.publish_known()
                    continue
                self._idle()
            except LinkError as exc:
                seat.settled = False
                status.link_down(exc)
                self.disconnect()
            except DeviceError as exc:
                # A status or recovery step refused by the device; jobs are settled inside.
                log.warning("ККТ %d: %s", seat.number, exc.message)
                seat.settled = False
                seat.state.forget()
                seat.write_unwritten()
                seat.sleep(policy.HOLD_RETRY)

    def _connect(self) -> None:
        seat = self.seat
        # A new link: whatever happened while there was none is unknown.
        seat.state.forget()
        seat.settled = False
        driver = seat.open_driver()
        seat.driver = driver
        driver.connect()
        self.status.link_up(driver)

    def disconnect(self) -> None:
        """Close the link (if any); the memory goes with it."""
        seat = self.seat
        # Without the link the owner no longer knows the device is untouched.
        seat.state.forget()
        self.status.up = False
        driver, seat.driver = seat.driver, None
        if driver is not None:
            try:
                driver.close()
            except Exception:  # closing a broken link may fail, nothing to do
                log.debug("ККТ %d: ошибка при закрытии связи", seat.number, exc_info=True)

    def _fail_waiting_operations(self, exc: BaseException) -> None:
        """No link: non-fiscal operations fail now instead of running whenever the link is back.

        A status read or an X report hours later is of no use to whoever asked; fiscal jobs
        (receipts, cash, shifts) stay queued, so nothing accepted is lost.
        """
        seat = self.seat
        error = exc.to_dict() if isinstance(exc, LinkError) else LinkError().to_dict()
        for job in seat.journal.queued(seat.number):
            if job.kind not in FISCAL_KINDS:
                seat.journal.finish(job, FAILED, error=error)
                seat.notify(job.id, job)

    def _idle(self) -> None:
        seat, status = self.seat, self.status
        # No next document to carry the last job's row: its caller must not wait for one.
        seat.write_unwritten()
        self._was_idle = True
        now = time.monotonic()
        if status.refresh_due():
            status.refresh()
        elif status.dirty_at is not None and now - status.dirty_at >= policy.AFTER_JOB_REFRESH:
            status.publish_known()
        if seat.host.auto_close_time is not None and now - self._last_auto_close_check >= 1.0:
            self._last_auto_close_check = now
            self.shift.auto_close()
        self.lock.check(now)
        if now - self._last_prune >= policy.PRUNE_INTERVAL:
            self._last_prune = now
            seat.journal.prune()
        poll = policy.WOKEN_POLL_INTERVAL if seat.host.owners_woken else policy.POLL_INTERVAL
        if status.dirty_at is not None:
            # The snapshot after a job is due AFTER_JOB_REFRESH after it, not a slow poll later
            # (never sooner than the fast poll: a snapshot that stayed due must not spin here).
            poll = min(poll, max(policy.POLL_INTERVAL, status.dirty_at + policy.AFTER_JOB_REFRESH - now))
        seat.sleep(poll)

    # ------------------------------------------------------------------ execution

    def _execute(self, job: Job) -> None:
        was_idle, self._was_idle = self._was_idle, False
        try:
            if was_idle and job.kind in FISCAL_KINDS and self.seat.state.fd_number is not None:
                self._probe()
            if job.kind in FISCAL_KINDS:
                self._execute_fiscal(job)
            else:
                self._execute_plain(job)
        finally:
            if not self.seat.holds(job):  # else its waiters are woken once its row is written
                self.seat.notify(job.id, job)

    def _execute_fiscal(self, job: Job) -> None:
        seat, outcomes = self.seat, self.outcomes
        for attempt in (1, 2):
            try:
                if job.kind in SHIFT_KINDS:
                    if self._test_receipt(job) and not self.shift.is_open():
                        outcomes.fail(job, TestShiftClosed())
                        return
                    self.shift.ensure_open()
                elif job.kind == "close_shift" and self.shift.auto_close_done(job):
                    return
                fd_before = self.recovery.before(job)
            except DeviceError as exc:
                # Nothing of this job reached the device.
                outcomes.fail(job, exc)
                return
            # Durable (FULL) before anything of the document is sent: recovery compares with it.
            seat.settled = False
            if not seat.mark_sending(job, fd_before):
                outcomes.skip_cancelled(job)
                return
            sent_before = self._bytes_sent()
            try:
                result = self._call(job)
            except DeviceError as exc:
                if self.recovery.after_device_error(job, exc, fd_before, retry_allowed=attempt == 1):
                    continue
                return
            except NotSent as exc:
                outcomes.fail(job, exc)
                return
            except LinkError as exc:
                outcomes.mark_unknown(job, Reasons.INTERRUPTED, exc)
                raise
            except Exception as exc:
                if self._failed_before_sending(job, exc, sent_before):
                    return
                # An unexpected failure mid-document is an unknown outcome like a lost link.
                log.exception("ККТ %d: сбой при отправке %s %s", seat.number, kind_name(job.kind), job.id)
                outcomes.mark_unknown(job, Reasons.INTERRUPTED, None)
                raise LinkError(str(exc) or LinkError.message) from exc
            if isinstance(result, FiscalResult):
                self._note_own_document(job, fd_before, result)
            outcomes.done(job, result)
            return

    def _bytes_sent(self) -> int | None:
        """Bytes the driver has written to the device so far; None when it does not count them."""
        sent = getattr(getattr(self.seat.driver, "stats", None), "bytes_sent", None)
        return sent if isinstance(sent, int) else None

    def _failed_before_sending(self, job: Job, exc: Exception, sent_before: int | None) -> bool:
        """An unexpected error while the job was being prepared (nothing written to the device)
        fails the job; True when it did. Otherwise the caller treats it as a broken exchange."""
        if sent_before is None or self._bytes_sent() != sent_before:
            return False
        log.error("ККТ %d: %s %s не отправлен(а): %s: %s", self.seat.number, job.kind, job.key or job.id,
                  type(exc).__name__, exc)
        self.outcomes.fail(job, NotSent(f"{NotSent.message} ({type(exc).__name__}: {exc})"))
        return True

    def _probe(self) -> None:
        """One status round trip before the first document after an idle spell.

        The device may have been switched off or unplugged while the queue was empty, and a
        document sent into a dead link has an unknown outcome that holds the queue until the
        device is back. A lost link found here leaves the job queued ("no link"). Back-to-back
        jobs skip this: the previous one just proved the link. The answer also checks memory: a
        receipt left open or a shift that differs makes the job read the device.
        """
        status = self.seat.device().quick_status()
        state = self.seat.state
        state.clock = (status.datetime, time.monotonic())
        if status.receipt_open:
            state.fd_number = None  # fd_before reads the FN and cancels the stale receipt
        if state.shift_state is not None and (state.shift_state == "open") != status.shift_open:
            state.shift_state = None

    def _note_own_document(self, job: Job, fd_before: int, result: FiscalResult) -> None:
        """Remember the document just formed; a gap in the numbers means the memory was wrong."""
        state = self.seat.state
        if self.recovery.counted(job):
            state.forget()  # fd_before was the driver's counter, not an FN number: read the FN next time
            return
        if not result.test_mode and result.fiscal_document_number and result.fiscal_document_number != fd_before + 1:
            # Harmless for this job (its answer came from the device), but something formed a
            # document the owner did not see: stop trusting memory until the next device read.
            log.error("ККТ %d: %s %s получил ФД %d, ожидался %d; состояние ККТ будет перечитано",
                      self.seat.number, kind_name(job.kind), job.key or job.id, result.fiscal_document_number,
                      fd_before + 1)
            state.forget()
            return
        state.note_document(job.kind, result)
        self.status.last_result = result

    def _execute_plain(self, job: Job) -> None:
        seat = self.seat
        if job.kind not in ("status", "registration"):  # reads change nothing on the device
            # Service operations (reports, resets, cancel) may change what the owner remembers;
            # they are rare, so the next job simply reads the device again.
            seat.state.forget()
        seat.settled = False
        if not seat.mark_sending(job, None):
            self.outcomes.skip_cancelled(job)
            return
        sent_before = self._bytes_sent()
        try:
            result = self._call(job)
        except (DeviceError, NotSent) as exc:
            self.outcomes.fail(job, exc)
            return
        except LinkError as exc:
            # Not fiscal: nothing to reconcile, the caller may simply repeat it.
            seat.journal.finish(job, FAILED, error=exc.to_dict())
            raise
        except Exception as exc:
            if not self._failed_before_sending(job, exc, sent_before):
                raise  # the link may be in any state: the worker loop reconnects
            return
        self.outcomes.done(job, result)

    def _call(self, job: Job) -> Any:
        driver = self.seat.device()
        params = job.payload.get("params") or {}
        host = self.seat.host
        kind = job.kind
        if kind == RECEIPT:
            return driver.sell(self._receipt(job))
        # A caller may name the cashier of a shift report (tags 1021/1203); else conf's.
        cashier = (params.get("cashier_name") or host.cashier_name, params.get("cashier_inn") or host.cashier_inn)
        if kind == "open_shift":
            return driver.open_shift(*cashier)
        if kind == "close_shift":
            return driver.close_shift(*cashier)
        if kind == "settlement_report":
            return driver.settlement_report(*cashier)
        if kind == "cash_in":
            return driver.cash_in(int(params["amount"]))
        if kind == "cash_out":
            return driver.cash_out(int(params["amount"]))
        if kind == "status":
            data = self.status.read_status()
            self.status.store(data)
            return {k: data[k] for k in ("status", "info", "shift", "fn", "totals")}
        if kind == "x_report":
            driver.x_report()
        elif kind == "print_text":
            driver.print_text([TextLine(**line) for line in params.get("lines", [])])
        elif kind == "reprint_last":
            driver.reprint_last()
        elif kind == "open_drawer":
            driver.open_drawer()  # type: ignore[attr-defined]
        elif kind == "registration":
            # Optional in a driver (ATOL A4 43): INN, RNM, taxation, OFD of the registration.
            read = getattr(driver, "registration", None)
            data = read() if read is not None else {}
            return data if isinstance(data, dict) else to_json(data)
        elif kind == "cancel_receipt":
            driver.cancel_receipt()
        elif kind == "reset_summary":
            driver.reset_summary()
        elif kind == "tech_reset":
            driver.tech_reset()
        else:
            raise KKTError(f"неизвестная операция {kind}")
        return {}

    def _test_receipt(self, job: Job) -> bool:
        """A receipt run in test mode, its own or the service's (without decoding the receipt:
        this is asked before every receipt)."""
        return job.kind == RECEIPT and (self.seat.host.test_mode or bool(job.payload["receipt"].get("test_mode")))

    def _receipt(self, job: Job) -> Receipt:
        receipt = receipt_from_json(job.payload["receipt"])
        host = self.seat.host
        changes: dict[str, Any] = {}
        if self._test_receipt(job) and not receipt.test_mode:
            changes["test_mode"] = True
        if not receipt.cashier_name and host.cashier_name:
            changes["cashier_name"] = host.cashier_name
            if not receipt.cashier_inn and host.cashier_inn:
                changes["cashier_inn"] = host.cashier_inn
        return dataclasses.replace(receipt, **changes) if changes else receipt
