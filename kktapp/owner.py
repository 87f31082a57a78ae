"""The one owner of a device link: election across processes, the FIFO worker, recovery.

An ATOL device accepts one connection, yet Apache mod_wsgi and gunicorn run several processes.
Every process runs one :class:`DeviceOwner` thread per device; the thread tries a non-blocking
``flock`` on ``<journal>.device-N.lock`` every :data:`ELECTION_INTERVAL` seconds. The holder alone
opens the driver and executes that device's queued jobs in journal order. The kernel drops the
lock when its process dies (even by ``kill -9``), so another process takes over within a second
and starts by settling whatever the dead owner left in flight.

Exactly-once rests on three rules:

1. Before a fiscal document goes out, the FN's last document number is stored with the job
   (``fd_before``, state ``sending``) durably.
2. If the answer is lost (link error, crash, power cut), the job becomes ``unknown`` and the
   device's queue holds. After reconnecting, a larger last document number means the document
   was fiscalised: it is recorded as done with the device's own data (and reprinted if its paper
   copy is owed). Otherwise an open receipt is cancelled and the job runs again.
3. ``failed`` is recorded only when the device certainly did not fiscalise the document.

While it holds the link, the owner remembers the FN's last document number and the shift state
(:class:`DeviceState`) instead of reading them before every job: the device accepts one
connection and that connection is the owner's, so nothing else can form a document or open or
close a shift behind its back. The memory is filled only from device reads and from the
documents the owner itself just formed, and dropped on (re)connect, after a lost link, an
unknown outcome, an unexpected exception or any device error, and whenever a status read
refreshes it. Recovery never uses it: settling an unknown outcome always reads the FN. The
shift's 24 hours are decided by the device's clock, which may differ from ours (and tests move
it): a receipt refused with "shift over 24 h" gets a Z report, a new shift and one retry, and one
refused with "shift closed" gets a new shift and one retry.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import fcntl
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from .atol.errors import ErrorCode
from .device import Driver, LastDocument, ShiftStatus, to_json
from .domain import FiscalResult, Receipt, TextLine, format_rub
from .errors import DeviceError, GaveUp, KKTError, LinkError, NotSent, OutcomeUnknown
from .health import human_duration
from .journal import DONE, FAILED, QUEUED, RECEIPT, SENDING, UNKNOWN, Job, receipt_from_json
from .shtrih import errors as shtrih

if TYPE_CHECKING:
    from .service import DeviceConfig, FiscalService

log = logging.getLogger(__name__)

#: Seconds between attempts to become the owner of a device.
ELECTION_INTERVAL = 0.5
#: Seconds the idle worker waits for an in-process wake-up before polling the journal again;
#: jobs written by other processes are found at this pace.
POLL_INTERVAL = 0.025
#: Reconnect back-off bounds, seconds.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 3.0
#: Seconds between checks while the queue holds for paper or a failing recovery step.
HOLD_RETRY = 1.0
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

#: Jobs that form a fiscal document: they get ``fd_before`` and recovery.
FISCAL_KINDS = frozenset({RECEIPT, "open_shift", "close_shift", "cash_in", "cash_out"})
#: Jobs that need an open, fresh shift first.
SHIFT_KINDS = frozenset({RECEIPT, "cash_in", "cash_out"})
#: "Shift closed": the owner's memory said open (stale after something it cannot see, such as
#: the FN closing the shift): open it and retry once.
SHIFT_CLOSED_CODES = frozenset({ErrorCode.SHIFT_CLOSED, shtrih.ErrorCode.SHIFT_CLOSED})
#: "A receipt is open": a stale receipt the owner did not know about; it is cancelled and the job
#: retried once.
RECEIPT_OPEN_CODES = frozenset({
    ErrorCode.RECEIPT_OPEN, ErrorCode.SALE_RECEIPT_OPEN, ErrorCode.RETURN_RECEIPT_OPEN,
    ErrorCode.ANNUL_RECEIPT_OPEN, shtrih.ErrorCode.RECEIPT_OPEN,
})
#: Every operation a caller may submit, besides receipts.
OPERATIONS = frozenset({
    "status", "open_shift", "close_shift", "x_report", "cash_in", "cash_out", "print_text",
    "reprint_last", "cancel_receipt", "reset_summary", "tech_reset", "open_drawer", "registration",
})


class LostLock(Exception):
    """The device's lock file was removed or replaced while this process owned the device."""


class Reasons:
    """Russian explanations of why a job waits or its outcome is not known yet."""

    INTERRUPTED = OutcomeUnknown.message
    CRASHED = "работа сервиса прервалась во время отправки документа в ККТ; сервис проверит ФН и завершит его сам"
    REPRINT = (
        "чек пробит, но не напечатан (нет бумаги или ошибка принтера): "
        "копия будет напечатана, когда принтер будет готов"
    )
    LINK_DOWN = "нет связи с ККТ: документ в очереди и будет отправлен, когда связь восстановится"
    HELD = "очередь ККТ ждёт выяснения результата предыдущего документа"
    NO_OWNER = "нет свежих данных о ККТ"
    CHECK_FAILED = "не удалось проверить ФН после сбоя; сервис повторит проверку"


@dataclasses.dataclass
class DeviceState:
    """What the owner knows about its device while it holds the link (see the module docstring).

    ``None`` means "not known, read the device". Times are the device's own clock.
    """

    #: The FN's last fiscal document number.
    fd_number: int | None = None
    #: "open" or "closed" (an expired shift is never remembered: it is handled at once).
    shift_state: str | None = None
    shift_number: int = 0
    shift_opened_at: dt.datetime | None = None
    #: Receipts in the shift (for the status page).
    shift_receipts: int = 0
    #: A device clock reading and ``time.monotonic()`` when it was taken: the device's "now" is
    #: estimated from these to close an expiring shift before the device refuses a receipt.
    clock: tuple[dt.datetime, float] | None = None

    def forget(self) -> None:
        """Nothing is known any more (the next job reads the device)."""
        self.fd_number = None
        self.shift_state = None
        self.shift_opened_at = None
        self.clock = None

    def device_now(self) -> dt.datetime | None:
        """The device clock now, estimated from the last reading; None when there was none."""
        if self.clock is None:
            return None
        when, mono = self.clock
        return when + dt.timedelta(seconds=time.monotonic() - mono)

    def shift_expiring(self) -> bool:
        """The remembered open shift is at (or near) its 24 hours by the device clock estimate."""
        now = self.device_now()
        if self.shift_state != "open" or self.shift_opened_at is None or now is None:
            return False
        return now >= self.shift_opened_at + dt.timedelta(hours=24) - SHIFT_EXPIRY_MARGIN

    def note_shift(self, shift: ShiftStatus) -> None:
        """A shift status read from the device."""
        if shift.state == "expired":
            # Never reuse: the next job must close it first, and it reads the device for that.
            self.shift_state = None
            return
        self.shift_state = shift.state
        self.shift_number = shift.number
        self.shift_opened_at = shift.opened_at if shift.state == "open" else None
        self.shift_receipts = shift.receipts

    def note_document(self, kind: str, result: FiscalResult) -> None:
        """A document the owner itself just formed (its FiscalResult is the FN's answer)."""
        if result.test_mode or not result.fiscal_document_number:
            return  # test mode forms no document
        self.fd_number = result.fiscal_document_number
        self.clock = (result.datetime, time.monotonic())
        if kind == RECEIPT:
            self.shift_receipts = result.receipt_number
        elif kind == "open_shift":
            self.shift_state = "open"
            self.shift_number = result.shift_number
            self.shift_opened_at = result.datetime
            self.shift_receipts = 0
        elif kind == "close_shift":
            self.shift_state = "closed"
            self.shift_opened_at = None


class DeviceOwner:
    """Election thread and, while this process holds the lock, the device's only worker."""

    def __init__(self, service: FiscalService, config: DeviceConfig) -> None:
        self.service = service
        self.config = config
        self.number = config.number
        self.journal = service.journal
        self.lock_path = f"{self.journal.path}.device-{config.number}.lock"
        self._wake = threading.Condition()
        self._woken = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self.driver: Driver | None = None
        self._info: dict | None = None
        #: FN document number and shift while this process holds the link.
        self.state = DeviceState()
        #: The last document this owner formed, for the snapshot between jobs.
        self._last_result: FiscalResult | None = None
        #: The queue went empty since the last job: check the link before the next document.
        self._was_idle = False
        #: When the snapshot was last written (a full read or published from memory).
        self._last_refresh = 0.0
        #: When the device's status was last read in full.
        self._last_full_refresh = 0.0
        #: When the last job finished without a status refresh since.
        self._dirty_at: float | None = None
        self._last_prune = 0.0
        self._last_lock_check = 0.0
        self._last_auto_close_check = 0.0
        #: monotonic() when the link went down (None while up) and when that was last logged.
        self._down_since: float | None = None
        self._down_logged = 0.0
        self.is_owner = False

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the election thread (daemon: it must not keep the process alive)."""
        self._thread = threading.Thread(target=self._run, name=f"kkt-device-{self.number}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to finish its current job and release the device."""
        self._stop.set()
        self.wake()

    def join(self, timeout: float) -> None:
        """Wait for the thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    def wake(self) -> None:
        """A job was queued in this process: look at the queue now."""
        with self._wake:
            self._woken = True
            self._wake.notify_all()

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's thread is gone and its lock fd is not ours."""
        if self._lock_fd is not None:
            try:
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    # ------------------------------------------------------------------ election

    def _try_lock(self) -> bool:
        if self._lock_fd is None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o660)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        if not self._lock_still_ours():
            # The file was replaced between open and flock: this lock guards nothing.
            self._unlock()
            return False
        # Who owns the device, for a person looking at the lock file.
        os.ftruncate(self._lock_fd, 0)
        os.pwrite(self._lock_fd, f"{os.getpid()}\n".encode(), 0)
        return True

    def _lock_still_ours(self) -> bool:
        """The locked file is still the one at the lock path (nobody deleted or replaced it)."""
        if self._lock_fd is None:
            return False
        try:
            return os.path.samestat(os.fstat(self._lock_fd), os.stat(self.lock_path))
        except OSError:
            return False

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._try_lock():
                    self._stop.wait(ELECTION_INTERVAL)
                    continue
            except OSError:
                log.exception("ККТ %d: не удалось открыть файл блокировки %s", self.number, self.lock_path)
                self._stop.wait(ELECTION_INTERVAL * 4)
                continue
            self.is_owner = True
            log.info("ККТ %d: процесс %d стал владельцем связи", self.number, os.getpid())
            try:
                self._serve()
            except LostLock:
                log.error("ККТ %d: файл блокировки %s удалён; связь с ККТ закрыта, выбираем владельца заново",
                          self.number, self.lock_path)
            except Exception:
                # A bug must not leave the device without an owner: give the link up and let
                # this or another process take over after a pause.
                log.exception("ККТ %d: сбой обработчика очереди", self.number)
                self._stop.wait(ELECTION_INTERVAL * 2)
            finally:
                self.is_owner = False
                self._disconnect()
                self._unlock()

    # ------------------------------------------------------------------ the worker loop

    def _serve(self) -> None:
        backoff = RECONNECT_MIN
        while not self._stop.is_set():
            if self.driver is None:
                try:
                    self._connect()
                except Exception as exc:  # noqa: BLE001 - any failure means "no link yet"
                    self._link_down(exc)
                    self._disconnect()
                    self._fail_waiting_operations(exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, RECONNECT_MAX)
                    continue
                backoff = RECONNECT_MIN
            try:
                if self._settle():
                    # The status page should show the settled document soon (memory is empty
                    # after recovery, so this becomes a full read once the queue is idle).
                    self._dirty_at = time.monotonic()
                    continue
                job = self.journal.next_queued(self.number)
                if job is not None:
                    self._execute(job)
                    self._dirty_at = time.monotonic()
                    if time.monotonic() - self._last_refresh >= self.service.status_refresh:
                        # Busy: the next job may be waiting; no device read here.
                        self._publish_known()
                    continue
                self._idle()
            except LinkError as exc:
                self._link_down(exc)
                self._disconnect()
            except DeviceError as exc:
                # A status or recovery step refused by the device; jobs are settled inside.
                log.warning("ККТ %d: %s", self.number, exc.message)
                self.state.forget()
                self._sleep(HOLD_RETRY)

    def _connect(self) -> None:
        # A new link: whatever happened while there was none is unknown.
        self.state.forget()
        driver = self.service.driver_factory(self.config)
        self.driver = driver
        driver.connect()
        self._info = to_json(driver.device_info())
        if self._down_since is not None:
            log.warning("ККТ %d: связь восстановлена (не было %s)", self.number,
                        human_duration(time.monotonic() - self._down_since))
            self._down_since = None
        else:
            log.info("ККТ %d: связь установлена (%s)", self.number, self._info.get("model_name", ""))
        self._refresh()

    def _fail_waiting_operations(self, exc: BaseException) -> None:
        """No link: non-fiscal operations fail now instead of running whenever the link is back.

        A status read or an X report hours later is of no use to whoever asked; fiscal jobs
        (receipts, cash, shifts) stay queued, so nothing accepted is lost.
        """
        error = exc.to_dict() if isinstance(exc, LinkError) else LinkError().to_dict()
        for job in self.journal.queued(self.number):
            if job.kind not in FISCAL_KINDS:
                self.journal.finish(job.id, FAILED, error=error)
                self._notify(job.id)

    def _disconnect(self) -> None:
        # Without the link the owner no longer knows the device is untouched.
        self.state.forget()
        driver, self.driver = self.driver, None
        if driver is not None:
            try:
                driver.close()
            except Exception:  # noqa: BLE001 - closing a broken link may fail, nothing to do
                log.debug("ККТ %d: ошибка при закрытии связи", self.number, exc_info=True)

    def _sleep(self, seconds: float) -> None:
        with self._wake:
            if not self._woken and not self._stop.is_set():
                self._wake.wait(seconds)
            self._woken = False

    def _idle(self) -> None:
        self._was_idle = True
        now = time.monotonic()
        if self._refresh_due():
            self._refresh()
        elif self._dirty_at is not None and now - self._dirty_at >= AFTER_JOB_REFRESH:
            self._publish_known()
        if self.service.auto_close_time is not None and now - self._last_auto_close_check >= 1.0:
            self._last_auto_close_check = now
            self._auto_close()
        if now - self._last_lock_check >= LOCK_CHECK_INTERVAL:
            self._last_lock_check = now
            if not self._lock_still_ours():
                # Someone removed the lock file: another process may lock a new one and open a
                # second link. Give the device up and compete for it again.
                raise LostLock(self.lock_path)
        if now - self._last_prune >= PRUNE_INTERVAL:
            self._last_prune = now
            self.journal.prune()
        self._sleep(POLL_INTERVAL)

    def _notify(self, job_id: str) -> None:
        self.service._job_changed(job_id)

    # ------------------------------------------------------------------ execution

    def _execute(self, job: Job) -> None:
        was_idle, self._was_idle = self._was_idle, False
        try:
            if was_idle and job.kind in FISCAL_KINDS and self.state.fd_number is not None:
                self._probe()
            if job.kind in FISCAL_KINDS:
                self._execute_fiscal(job)
            else:
                self._execute_plain(job)
        finally:
            self._notify(job.id)

    def _execute_fiscal(self, job: Job) -> None:
        driver = self._driver()
        for attempt in (1, 2):
            try:
                if job.kind in SHIFT_KINDS:
                    self._ensure_shift()
                elif job.kind == "close_shift" and job.payload.get("params", {}).get("auto"):
                    # Once a day: read the device rather than trust memory for a skipped Z.
                    shift = driver.shift_status()
                    self.state.note_shift(shift)
                    if shift.state == "closed":
                        self.journal.finish(job.id, DONE, result={})
                        return
                fd_before = self._fd_before()
            except DeviceError as exc:
                # Nothing of this job reached the device.
                self._fail(job, exc)
                return
            # Durable (FULL) before anything of the document is sent: recovery compares with it.
            if not self.journal.mark_sending(job.id, fd_before):
                self._skip_cancelled(job)
                return
            sent_before = self._bytes_sent()
            try:
                result = self._call(job)
            except DeviceError as exc:
                if self._after_device_error(job, exc, fd_before, retry_allowed=attempt == 1):
                    continue
                return
            except NotSent as exc:
                self._fail(job, exc)
                return
            except LinkError as exc:
                self._mark_unknown(job, Reasons.INTERRUPTED, exc)
                raise
            except Exception as exc:
                if sent_before is not None and self._bytes_sent() == sent_before:
                    # Failed while the document was being prepared: nothing reached the device.
                    log.error("ККТ %d: %s %s не отправлен: %s: %s", self.number, job.kind, job.key or job.id,
                              type(exc).__name__, exc)
                    self._fail(job, NotSent(f"{NotSent.message} ({type(exc).__name__}: {exc})"))
                    return
                # An unexpected failure mid-document is an unknown outcome like a lost link.
                log.exception("ККТ %d: сбой при отправке %s %s", self.number, job.kind, job.id)
                self._mark_unknown(job, Reasons.INTERRUPTED, None)
                raise LinkError(str(exc) or LinkError.message) from exc
            if isinstance(result, FiscalResult):
                self._note_own_document(job, fd_before, result)
            self._done(job, result)
            return

    def _bytes_sent(self) -> int | None:
        """Bytes the driver has written to the device so far; None when it does not count them."""
        sent = getattr(getattr(self.driver, "stats", None), "bytes_sent", None)
        return sent if isinstance(sent, int) else None

    def _probe(self) -> None:
        """One status round trip before the first document after an idle spell.

        The device may have been switched off or unplugged while the queue was empty, and a
        document sent into a dead link has an unknown outcome that holds the queue until the
        device is back. A lost link found here leaves the job queued ("no link"). Back-to-back
        jobs skip this: the previous one just proved the link. The answer also checks memory: a
        receipt left open or a shift that differs makes the job read the device.
        """
        status = self._driver().status()
        state = self.state
        state.clock = (status.datetime, time.monotonic())
        if status.receipt_open:
            state.fd_number = None  # _fd_before reads the FN and cancels the stale receipt
        if state.shift_state is not None and (state.shift_state == "open") != status.shift_open:
            state.shift_state = None

    def _fd_before(self) -> int:
        """The FN's last document number before the job's document: remembered, else read.

        Reading it costs three tasks in two round trips; while the owner holds the link the
        number only changes by the documents it forms itself, whose numbers it keeps.
        """
        if self.state.fd_number is not None:
            return self.state.fd_number
        driver = self._driver()
        last = driver.last_document()
        if last.receipt_open:
            # Nothing of ours is in flight (the queue would hold), so a receipt left
            # open is stale (another program, a crash before sending): annul it.
            log.warning("ККТ %d: на ККТ открыт чужой чек; отменяем его", self.number)
            driver.cancel_receipt()
        self.state.fd_number = last.fd_number
        return last.fd_number

    def _note_own_document(self, job: Job, fd_before: int, result: FiscalResult) -> None:
        """Remember the document just formed; a gap in the numbers means the memory was wrong."""
        if not result.test_mode and result.fiscal_document_number and result.fiscal_document_number != fd_before + 1:
            # Harmless for this job (its answer came from the device), but something formed a
            # document the owner did not see: stop trusting memory until the next device read.
            log.error("ККТ %d: %s %s получил ФД %d, ожидался %d; состояние ККТ будет перечитано",
                      self.number, job.kind, job.key or job.id, result.fiscal_document_number, fd_before + 1)
            self.state.forget()
            return
        self.state.note_document(job.kind, result)
        self._last_result = result

    def _after_device_error(self, job: Job, exc: DeviceError, fd_before: int, *, retry_allowed: bool) -> bool:
        """Settle a device error answer; True means "run the job again now"."""
        driver = self._driver()
        # The device disagreed with what the owner expected: from here on only device reads count.
        self.state.forget()
        cancelled = False
        try:
            last = driver.last_document()
            if last.fd_number > fd_before:
                # Fiscalised although the device complained (paper ran out while printing).
                result = self._result_from_device(job, last)
                owed = exc.code in PRINTER_CODES and self._prints(job)
                self._record_fiscalised(job, result, owed)
                return False
            if last.receipt_open:
                driver.cancel_receipt()
                cancelled = True
        except LinkError as link:
            self._mark_unknown(job, Reasons.INTERRUPTED, link)
            raise
        if retry_allowed and exc.code in SHIFT_EXPIRED_CODES and job.kind in SHIFT_KINDS:
            # The device's clock says the shift is over 24 h although the owner thought it open
            # (the clocks differ, or the device clock was moved): Z report now, the next attempt
            # opens a new shift and fiscalises.
            log.info("ККТ %d: смена превысила 24 часа (код %d), закрываем её", self.number, exc.code)
            self.journal.requeue(job.id)
            try:
                z = driver.close_shift(self.service.cashier_name, self.service.cashier_inn)
            except DeviceError as z_exc:
                log.warning("ККТ %d: Z-отчёт не снят: %s", self.number, z_exc.message)
                self._fail(job, exc)
                return False
            self.state.note_document("close_shift", z)
            self._shift_closed(z)
            return True
        if retry_allowed and exc.code in SHIFT_CLOSED_CODES and job.kind in SHIFT_KINDS:
            # The owner's memory said the shift was open; the device says closed. The next attempt
            # reads the shift (memory was just dropped) and opens it.
            log.info("ККТ %d: смена закрыта (код %d), открываем её и повторяем", self.number, exc.code)
            self.journal.requeue(job.id)
            return True
        if retry_allowed and cancelled and exc.code in RECEIPT_OPEN_CODES:
            # A stale receipt stood in the way (ours, had it opened, would have been cancelled by
            # the driver before this): it is annulled now, so the job may go once more.
            log.warning("ККТ %d: на ККТ был открыт чужой чек; он отменён, повторяем", self.number)
            self.journal.requeue(job.id)
            return True
        self._fail(job, exc)
        return False

    def _execute_plain(self, job: Job) -> None:
        if job.kind != "status":
            # Service operations (reports, resets, cancel) may change what the owner remembers;
            # they are rare, so the next job simply reads the device again.
            self.state.forget()
        if not self.journal.mark_sending(job.id, None):
            self._skip_cancelled(job)
            return
        try:
            result = self._call(job)
        except (DeviceError, NotSent) as exc:
            self._fail(job, exc)
            return
        except LinkError as exc:
            # Not fiscal: nothing to reconcile, the caller may simply repeat it.
            self.journal.finish(job.id, FAILED, error=exc.to_dict())
            raise
        self._done(job, result)

    def _call(self, job: Job) -> Any:
        driver = self._driver()
        params = job.payload.get("params") or {}
        svc = self.service
        kind = job.kind
        if kind == RECEIPT:
            return driver.sell(self._receipt(job))
        # A caller may name the cashier of a shift report (tags 1021/1203); else conf's.
        cashier = (params.get("cashier_name") or svc.cashier_name, params.get("cashier_inn") or svc.cashier_inn)
        if kind == "open_shift":
            return driver.open_shift(*cashier)
        if kind == "close_shift":
            return driver.close_shift(*cashier)
        if kind == "cash_in":
            return driver.cash_in(int(params["amount"]))
        if kind == "cash_out":
            return driver.cash_out(int(params["amount"]))
        if kind == "status":
            data = self._read_status()
            self._store_snapshot(data)
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

    def _receipt(self, job: Job) -> Receipt:
        receipt = receipt_from_json(job.payload["receipt"])
        svc = self.service
        changes: dict[str, Any] = {}
        if svc.test_mode and not receipt.test_mode:
            changes["test_mode"] = True
        if not receipt.cashier_name and svc.cashier_name:
            changes["cashier_name"] = svc.cashier_name
            if not receipt.cashier_inn and svc.cashier_inn:
                changes["cashier_inn"] = svc.cashier_inn
        return dataclasses.replace(receipt, **changes) if changes else receipt

    def _prints(self, job: Job) -> bool:
        """Whether the job's document is printed at all (electronic-only receipts are not)."""
        if job.kind == RECEIPT:
            return not job.payload["receipt"].get("electronic_only", False)
        return True

    def _done(self, job: Job, result: Any) -> None:
        if isinstance(result, FiscalResult):
            owed = not result.printed and self._prints(job)
            if job.kind == "close_shift":
                self._shift_closed(result)
            self.journal.finish(
                job.id, DONE, result=result.to_dict(), reprint=owed, reason=Reasons.REPRINT if owed else ""
            )
            log.info(
                "ККТ %d: %s %s: ФД %d, ФП %s, смена %d",
                self.number, job.kind, job.key or job.id, result.fiscal_document_number, result.fiscal_sign,
                result.shift_number,
            )
        else:
            self.journal.finish(job.id, DONE, result=result if isinstance(result, dict) else {})
            log.info("ККТ %d: %s %s выполнено", self.number, job.kind, job.key or job.id)

    def _skip_cancelled(self, job: Job) -> None:
        # An operator cancelled it between next_queued and mark_sending: nothing was sent.
        log.info("ККТ %d: %s %s отменён оператором, в ККТ не отправлен", self.number, job.kind, job.key or job.id)

    def _fail(self, job: Job, exc: KKTError) -> None:
        # Any device error: the owner's memory of the device is not to be trusted.
        self.state.forget()
        self.journal.finish(job.id, FAILED, error=exc.to_dict())
        log.warning("ККТ %d: %s %s: ошибка %d %s", self.number, job.kind, job.key or job.id, exc.code, exc.message)

    def _mark_unknown(self, job: Job, reason: str, exc: KKTError | None) -> None:
        self.state.forget()
        self.journal.mark_unknown(job.id, reason, exc.to_dict() if exc is not None else None)
        self._notify(job.id)
        log.warning("ККТ %d: %s %s: результат неизвестен (%s)", self.number, job.kind, job.key or job.id,
                    exc.message if exc is not None else reason)

    def _driver(self) -> Driver:
        if self.driver is None:
            raise LinkError()
        return self.driver

    # ------------------------------------------------------------------ shift policy

    def _ensure_shift(self) -> None:
        """Open the shift when closed; when over 24 h, Z report and a new shift.

        The remembered state is used while it is known and not near its 24 hours; the device
        clock may still run ahead of the estimate, which the retry on "shift over 24 h" covers.
        """
        driver = self._driver()
        svc = self.service
        state = self.state
        if state.shift_state is None or state.shift_expiring():
            shift = driver.shift_status()
            state.note_shift(shift)
            if shift.state == "expired":
                log.info("ККТ %d: смена %d старше 24 часов: Z-отчёт и новая смена", self.number, shift.number)
                z = driver.close_shift(svc.cashier_name, svc.cashier_inn)
                state.note_document("close_shift", z)
                self._shift_closed(z)
        if state.shift_state == "closed":
            result = driver.open_shift(svc.cashier_name, svc.cashier_inn)
            state.note_document("open_shift", result)
            log.info("ККТ %d: открыта смена %d", self.number, result.shift_number)

    def _auto_close(self) -> None:
        """Close the shift once a day at AUTO_CLOSE_TIME when the queue is idle."""
        hour, minute = self.service.auto_close_time  # type: ignore[misc]
        now = dt.datetime.now()
        start = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if not start <= now < start + dt.timedelta(hours=1):
            return
        # The key makes it once per day across processes and restarts.
        key = f"auto-close-{self.number}-{now.date().isoformat()}"
        if self.journal.find_by_key("close_shift", key) is not None:
            return
        params = {"auto": True}
        self.journal.accept(
            device=self.number, kind="close_shift", key=key, fingerprint=key,
            payload={"params": params}, source="auto",
        )
        log.info("ККТ %d: автоматическое закрытие смены в %02d:%02d", self.number, hour, minute)

    # ------------------------------------------------------------------ recovery

    def _settle(self) -> bool:
        """Settle what holds the queue; True when there was something (the loop re-checks)."""
        pending = self.journal.unsettled(self.number)
        if not pending:
            return False
        job = pending[0]
        if job.state == DONE and job.reprint:
            self._reprint(job)
        elif job.kind not in FISCAL_KINDS:
            # A non-fiscal operation was cut off by a crash: report it, do not repeat it.
            self.journal.finish(job.id, FAILED, error=LinkError().to_dict())
            self._notify(job.id)
        else:
            self._recover(job)
        return True

    def _recover(self, job: Job) -> None:
        driver = self._driver()
        # Never settle from memory: the FN alone says whether the document exists.
        self.state.forget()
        if job.state == SENDING:
            # Found in flight: the process that sent it died.
            self._mark_unknown(job, Reasons.CRASHED, None)
        if job.fd_before is None:
            # Cannot happen (mark_sending always stores it for fiscal jobs); never guess.
            log.error("ККТ %d: %s без номера ФД до отправки; нужна проверка оператором", self.number, job.id)
            self._sleep(HOLD_RETRY * 5)
            return
        try:
            last = driver.last_document()
            if last.fd_number > job.fd_before:
                result = self._result_from_device(job, last)
                status = driver.status()
                owed = self._prints(job) and (not result.printed or not status.paper_present or status.printer_error)
                log.info("ККТ %d: %s %s был пробит до сбоя (ФД %d)", self.number, job.kind, job.key or job.id,
                         last.fd_number)
                self._record_fiscalised(job, result, owed)
                return
            if last.receipt_open:
                driver.cancel_receipt()
        except DeviceError as exc:
            log.warning("ККТ %d: проверка ФН не удалась: %s", self.number, exc.message)
            self.journal.set_reason(job.id, f"{Reasons.CHECK_FAILED} ({exc.message})")
            self._notify(job.id)
            self._sleep(HOLD_RETRY)
            return
        if job.attempts >= MAX_SEND_ATTEMPTS:
            # Certainly not fiscalised, and every send ended the same way: stop retrying it.
            exc = GaveUp(job.attempts)
            self.journal.finish(job.id, FAILED, error=exc.to_dict(), reason=exc.message)
            self._notify(job.id)
            log.error("ККТ %d: %s %s снят с очереди после %d попыток: документ не пробит (ФД %d не изменился)",
                      self.number, job.kind, job.key or job.id, job.attempts, last.fd_number)
            return
        # Certainly not fiscalised: back to the head of the queue, the loop sends it again.
        log.info("ККТ %d: %s %s не был пробит; отправляем снова", self.number, job.kind, job.key or job.id)
        self.journal.requeue(job.id)
        self._notify(job.id)

    def _result_from_device(self, job: Job, last: LastDocument) -> FiscalResult:
        """The fiscal result of the job's document as the FN tells it."""
        result = last.result
        if result is None:
            # The driver could not read the document back; record what is certain.
            shift = self._driver().shift_status()
            total = 0
            if job.kind == RECEIPT:
                total = receipt_from_json(job.payload["receipt"]).total
            elif job.kind in ("cash_in", "cash_out"):
                total = int(job.payload.get("params", {}).get("amount", 0))
            result = FiscalResult(
                fiscal_document_number=last.fd_number, fiscal_sign="", receipt_number=0,
                shift_number=shift.number, datetime=dt.datetime.now().replace(microsecond=0), total=total,
            )
        elif job.kind == RECEIPT:
            expected = receipt_from_json(job.payload["receipt"]).total
            if result.total != expected:
                log.error("ККТ %d: последний ФД %d на %s ₽, а чек %s на %s ₽", self.number,
                          last.fd_number, format_rub(result.total), job.key or job.id, format_rub(expected))
        return result

    def _record_fiscalised(self, job: Job, result: FiscalResult, owed: bool) -> None:
        result = dataclasses.replace(result, printed=not owed)
        if job.kind == "close_shift":
            self._shift_closed(result)
        self.journal.finish(
            job.id, DONE, result=result.to_dict(), reprint=owed, reason=Reasons.REPRINT if owed else ""
        )
        self._notify(job.id)

    def _shift_closed(self, result: FiscalResult) -> None:
        """Every Z report, whatever triggered it, goes to the service's observers (the 1C exchange).

        Before the close_shift job is finished: an observer that also watches the journal must
        find the Z report's own data (the shift counters, read now) recorded first.
        """
        self.service.shift_closed(self.number, result, self.driver)

    def _reprint(self, job: Job) -> None:
        """Print the owed copy once the printer is ready; until then the queue holds."""
        driver = self._driver()
        status = driver.status()
        if status.paper_present and not status.printer_error:
            try:
                driver.reprint_last()
            except DeviceError as exc:
                log.warning("ККТ %d: копия чека не напечатана: %s", self.number, exc.message)
            else:
                result = dict(job.result or {})
                result["printed"] = True
                self.journal.reprinted(job.id, result)
                log.info("ККТ %d: напечатана копия документа %s", self.number, job.key or job.id)
                self._notify(job.id)
                self._refresh()
                return
        if self._refresh_due():
            self._refresh()
        self._sleep(HOLD_RETRY)

    # ------------------------------------------------------------------ status snapshots

    def _refresh_due(self) -> bool:
        """A full status read is due (every status_refresh seconds)."""
        return time.monotonic() - self._last_full_refresh >= self.service.status_refresh

    def _read_status(self) -> dict:
        driver = self._driver()
        if self._info is None:
            self._info = to_json(driver.device_info())
        # Whatever fails below, nothing half-read may stay remembered.
        self.state.forget()
        status = driver.status()
        shift = driver.shift_status()
        fn = driver.fn_status()
        totals = driver.totals()
        last = driver.last_document()
        # A full read is the periodic check of the owner's memory: take it from here. An open
        # receipt outside a job is stale; the next job reads and cancels it (fd stays unknown).
        self.state.clock = (status.datetime, time.monotonic())
        self.state.note_shift(shift)
        if not last.receipt_open:
            self.state.fd_number = last.fd_number
        shift_json = to_json(shift)
        shift_json["expires_at"] = shift.expires_at.isoformat() if shift.expires_at else None
        return {
            "info": self._info,
            "status": to_json(status),
            "shift": shift_json,
            "fn": to_json(fn),
            "totals": to_json(totals),
            "last_document": {
                "fd_number": last.fd_number,
                "receipt_open": last.receipt_open,
                "result": last.result.to_dict() if last.result else None,
            },
        }

    def _publish_known(self) -> None:
        """Put the last document and the shift into the snapshot from memory, no device read.

        A status read costs about seven tasks: between back-to-back receipts it would delay the
        next one, and after every job it would cost a lightly loaded device (and the CPU) nearly
        half a receipt. The snapshot keeps the rest of its last full read. A full read is made
        instead when the owner knows nothing (after an error) or, for a device that is never
        idle, once in BUSY_FULL_REFRESH.
        """
        state = self.state
        if (state.fd_number is None or state.shift_state is None
                or time.monotonic() - self._last_full_refresh >= BUSY_FULL_REFRESH):
            self._refresh()
            return
        self._last_refresh = time.monotonic()
        self._dirty_at = None
        stored = self.journal.load_snapshot(self.number)
        snap = dict(stored[0]) if stored else {}
        last = dict(snap.get("last_document") or {})
        if last.get("fd_number") != state.fd_number:
            mine = self._last_result
            result = mine.to_dict() if mine and mine.fiscal_document_number == state.fd_number else None
            last.update({"fd_number": state.fd_number, "receipt_open": False, "result": result})
        snap["last_document"] = last
        fn = dict(snap.get("fn") or {})
        fn["last_fd_number"] = state.fd_number
        snap["fn"] = fn
        shift = dict(snap.get("shift") or {})
        opened = state.shift_opened_at
        shift.update({
            "state": state.shift_state, "number": state.shift_number, "receipts": state.shift_receipts,
            "opened_at": opened.isoformat() if opened else None,
            "expires_at": (opened + dt.timedelta(hours=24)).isoformat() if opened else None,
        })
        snap["shift"] = shift
        # When the device last answered: the snapshot's own time also moves while the link is down.
        snap.update({"link": "ok", "link_error": None, "read_at": _now_iso()})
        self.journal.save_snapshot(self.number, snap)

    def _store_snapshot(self, data: dict) -> None:
        self._last_refresh = self._last_full_refresh = time.monotonic()
        self._dirty_at = None
        snap = dict(data)
        # When the device last answered: the snapshot's own time also moves while the link is down.
        snap.update({"link": "ok", "link_error": None, "read_at": _now_iso()})
        self.journal.save_snapshot(self.number, snap)

    def _refresh(self) -> None:
        """Read the device's status into the shared snapshot (link errors propagate)."""
        try:
            self._store_snapshot(self._read_status())
        except DeviceError as exc:
            # The device answers but refuses a status read: show it, keep working.
            log.warning("ККТ %d: не удалось прочитать состояние: %s", self.number, exc.message)
            self._last_refresh = self._last_full_refresh = time.monotonic()
            self._dirty_at = None

    def _log_down(self, message: str) -> None:
        """One line when the link goes, a reminder every DOWN_REMINDER seconds, not one per retry."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since = self._down_logged = now
            log.warning("ККТ %d: связь потеряна: %s", self.number, message)
        elif now - self._down_logged >= DOWN_REMINDER:
            self._down_logged = now
            waiting = self.journal.queue_counts(self.number)
            log.warning("ККТ %d: связи нет уже %s (%s); ждут отправки: %d", self.number,
                        human_duration(now - self._down_since), message, waiting[QUEUED] + waiting[UNKNOWN])

    def _link_down(self, exc: BaseException) -> None:
        message = link_text(exc)
        if not isinstance(exc, (KKTError, OSError)):
            log.exception("ККТ %d: ошибка связи", self.number, exc_info=exc)
        self._log_down(message)
        stored = self.journal.load_snapshot(self.number)
        snap = dict(stored[0]) if stored else {}
        if snap.get("link") == "down" and snap.get("link_error") == message and not self._refresh_due():
            return
        snap.update({"link": "down", "link_error": message})
        self.journal.save_snapshot(self.number, snap)
        self._last_refresh = self._last_full_refresh = time.monotonic()


#: OS error numbers of a failed connection → what a sysadmin reads (pyserial words them in English).
_ERRNO_TEXTS = {
    errno.ECONNREFUSED: "соединение отклонено (касса выключена, не тот порт или её занимает другая программа)",
    errno.ETIMEDOUT: "касса не отвечает (выключена или нет сети)",
    errno.EHOSTUNREACH: "адрес кассы недоступен (нет сети до кассы)",
    errno.ENETUNREACH: "сеть до кассы недоступна",
    errno.ECONNRESET: "касса разорвала соединение",
    errno.ENOENT: "нет такого порта (кабель USB не подключён или другое имя устройства)",
    errno.EACCES: "нет прав на порт (добавьте пользователя сервиса в группу dialout)",
    errno.EBUSY: "порт занят другой программой",
}


def link_text(exc: BaseException) -> str:
    """A Russian sentence for a link failure; the library's own (English) words go to DEBUG only."""
    cause: BaseException | None = exc
    while cause is not None:
        number = getattr(cause, "errno", None)
        if number in _ERRNO_TEXTS:
            log.debug("link failure detail: %r", exc)
            return f"{LinkError.message}: {_ERRNO_TEXTS[number]}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, KKTError):
        # "нет связи с ККТ (url): <library text>": keep our words, the library's go to DEBUG.
        parts = exc.message.split(": ")
        kept = [parts[0]]
        for part in parts[1:]:
            if not _is_russian(part):
                log.debug("link failure detail: %s", exc.message)
                break
            kept.append(part)
        return ": ".join(kept)
    log.debug("link failure detail: %r", exc)
    return LinkError.message


def _now_iso() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _is_russian(text: str) -> bool:
    return any("а" <= ch.lower() <= "я" or ch in "ёЁ" for ch in text)
