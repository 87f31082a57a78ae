"""The shift policy: a fiscal job finds an open, fresh shift; the shift closes once a day if asked.

The shift's 24 hours are decided by the device's clock, which may differ from ours (and tests
move it): the owner estimates the device's "now" from its last reading and re-reads the shift
when it is near its end; a receipt refused anyway with "shift over 24 h" gets a Z report, a new
shift and one retry (:mod:`.recovery`).
"""

from __future__ import annotations

import datetime as dt
import logging

from ..device import Driver
from ..domain import FiscalResult
from ..errors import LinkError
from ..journal import DONE, Job
from .outcome import Outcomes
from .seat import Seat

log = logging.getLogger(__package__)


class ShiftPolicy:
    """Opens, closes and renews the device's shift around the owner's jobs."""

    def __init__(self, seat: Seat, outcomes: Outcomes) -> None:
        self.seat = seat
        self.outcomes = outcomes

    def close(self, driver: Driver) -> FiscalResult:
        """A Z report now, with the configured cashier; remembered and told to the observers."""
        host = self.seat.host
        z = driver.close_shift(host.cashier_name, host.cashier_inn)
        self.seat.state.note_document("close_shift", z)
        self.outcomes.shift_closed(z)
        return z

    def ensure_open(self) -> None:
        """Open the shift when closed; when over 24 h, Z report and a new shift.

        The remembered state is used while it is known and not near its 24 hours; the device
        clock may still run ahead of the estimate, which the retry on "shift over 24 h" covers.
        """
        seat = self.seat
        if seat.driver is None:
            raise LinkError()
        # The driver is asked for only when the device is used (Seat.device writes the last
        # job's row first); a shift known to be open costs nothing here.
        host = seat.host
        state = seat.state
        number = seat.number
        if state.shift_state is None or state.shift_expiring():
            shift = seat.device().shift_status()
            state.note_shift(shift)
            if shift.state == "expired":
                log.info("ККТ %d: смена %d старше 24 часов: Z-отчёт и новая смена", number, shift.number)
                self.close(seat.device())
        if state.shift_state == "closed":
            result = seat.device().open_shift(host.cashier_name, host.cashier_inn)
            state.note_document("open_shift", result)
            log.info("ККТ %d: открыта смена %d", number, result.shift_number)

    def is_open(self) -> bool:
        """Whether the shift is open and inside its 24 hours, asking the device only when the
        remembered state is unknown or near its end; opens nothing (test receipts)."""
        seat = self.seat
        if seat.driver is None:
            raise LinkError()
        state = seat.state
        if state.shift_state is None or state.shift_expiring():
            state.note_shift(seat.device().shift_status())
        return state.shift_state == "open"

    def auto_close_done(self, job: Job) -> bool:
        """An automatic close_shift finds the shift already closed: done, nothing to send.

        Once a day: the device is read rather than memory trusted for a skipped Z report.
        """
        if not job.payload.get("params", {}).get("auto"):
            return False
        shift = self.seat.device().shift_status()
        self.seat.state.note_shift(shift)
        if shift.state != "closed":
            return False
        self.seat.journal.finish(job, DONE, result={})
        return True

    def auto_close(self) -> None:
        """Queue the day's close_shift at AUTO_CLOSE_TIME (the idle worker calls this)."""
        hour, minute = self.seat.host.auto_close_time  # type: ignore[misc]
        now = dt.datetime.now()
        start = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
        if not start <= now < start + dt.timedelta(hours=1):
            return
        # The key makes it once per day across processes and restarts.
        number = self.seat.number
        key = f"auto-close-{number}-{now.date().isoformat()}"
        journal = self.seat.journal
        if journal.find_by_key("close_shift", key) is not None:
            return
        params = {"auto": True}
        journal.accept(
            device=number, kind="close_shift", key=key, fingerprint=key,
            payload={"params": params}, source="auto",
        )
        log.info("ККТ %d: автоматическое закрытие смены в %02d:%02d", number, hour, minute)
