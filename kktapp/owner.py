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
from .device import Driver, LastDocument, to_json
from .domain import FiscalResult, Receipt, TextLine
from .errors import DeviceError, KKTError, LinkError, OutcomeUnknown
from .journal import DONE, FAILED, RECEIPT, SENDING, Job, receipt_from_json

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
#: Quiet seconds after a job before the status snapshot is refreshed: a client sending receipt
#: after receipt should not wait for six status reads between them.
AFTER_JOB_REFRESH = 0.1
#: Seconds between checks that the lock file is still in place.
LOCK_CHECK_INTERVAL = 5.0
#: Seconds between journal prunes.
PRUNE_INTERVAL = 3600.0

# Device codes the shift policy and recovery act on (ATOL's table is the only one so far; a
# second protocol family adds its codes here).
#: "Shift exceeded 24 h" from the device and from the FN.
SHIFT_EXPIRED_CODES = frozenset({ErrorCode.SHIFT_EXPIRED, ErrorCode.FN_SHIFT_EXPIRED})
#: Printer trouble. When the document was fiscalised anyway, its paper copy is owed.
PRINTER_CODES = frozenset({
    ErrorCode.NO_PAPER, ErrorCode.NO_PRINTER, ErrorCode.PRINTER_MECHANICAL, ErrorCode.HEAD_OVERHEAT,
})

#: Jobs that form a fiscal document: they get ``fd_before`` and recovery.
FISCAL_KINDS = frozenset({RECEIPT, "open_shift", "close_shift", "cash_in", "cash_out"})
#: Jobs that need an open, fresh shift first.
SHIFT_KINDS = frozenset({RECEIPT, "cash_in", "cash_out"})
#: Every operation a caller may submit, besides receipts.
OPERATIONS = frozenset({
    "status", "open_shift", "close_shift", "x_report", "cash_in", "cash_out", "print_text",
    "reprint_last", "cancel_receipt", "reset_summary", "tech_reset",
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
        self._last_refresh = 0.0
        #: When the last job finished without a status refresh since.
        self._dirty_at: float | None = None
        self._last_prune = 0.0
        self._last_lock_check = 0.0
        self._last_auto_close_check = 0.0
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
                    continue
                job = self.journal.next_queued(self.number)
                if job is not None:
                    self._execute(job)
                    self._dirty_at = time.monotonic()
                    if self._refresh_due():
                        self._refresh()
                    continue
                self._idle()
            except LinkError as exc:
                self._link_down(exc)
                self._disconnect()
            except DeviceError as exc:
                # A status or recovery step refused by the device; jobs are settled inside.
                log.warning("ККТ %d: %s", self.number, exc.message)
                self._sleep(HOLD_RETRY)

    def _connect(self) -> None:
        driver = self.service.driver_factory(self.config)
        self.driver = driver
        driver.connect()
        self._info = to_json(driver.device_info())
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
        now = time.monotonic()
        if self._refresh_due() or (self._dirty_at is not None and now - self._dirty_at >= AFTER_JOB_REFRESH):
            self._refresh()
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
        try:
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
                    if driver.shift_status().state == "closed":
                        self.journal.finish(job.id, DONE, result={})
                        return
                last = driver.last_document()
                if last.receipt_open:
                    # Nothing of ours is in flight (the queue would hold), so a receipt left
                    # open is stale (another program, a crash before sending): annul it.
                    log.warning("ККТ %d: на ККТ открыт чужой чек; отменяем его", self.number)
                    driver.cancel_receipt()
                fd_before = last.fd_number
            except DeviceError as exc:
                # Nothing of this job reached the device.
                self._fail(job, exc)
                return
            self.journal.mark_sending(job.id, fd_before)
            try:
                result = self._call(job)
            except DeviceError as exc:
                if self._after_device_error(job, exc, fd_before, retry_allowed=attempt == 1):
                    continue
                return
            except LinkError as exc:
                self._mark_unknown(job, Reasons.INTERRUPTED, exc)
                raise
            except Exception as exc:
                # An unexpected failure mid-document is an unknown outcome like a lost link.
                log.exception("ККТ %d: сбой при отправке %s %s", self.number, job.kind, job.id)
                self._mark_unknown(job, Reasons.INTERRUPTED, None)
                raise LinkError(str(exc) or LinkError.message) from exc
            self._done(job, result)
            return

    def _after_device_error(self, job: Job, exc: DeviceError, fd_before: int, *, retry_allowed: bool) -> bool:
        """Settle a device error answer; True means "run the job again now"."""
        driver = self._driver()
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
        except LinkError as link:
            self._mark_unknown(job, Reasons.INTERRUPTED, link)
            raise
        if retry_allowed and exc.code in SHIFT_EXPIRED_CODES and job.kind in SHIFT_KINDS:
            # The device's clock says the shift is over 24 h although the state said open:
            # Z report now, the next attempt opens a new shift and fiscalises.
            log.info("ККТ %d: смена превысила 24 часа (код %d), закрываем её", self.number, exc.code)
            self.journal.requeue(job.id)
            try:
                driver.close_shift(self.service.cashier_name, self.service.cashier_inn)
            except DeviceError as z_exc:
                log.warning("ККТ %d: Z-отчёт не снят: %s", self.number, z_exc.message)
                self._fail(job, exc)
                return False
            return True
        self._fail(job, exc)
        return False

    def _execute_plain(self, job: Job) -> None:
        self.journal.mark_sending(job.id, None)
        try:
            result = self._call(job)
        except DeviceError as exc:
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
        if kind == "open_shift":
            return driver.open_shift(svc.cashier_name, svc.cashier_inn)
        if kind == "close_shift":
            return driver.close_shift(svc.cashier_name, svc.cashier_inn)
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

    def _fail(self, job: Job, exc: KKTError) -> None:
        self.journal.finish(job.id, FAILED, error=exc.to_dict())
        log.warning("ККТ %d: %s %s: ошибка %d %s", self.number, job.kind, job.key or job.id, exc.code, exc.message)

    def _mark_unknown(self, job: Job, reason: str, exc: KKTError | None) -> None:
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
        """Open the shift when closed; when over 24 h, Z report and a new shift."""
        driver = self._driver()
        svc = self.service
        shift = driver.shift_status()
        if shift.state == "expired":
            log.info("ККТ %d: смена %d старше 24 часов: Z-отчёт и новая смена", self.number, shift.number)
            driver.close_shift(svc.cashier_name, svc.cashier_inn)
            shift = dataclasses.replace(shift, state="closed")
        if shift.state == "closed":
            result = driver.open_shift(svc.cashier_name, svc.cashier_inn)
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
                log.error("ККТ %d: последний ФД %d на %d коп., а чек %s на %d коп.", self.number,
                          last.fd_number, result.total, job.key or job.id, expected)
        return result

    def _record_fiscalised(self, job: Job, result: FiscalResult, owed: bool) -> None:
        result = dataclasses.replace(result, printed=not owed)
        self.journal.finish(
            job.id, DONE, result=result.to_dict(), reprint=owed, reason=Reasons.REPRINT if owed else ""
        )
        self._notify(job.id)

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
        return time.monotonic() - self._last_refresh >= self.service.status_refresh

    def _read_status(self) -> dict:
        driver = self._driver()
        if self._info is None:
            self._info = to_json(driver.device_info())
        status = driver.status()
        shift = driver.shift_status()
        fn = driver.fn_status()
        totals = driver.totals()
        last = driver.last_document()
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

    def _store_snapshot(self, data: dict) -> None:
        self._last_refresh = time.monotonic()
        self._dirty_at = None
        snap = dict(data)
        snap.update({"link": "ok", "link_error": None})
        self.journal.save_snapshot(self.number, snap)

    def _refresh(self) -> None:
        """Read the device's status into the shared snapshot (link errors propagate)."""
        try:
            self._store_snapshot(self._read_status())
        except DeviceError as exc:
            # The device answers but refuses a status read: show it, keep working.
            log.warning("ККТ %d: не удалось прочитать состояние: %s", self.number, exc.message)
            self._last_refresh = time.monotonic()

    def _link_down(self, exc: BaseException) -> None:
        message = exc.message if isinstance(exc, KKTError) else LinkError.message
        if not isinstance(exc, KKTError):
            log.exception("ККТ %d: ошибка связи", self.number, exc_info=exc)
        else:
            log.warning("ККТ %d: %s", self.number, message)
        stored = self.journal.load_snapshot(self.number)
        snap = dict(stored[0]) if stored else {}
        if snap.get("link") == "down" and snap.get("link_error") == message and not self._refresh_due():
            return
        snap.update({"link": "down", "link_error": message})
        self.journal.save_snapshot(self.number, snap)
        self._last_refresh = time.monotonic()
