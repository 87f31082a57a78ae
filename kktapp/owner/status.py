"""Publishing a device's status: the shared snapshot every process reads, and the link's log lines.

A full status read costs about seven tasks; between back-to-back receipts the snapshot is
updated from the owner's memory instead (:meth:`StatusPublisher.publish_known`). The snapshot
also says whether the link is down, which the service tells callers whose job waits.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import time

from ..device import Driver, to_json
from ..domain import FiscalResult
from ..errors import DeviceError, KKTError, LinkError
from ..health import human_duration
from ..journal import QUEUED, UNKNOWN
from . import policy
from .seat import Seat

log = logging.getLogger(__package__)


class StatusPublisher:
    """Reads the device's status into the journal's snapshot and logs the link going and coming."""

    def __init__(self, seat: Seat) -> None:
        self.seat = seat
        self._info: dict | None = None
        #: The last document this owner formed, for the snapshot between jobs.
        self.last_result: FiscalResult | None = None
        #: When the snapshot was last written (a full read or published from memory).
        self.last_refresh = 0.0
        #: When the device's status was last read in full.
        self.last_full_refresh = 0.0
        #: When the last job finished without a status refresh since.
        self.dirty_at: float | None = None
        #: monotonic() when the link went down (None while up) and when that was last logged.
        self._down_since: float | None = None
        self._down_logged = 0.0
        #: The link came up and nothing failed on it since (read by request threads: they need
        #: not read the snapshot to learn that the link of a device owned here is up).
        self.up = False

    def refresh_due(self) -> bool:
        """A full status read is due (every status_refresh seconds)."""
        return time.monotonic() - self.last_full_refresh >= self.seat.host.status_refresh

    def link_up(self, driver: Driver) -> None:
        """A new link: read what the device is, log it, publish a full status."""
        number = self.seat.number
        self._info = to_json(driver.device_info())
        if self._down_since is not None:
            log.warning("ККТ %d: связь восстановлена (не было %s)", number,
                        human_duration(time.monotonic() - self._down_since))
            self._down_since = None
        else:
            log.info("ККТ %d: связь установлена (%s)", number, self._info.get("model_name", ""))
        self.refresh()
        self.up = True

    def read_status(self) -> dict:
        """A full status read (device info, status, shift, FN, totals, last document)."""
        driver = self.seat.device()
        state = self.seat.state
        if self._info is None:
            self._info = to_json(driver.device_info())
        # Whatever fails below, nothing half-read may stay remembered.
        state.forget()
        status = driver.status()
        shift = driver.shift_status()
        fn = driver.fn_status()
        totals = driver.totals()
        last = driver.last_document()
        # A full read is the periodic check of the owner's memory: take it from here. An open
        # receipt outside a job is stale; the next job reads and cancels it (fd stays unknown).
        state.clock = (status.datetime, time.monotonic())
        state.note_shift(shift)
        if not last.receipt_open:
            state.fd_number = last.fd_number
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

    def publish_known(self) -> None:
        """Put the last document and the shift into the snapshot from memory, no device read.

        A status read costs about seven tasks: between back-to-back receipts it would delay the
        next one, and after every job it would cost a lightly loaded device (and the CPU) nearly
        half a receipt. The snapshot keeps the rest of its last full read. A full read is made
        instead when the owner knows nothing (after an error) or, for a device that is never
        idle, once in BUSY_FULL_REFRESH.
        """
        state = self.seat.state
        if (state.fd_number is None or state.shift_state is None
                or time.monotonic() - self.last_full_refresh >= policy.BUSY_FULL_REFRESH):
            self.refresh()
            return
        self.last_refresh = time.monotonic()
        self.dirty_at = None
        journal = self.seat.journal
        stored = journal.load_snapshot(self.seat.number)
        snap = dict(stored[0]) if stored else {}
        last = dict(snap.get("last_document") or {})
        if last.get("fd_number") != state.fd_number:
            mine = self.last_result
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
        journal.save_snapshot(self.seat.number, snap)

    def store(self, data: dict) -> None:
        """Publish a full status read."""
        self.last_refresh = self.last_full_refresh = time.monotonic()
        self.dirty_at = None
        snap = dict(data)
        # When the device last answered: the snapshot's own time also moves while the link is down.
        snap.update({"link": "ok", "link_error": None, "read_at": _now_iso()})
        self.seat.journal.save_snapshot(self.seat.number, snap)

    def refresh(self) -> None:
        """Read the device's status into the shared snapshot (link errors propagate)."""
        try:
            self.store(self.read_status())
        except DeviceError as exc:
            # The device answers but refuses a status read: show it, keep working.
            log.warning("ККТ %d: не удалось прочитать состояние: %s", self.seat.number, exc.message)
            self.last_refresh = self.last_full_refresh = time.monotonic()
            self.dirty_at = None

    def _log_down(self, message: str) -> None:
        """One line when the link goes, a reminder every DOWN_REMINDER seconds, not one per retry."""
        now = time.monotonic()
        number = self.seat.number
        if self._down_since is None:
            self._down_since = self._down_logged = now
            log.warning("ККТ %d: связь потеряна: %s", number, message)
        elif now - self._down_logged >= policy.DOWN_REMINDER:
            self._down_logged = now
            waiting = self.seat.journal.queue_counts(number)
            log.warning("ККТ %d: связи нет уже %s (%s); ждут отправки: %d", number,
                        human_duration(now - self._down_since), message, waiting[QUEUED] + waiting[UNKNOWN])

    def link_down(self, exc: BaseException) -> None:
        """The link failed (or could not be opened): log it and mark the snapshot."""
        self.up = False
        message = link_text(exc)
        if not isinstance(exc, (KKTError, OSError)):
            log.exception("ККТ %d: ошибка связи", self.seat.number, exc_info=exc)
        self._log_down(message)
        journal = self.seat.journal
        stored = journal.load_snapshot(self.seat.number)
        snap = dict(stored[0]) if stored else {}
        if snap.get("link") == "down" and snap.get("link_error") == message and not self.refresh_due():
            return
        snap.update({"link": "down", "link_error": message})
        journal.save_snapshot(self.seat.number, snap)
        self.last_refresh = self.last_full_refresh = time.monotonic()


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
